"""Services saved straight into a store, for tests that record jobs without the platform:
a store creates jobs only for services it has."""

from __future__ import annotations

from ondrop.store.base import Store, StoredService


def saved(store: Store, *names: str) -> None:
    """Save a bare service of each name the store does not have yet."""
    missing = [name for name in names if store.service(name) is None]
    if missing:
        store.save_services([StoredService(n, {"name": n}, "token", 1.0, 1.0) for n in missing])
