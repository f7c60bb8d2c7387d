"""Where pages, calls and dedup claims live: memory (tests), SQLite (one replica), Redis (several)."""

from .base import NotReplicated, Store, StoreLocked, StoreUnavailable

__all__ = ["NotReplicated", "Store", "StoreLocked", "StoreUnavailable", "open_store"]


def open_store(config) -> Store:
    """The store the config names (not yet opened)."""
    backend = config.store.backend
    if backend == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if backend == "redis":
        from .redis import RedisStore

        # Finished pages and their claims stay as long as the dedup window: what a resend is checked against.
        return RedisStore(config.store.url.get_secret_value(), key_prefix=config.store.key_prefix,
                          retention=config.dedup.window, replicas_ack=config.store.replicas_ack,
                          replicas_ack_timeout=config.store.replicas_ack_timeout.total_seconds())
    from .sqlite import SQLiteStore

    return SQLiteStore(config.store.path)
