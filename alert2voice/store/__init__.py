"""Where pages, calls and dedup claims live: memory (tests), SQLite (one replica), Redis (several)."""

from .base import Store, StoreLocked, StoreUnavailable

__all__ = ["Store", "StoreLocked", "StoreUnavailable", "open_store"]


def open_store(config) -> Store:
    """The store the config names (not yet opened)."""
    backend = config.store.backend
    if backend == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    from .sqlite import SQLiteStore

    return SQLiteStore(config.store.path)
