"""What the Redis store checks of the server it connects to: a version that runs its scripts, and whether it
keeps what it acknowledged (its append-only file)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .base import StoreUnavailable

log = logging.getLogger("alert2voice.store")

MIN_REDIS = 7  # the major version that runs scripts with flags (`#!lua flags=`)


class RedisRefused(StoreUnavailable):
    """Redis answers but refuses us (wrong password, an ACL without a command we need): waiting will not help."""


Call = Callable[[str, Callable[[Redis], Awaitable[Any]]], Awaitable[Any]]


async def check_server(call: Call, before: str | None) -> str:
    """Raise RedisRefused for a Redis older than MIN_REDIS; warn when it would lose acknowledged writes in a
    restart (AOF off). Returns what it found, logged only when it differs from `before` (the last check's).

    Made at every connection that answers (open, and every reconnection of the wake-up subscription): a
    Redis restarted, or failed over, without its append-only file is told as soon as it is back. CONFIG may
    be refused (most managed Redis services), INFO too (an ACL).
    """

    async def append_config(redis: Redis) -> dict[str, str] | None:
        try:
            return await redis.config_get("append*")
        except ResponseError:  # CONFIG renamed or not allowed, as on most managed Redis services
            return None

    async def version(redis: Redis) -> str | None:
        try:
            return str((await redis.info("server")).get("redis_version", "")) or None
        except ResponseError:  # INFO not allowed (an ACL): the first script says it, less clearly
            return None

    running = await call("open", version)
    if running is not None and int(running.split(".")[0]) < MIN_REDIS:
        raise RedisRefused(f"redis store: Redis {running} is too old: alert2voice needs Redis {MIN_REDIS}.0 "
                           "or later (its scripts carry `#!lua flags=`, so that a full Redis refuses them whole)")
    config = await call("open", append_config)
    found = "refused" if config is None else f"{config.get('appendonly')} {config.get('appendfsync')}"
    if found == before:
        return found
    if config is None:
        log.info("could not check that Redis persists every write (CONFIG GET refused): it must run "
                 "with appendonly yes, and appendfsync always for a 200 to mean durable")
    elif config.get("appendonly") != "yes":
        log.warning("Redis runs without its append-only file (appendonly no): a Redis restart loses "
                    "accepted pages and claims; set appendonly yes and appendfsync always")
    elif config.get("appendfsync") != "always":
        log.info("Redis syncs its append-only file with appendfsync %s: a Redis crash can lose the "
                 "writes of the last second; appendfsync always makes every 200 durable",
                 config.get("appendfsync"))
    return found
