"""ondrop: drop a file, a job runs your script, the outputs are stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ondrop.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    """`Client` and `__version__`, found when first asked for: a command that needs
    neither (`ondrop --help`) does not wait for the HTTP client or the package metadata."""
    if name == "Client":
        from ondrop.client import Client

        return Client
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("ondrop")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            found = "0.0.0"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'ondrop' has no attribute {name!r}")
