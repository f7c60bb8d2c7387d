"""Where pages, calls and dedup claims live: memory (tests), SQLite (one replica), Redis (several)."""

from .base import Store, StoreLocked, StoreUnavailable

__all__ = ["Store", "StoreLocked", "StoreUnavailable", "open_store"]


def open_store(config) -> Store:
    """The store the config names (not yet opened)."""
    backend = config.store.backend
    if backend == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if backend == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(config.store.path)
    from .redis import RedisStore

    return RedisStore(config.store.url.get_secret_value())
