"""ondrop: drop a file, a job runs your script, the outputs are stored."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ondrop")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

from ondrop.client import Client

__all__ = ["Client", "__version__"]
