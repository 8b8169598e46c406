"""FDL: service definitions in OSCAR's, SCAR's and ondrop's shapes."""

from ondrop.fdl.loader import Definition, load_file, load_text, parse_service
from ondrop.fdl.models import Service, StorageIO

__all__ = ["Definition", "Service", "StorageIO", "load_file", "load_text", "parse_service"]
