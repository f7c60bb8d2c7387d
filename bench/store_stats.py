"""What a store holds, read from outside alert2voice: the SQLite store's rows and size on disk, the Redis
store's memory and keys, and whether every Redis key expires or belongs to live work."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.rig import REDIS_KEY_PREFIX, Service

COUNTS = {
    "pages": "SELECT count(*) FROM pages",
    "active_pages": "SELECT count(*) FROM pages WHERE state = 'active'",
    "claims": "SELECT count(*) FROM claims",
    "calls": "SELECT count(*) FROM calls",
}
# The Redis store's indexes (alert2voice/store/redis.py): one key each, no TTL, each kept bounded by the
# store itself: due <= pages with work due, recent <= 1,000, done <= finished pages within the retention,
# claims <= claims within the dedup window, seq one counter, epoch one short string.
INDEXES = ("due", "recent", "done", "claims", "seq", "placed-all", "tokens", "epoch")
# Atomic, so that no page finishes between reading a key's TTL and reading its page. ARGV: the prefix, then
# the indexes. Returns keys, keys with a TTL, keys of live work, live pages, finished pages, the indexes
# (name, size pairs), and the keys that neither expire nor belong to live work (at most 20 of them, then
# their count).
CLASSIFY = r"""
local prefix = ARGV[1]
local pages, calls, groups = prefix .. 'page:', prefix .. 'call:', prefix .. 'group:'
local index = {}
for i = 2, #ARGV do index[prefix .. ARGV[i]] = ARGV[i] end
local function starts(s, p) return string.sub(s, 1, #p) == p end
local function live(page) return redis.call('HGET', page, 'live') == '1' end
local function group_live(group)
  for _, key in ipairs(redis.call('ZRANGE', group, 0, -1)) do
    if live(pages .. key) then return true end
  end
  return false
end
local function size(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'zset' then return redis.call('ZCARD', key) end
  if t == 'hash' then return redis.call('HLEN', key) end
  return 1
end
local all = redis.call('KEYS', '*')
local expiring, live_work, live_pages, finished, sizes, unbounded, others = 0, 0, 0, 0, {}, {}, 0
for _, key in ipairs(all) do
  local is_page = starts(key, pages)
  if is_page then
    if live(key) then live_pages = live_pages + 1 else finished = finished + 1 end
  end
  if redis.call('PTTL', key) ~= -1 then
    expiring = expiring + 1
  elseif (is_page and live(key)) or (starts(key, calls) and live(pages .. (redis.call('GET', key) or '')))
      or (starts(key, groups) and group_live(key)) then
    live_work = live_work + 1
  elseif index[key] then
    sizes[#sizes + 1] = index[key]
    sizes[#sizes + 1] = size(key)
  else
    others = others + 1
    if #unbounded < 20 then unbounded[#unbounded + 1] = key end
  end
end
return {#all, expiring, live_work, live_pages, finished, sizes, unbounded, others}
"""


# ---------------------------------------------------------------------------------------------- SQLite


@dataclass(frozen=True)
class StoreStats:
    """The SQLite store's size on disk and rows; `error` says why the rows could not be counted."""

    bytes: int
    pages: int | None = None
    active_pages: int | None = None
    claims: int | None = None
    calls: int | None = None
    error: str | None = None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # the -wal or -shm went between listing and stat
        return 0


def sqlite_bytes(path: Path) -> int:
    """The database and its -wal and -shm."""
    return sum(_size(p) for p in path.parent.glob(path.name + "*") if p.is_file())


def store_stats(path: Path) -> StoreStats:
    """Rows in the SQLite store (read-only, from outside the process) and its size on disk."""
    size = sqlite_bytes(path)
    if not path.is_file():
        # SQLite would only say "unable to open database file".
        return StoreStats(size, error=f"no database file at {path}")
    try:
        # as_uri() percent-encodes what a URI reserves (?, #, %), which a path may hold.
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
            counts = {name: conn.execute(query).fetchone()[0] for name, query in COUNTS.items()}
    except sqlite3.Error as exc:
        return StoreStats(size, error=f"{type(exc).__name__}: {exc}")
    return StoreStats(size, **counts)


# ----------------------------------------------------------------------------------------------- Redis


@dataclass(frozen=True)
class RedisStats:
    """Redis's INFO memory and what its keys are: expiring, live work (a live page, its call ids and alert
    group), an index of the store, or none of these (`unbounded`: expected 0); `error` if it could not be read."""

    used_memory: int = 0
    used_memory_peak: int = 0
    keys: int = 0
    expiring: int = 0
    live_work: int = 0
    live_pages: int = 0
    finished_pages: int = 0
    indexes: dict[str, int] = field(default_factory=dict)
    unbounded: int = 0
    unbounded_keys: list[str] = field(default_factory=list)  # the first 20
    error: str | None = None


def _client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)


async def used_memory(url: str) -> int:
    """INFO memory's used_memory, in bytes."""
    client = _client(url)
    try:
        return int((await client.info("memory"))["used_memory"])
    finally:
        await client.aclose()


async def redis_stats(url: str, prefix: str = REDIS_KEY_PREFIX) -> RedisStats:
    """INFO memory, and every key classified in one script (the server holds nothing but this store)."""
    client = _client(url)
    try:
        info = await client.info("memory")
        keys, expiring, live_work, live_pages, finished, sizes, unbounded, others = await client.eval(
            CLASSIFY, 0, prefix, *INDEXES)
    except (RedisError, OSError) as exc:
        return RedisStats(error=f"{type(exc).__name__}: {exc}")
    finally:
        await client.aclose()
    return RedisStats(used_memory=int(info["used_memory"]), used_memory_peak=int(info["used_memory_peak"]),
                      keys=keys, expiring=expiring, live_work=live_work, live_pages=live_pages,
                      finished_pages=finished, indexes=dict(zip(sizes[::2], sizes[1::2], strict=True)),
                      unbounded=others, unbounded_keys=unbounded)


# ------------------------------------------------------------------------------------------ either store


async def snapshot(svc: Service) -> StoreStats | RedisStats:
    """What the service's store holds now."""
    if svc.redis is not None:
        return await redis_stats(svc.redis.url)
    return store_stats(svc.db)


async def store_bytes(svc: Service) -> int:
    """The store's size now: Redis's used_memory, or the SQLite files on disk."""
    if svc.redis is not None:
        return await used_memory(svc.redis.url)
    return sqlite_bytes(svc.db)
