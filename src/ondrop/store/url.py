"""A store's URL as messages and logs may show it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def shown(url: str) -> str:
    """`url` fit for messages and logs: its password, if any, left out."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL one can split: shown as far as its scheme
        return url.split("://", 1)[0] + "://..." if "://" in url else "..."
    if password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))
