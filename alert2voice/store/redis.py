"""The Redis store: the memory several alert2voice replicas share, with every atomic step a Lua script.

The names and shapes of its keys are in redis_keys.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    NoPermissionError,
    NoScriptError,
    RedisError,
)

from .. import entropy
from ..config import DedupConfig, StoreConfig
from ..pages import Page
from . import redis_scripts as lua
from . import rules
from .base import Admitted, Conflict, FirstCall, Lease, NotReplicated, OpenPage, StoreUnavailable, StormBatch, Tier
from .codec import dump_page, load_page
from .redis_cache import EVERYTHING, LookCache
from .redis_checks import RedisRefused, check_server
from .redis_keys import Keys
from .redis_url import SentinelTarget, check_url, parse_sentinel_url
from .rules import PURGE_CHUNK, RETAIN

log = logging.getLogger("alert2voice.store")
T = TypeVar("T")

RECENT_KEPT = 1000  # pages the recent index holds: more than GET /api/v1/pages lists
WAKE_PING = 5.0  # seconds of silence after which the wake-up subscriber checks its connection
RECONNECT_MAX = 2.0  # seconds between the wake-up subscriber's attempts to reconnect, at most
READY_PROBE_MS = 10_000  # how long readiness's probe key lives
POOL = 64  # operations in flight at once per store; more wait for a connection, within the deadline
# The operations that are one Lua script each (EVALSHA; loaded again when Redis lost its script cache).
SCRIPTS = {"admit": lua.ADMIT, "seen": lua.SEEN, "release": lua.RELEASE, "put": lua.PUT, "take_due": lua.TAKE_DUE,
           "renew": lua.RENEW, "by_group": lua.BY_GROUP, "look": lua.LOOK, "recent": lua.RECENT, "purge": lua.PURGE,
           "beat": lua.BEAT,
           "reserve_call": lua.RESERVE_CALL, "unreserve_call": lua.UNRESERVE_CALL, "storm_join": lua.STORM_JOIN,
           "storm_lead": lua.STORM_LEAD, "storm_end": lua.STORM_END, "take_token": lua.RATE_LIMIT}
# Each script's flags (Redis 7's `#!lua flags=` shebang). Without a shebang Redis checks its memory limit only
# when a script's first write is a memory-checked command, and then lets the rest run: a full Redis stored
# admits whose first write was a ZREMRANGEBYSCORE. With one, a script that writes and is not `allow-oom` is
# refused whole (OOM) before it runs. Allowed when full: the scripts that only delete or overwrite in place
# (they free room, or the service could not finish what it stored); `no-writes` for the read-only one.
READS_ONLY, FREES = frozenset({"seen"}), frozenset({"release", "purge", "unreserve_call", "storm_end", "by_group",
                                                    "look", "recent", "renew"})


def flagged(name: str, source: str) -> str:
    """The script with its shebang: refused whole by a full Redis unless it only reads or frees."""
    flags = "no-writes" if name in READS_ONLY else "allow-oom" if name in FREES else ""
    return ("#!lua flags=" + flags if flags else "#!lua") + "\n" + source


REFUSALS = (AuthenticationError, AuthenticationWrongNumberOfArgsError, AuthorizationError, NoPermissionError)


def _ts(moment: datetime) -> str:
    return repr(moment.timestamp())


def _time(score: str | float) -> datetime:
    return datetime.fromtimestamp(float(score), UTC)


def _ms(span: timedelta) -> int:
    return max(1, math.ceil(span.total_seconds() * 1000))


def _load_pages(flat: Sequence[str]) -> list[Page]:
    """Pages from a script's data, version, epoch triples."""
    return [load_page(data, int(version), epoch) for data, version, epoch in zip(*[iter(flat)] * 3, strict=True)]


def _open_pages(flat: Sequence[str]) -> list[OpenPage]:
    """OpenPages from a script's key, identities pairs."""
    return [OpenPage(key, tuple(json.loads(ids))) for key, ids in zip(flat[::2], flat[1::2], strict=True)]


# --------------------------------------------------------------------------------------------- store


class RedisStore:
    """The Store protocol on Redis (redis-py's asyncio client), for several replicas at once.

    Every call either answers within a few socket timeouts or raises StoreUnavailable: no retries inside
    the client (a retried script could count a call twice), and the next call after an outage simply
    connects again. `retention` is how long finished pages, their call ids and claims' index stay: give
    it the dedup window, the age purge() is called with. `replicas_ack` replicas must acknowledge what
    replicated() covers within `replicas_ack_timeout` seconds (0: nothing waits).
    """

    def __init__(self, url: str, *, key_prefix: str = StoreConfig.model_fields["key_prefix"].default,
                 socket_timeout: float = 1.0, retention: timedelta = DedupConfig.model_fields["window"].default,
                 instance: str | None = None, replicas_ack: int = 0, replicas_ack_timeout: float = 1.0) -> None:
        check_url(url)
        self._url = url
        self._sentinel: SentinelTarget | None = None
        if url.startswith("redis+sentinel://"):
            self._sentinel = parse_sentinel_url(url)
            self._password = self._sentinel.password  # kept out of every message
        else:
            self._password = parse_url(url).get("password")
        self.keys = Keys(key_prefix)
        self.socket_timeout = socket_timeout
        self.deadline = 3 * socket_timeout  # a whole call: connect, handshake and reads
        self.retention = retention
        self.replicas_ack, self.replicas_ack_timeout = replicas_ack, replicas_ack_timeout
        self.instance = instance or uuid.uuid4().hex[:12]
        self._redis: Redis | None = None
        self._sentinels: Sentinel | None = None
        self._scripts: dict[str, Any] = {}
        self._wakeups: list[Callable[[datetime | None], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._durability: str | None = None  # what the last durability check found (None: not checked yet)
        self.cache = LookCache(live_within=WAKE_PING + 2 * socket_timeout)  # remembered duplicates
        # redis-py refuses a command beyond max_connections ("Too many connections") rather than wait for one.
        self._slots = asyncio.Semaphore(POOL)
        self.operations = 0  # commands and scripts sent, each one round trip (a metric)

    # ------------------------------------------------------------------------------------ plumbing

    def _options(self) -> dict[str, Any]:
        # One connection more than the slots: the wake-up subscription's.
        return {"socket_timeout": self.socket_timeout, "socket_connect_timeout": self.socket_timeout,
                "retry": Retry(NoBackoff(), 0), "decode_responses": True, "client_name": "alert2voice",
                "max_connections": POOL + 1}

    def _client(self) -> Redis:
        options = self._options()
        target = self._sentinel
        if target is None:
            return Redis.from_url(self._url, **options)
        sentinel_options = {k: v for k, v in options.items() if k != "client_name"}
        self._sentinels = Sentinel(target.hosts, sentinel_kwargs=sentinel_options, **options, db=target.db,
                                   username=target.username, password=target.password)
        return self._sentinels.master_for(target.service)

    def _unavailable(self, op: str, exc: BaseException) -> StoreUnavailable:
        text = str(exc) or (f"no answer within {self.deadline:g}s" if isinstance(exc, TimeoutError)
                            else type(exc).__name__)
        if self._password:
            text = text.replace(self._password, "***")
        refused = isinstance(exc, REFUSALS) or text.startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
        return (RedisRefused if refused else StoreUnavailable)(f"redis store: {op} failed: {text}")

    async def _call(self, op: str, fn: Callable[[Redis], Awaitable[T]], longer: float = 0.0) -> T:
        """Run `fn` on the client within the deadline (`longer` seconds more for a command that waits)."""
        redis = self._redis
        if redis is None:
            raise StoreUnavailable(f"redis store: {op} failed: store is not open")
        self.operations += 1
        try:
            async with asyncio.timeout(self.deadline + longer), self._slots:
                return await fn(redis)
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            raise self._unavailable(op, exc) from None

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts[name]

        async def run(redis: Redis) -> Any:
            # EVALSHA itself: redis-py's Script wrapper costs a tenth of a resend's CPU on top of it.
            try:
                return await redis.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:  # Redis lost its script cache (restarted, SCRIPT FLUSH): nothing ran
                return await script(keys=list(keys), args=list(args))  # loads it and runs it

        return await self._call(name, run)

    # ------------------------------------------------------------------------------------ protocol

    async def open(self) -> None:
        """Connect, check that Redis keeps what it acknowledged (AOF), and subscribe to wake-ups.

        A Redis that does not answer yet is not an error here: every operation raises StoreUnavailable
        until it does (so the service starts unready and becomes ready by itself), and the check is made
        at the first connection.
        """
        if self._redis is not None:
            return
        self._redis = redis = self._client()
        self._scripts = {op: redis.register_script(flagged(op, source)) for op, source in SCRIPTS.items()}
        try:
            await self._check_durability()
            await self._connected()
        except RedisRefused:
            await self.close()
            raise
        except StoreUnavailable as exc:
            log.warning("Redis does not answer yet: not ready until it does", extra={"error": str(exc)})
        except BaseException:
            await self.close()
            raise
        self._listener = asyncio.create_task(self._listen(), name="alert2voice-redis-wakeups")

    async def close(self) -> None:
        """Stop listening for wake-ups and close the connections; closing twice is harmless."""
        await self._stop_listening()
        redis, self._redis = self._redis, None
        sentinels, self._sentinels = self._sentinels, None
        with contextlib.suppress(RedisError, OSError):
            if redis is not None:
                await redis.aclose()
            for client in sentinels.sentinels if sentinels is not None else ():
                await client.aclose()

    async def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        while listener is not None and not listener.done():
            # Again until it ends: redis-py writes through asyncio.wait_for, which on Python 3.11 swallows
            # a cancellation that arrives as the write completes (fixed in 3.12).
            listener.cancel()
            await asyncio.wait({listener}, timeout=0.1)
        if listener is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers and takes a write.

        The write is a SET with a short expiry: Redis at maxmemory with noeviction refuses it (OOM), as it
        refuses an admit, so that /-/ready is false while /alerts would answer 503.
        """
        await self._call("ping", lambda redis: redis.set(self.keys.ready + self.instance, "1", px=READY_PROBE_MS))

    async def replicated(self) -> None:
        """Return once `replicas_ack` replicas have every write made before this call (Redis WAIT), or raise
        NotReplicated after `replicas_ack_timeout`; with replicas_ack 0, at once and without a round trip."""
        wanted, seconds = self.replicas_ack, self.replicas_ack_timeout
        if not wanted:
            return

        async def wait(redis: Redis) -> int:
            # WAIT counts the replicas that have its own connection's last replicated write, and a pooled
            # connection may have written nothing (WAIT then answers at once, whatever the replicas lack). So
            # a PUBLISH on the same connection first: it enters the replication stream (nothing is stored, no
            # memory is checked), and a replica applies that stream in order, so one that has the PUBLISH has
            # every write made before it, on any connection.
            pool = redis.connection_pool
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command(conn.pack_commands([("PUBLISH", self.keys.ack, ""),
                                                                   ("WAIT", wanted, _ms(timedelta(seconds=seconds)))]))
                await conn.read_response()
                return int(await conn.read_response(timeout=seconds + self.socket_timeout))
            except BaseException:
                await conn.disconnect()  # an answer may still be on its way: the next user must not read it
                raise
            finally:
                await pool.release(conn)

        acked = await self._call("replicated", wait, longer=seconds)
        if acked < wanted:
            raise NotReplicated(f"store: {acked} of {wanted} replicas acknowledged within {seconds:g}s")

    async def memory_headroom(self) -> float | None:
        """Bytes Redis may still grow by before it refuses writes (maxmemory - used_memory); None without a limit."""
        info = await self._call("info", lambda redis: redis.info("memory"))
        limit = int(info.get("maxmemory", 0))
        return None if limit == 0 else float(limit - int(info["used_memory"]))

    async def time(self) -> datetime:
        """Redis's clock (TIME): the one every replica reads the times it writes and compares from."""
        seconds, micros = await self._call("time", lambda redis: redis.time())
        return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)

    async def _check_durability(self) -> None:
        """Refuse a Redis too old for the scripts, and say when it would lose acknowledged writes (redis_checks)."""
        self._durability = await check_server(lambda op, fn: self._call(op, fn), self._durability)

    async def admit(self, page: Page, claims: Sequence[str], window: timedelta, now: datetime,
                    lease: Lease | None = None, first: FirstCall | None = None) -> Admitted | None:
        """Hold the claims until now + window and save the page, unless all are held or the page is active; and
        clear its first call (the throttle's count, a token), all in one script."""
        keys, args = self._save_args(page, lease)
        claim_keys = [self.keys.claim(c) for c in claims]
        number = first.number if first is not None else ""
        limits = [self.keys.placed(number), self.keys.placed_all, self.keys.tokens]
        with self._changing(keys[4]):
            saved = await self._script("admit", [*keys[:6], self.keys.claims, *limits, *claim_keys, *keys[6:]],
                                       [*args, _ts(now), _ts(now + window), _ms(window), len(claim_keys),
                                        *self._epoch_args(), self.keys.calls, *self._first_args(first, now)])
        if not saved:
            return None
        page.version, page.epoch = int(saved[0]), saved[1]
        if first is None:
            return Admitted()
        _, _, blocked, wait = saved
        if blocked:
            return Admitted(self._fits_at(blocked, first.tiers))
        return Admitted(None, float(wait))

    def _first_args(self, first: FirstCall | None, now: datetime) -> list[Any]:
        """ADMIT's arguments that clear the first call (none: not asked): reserve_call's, then take_token's."""
        if first is None:
            return [""]
        return ["1", *self._placement(now), *self._bucket(first.rate, first.burst), *self._windows(first.tiers, now)]

    @staticmethod
    def _placement(now: datetime) -> list[Any]:
        """A placement counted at `now`: its member, and the counters' trim point and expiry."""
        return [entropy.uuid4().hex, _ts(now - RETAIN), _ms(RETAIN)]

    @staticmethod
    def _bucket(rate: float, burst: float) -> list[Any]:
        """The token bucket's rate, burst and expiry: kept until it would be full again (a missing one is full)."""
        return [repr(rate), repr(burst), _ms(timedelta(seconds=max(60.0, 2 * burst / rate)))]

    @staticmethod
    def _windows(tiers: Sequence[Tier], now: datetime) -> list[Any]:
        return [x for t in tiers for x in (t.scope, t.calls, _ts(now - t.per))]

    @staticmethod
    def _fits_at(blocked: Sequence[str], tiers: Sequence[Tier]) -> datetime:
        """When a call fits every tier, from the full tiers RESERVE_CALL found: (index, oldest placement) pairs."""
        return max(rules.leaves_window(_time(score), tiers[int(index)])
                   for index, score in zip(blocked[::2], blocked[1::2], strict=True))

    async def seen(self, key: str, claims: Sequence[str], now: datetime) -> bool:
        """Whether admit() would refuse now: one read-only script."""
        held = await self._script("seen", [self.keys.page(key), *(self.keys.claim(c) for c in claims)], [_ts(now)])
        return bool(held)

    async def release(self, claims: Sequence[str]) -> None:
        """Drop these dedup claims."""
        with self._changing(EVERYTHING):
            await self._script("release", [self.keys.claims, *(self.keys.claim(c) for c in claims)], [self.keys.wake])

    @contextlib.contextmanager
    def _changing(self, group: str | None) -> Iterator[None]:
        """Around a write that may change what look() says of a group (or of every one): remembered answers
        are forgotten before it (none fetched meanwhile is kept) and after it (before its own invalidation
        comes back through Redis)."""
        if group is None:
            yield
            return
        self.cache.invalidate(group)
        try:
            yield
        finally:
            self.cache.invalidate(group)

    def _epoch_args(self) -> list[str]:
        """The epoch's key and a fresh random candidate: a write that finds the epoch missing makes it anew."""
        return [self.keys.epoch, entropy.uuid4().hex]

    async def _connected(self) -> None:
        """Make the store's epoch if Redis has none (a new store, or one that lost its data), and load the
        scripts into its cache (else each one's first use is refused, NOSCRIPT, and sent again): at open and at
        every reconnection of the wake-up subscription, in one round trip; writes make the epoch too."""

        async def claim(redis: Redis) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.set(*self._epoch_args(), nx=True)  # the epoch's key, a fresh candidate
                for script in self._scripts.values():
                    pipe.script_load(script.script)
                await pipe.execute()

        await self._call("open", claim)

    def _save_args(self, page: Page, lease: Lease | None) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the save step that admit and put share (see redis_scripts._SAVE)."""
        ids = [c.correlation_id for c in page.calls] + [c.message_id for c in page.calls if c.message_id]
        live = not rules.finished(page.state, page.due_at)
        keys = [self.keys.page(page.key), self.keys.due, self.keys.recent, self.keys.done,
                self.keys.group(page.route, page.group_key), self.keys.seq, *(self.keys.call(i) for i in ids)]
        args = [self.keys.pages, page.key, dump_page(page), page.state.value, "1" if live else "0",
                _ts(page.due_at) if page.due_at is not None else "", _ts(page.updated_at or page.received_at),
                "1" if page.resolved_at is not None else "0", json.dumps(page.identities), json.dumps(ids),
                _ms(self.retention), RECENT_KEPT, _ts(lease.until) if lease is not None else "",
                lease.owner if lease is not None else "", self.keys.wake, self.instance]
        return keys, args

    async def put(self, page: Page, lease: Lease | None = None) -> None:
        """Compare-and-set at the version read; index the calls, release the lease (or keep it under `lease`),
        keep the indexes in step; due work written without a lease wakes the other replicas."""
        keys, args = self._save_args(page, lease)
        with self._changing(keys[4] if page.resolved_at is not None else None):
            saved = await self._script("put", keys, [*args, page.version, page.epoch, *self._epoch_args()])
        if not isinstance(saved, list):
            raise Conflict(f"page {page.key[:12]} changed since it was read (version {page.version})")
        page.version, page.epoch = int(saved[0]), saved[1]

    async def get(self, key: str) -> Page | None:
        """The page with this key."""
        data, version, epoch = await self._call("get", lambda redis: redis.hmget(self.keys.page(key), "d", "v", "e"))
        return load_page(data, int(version), epoch or "") if data is not None else None

    async def by_group(self, route: str, group_key: str) -> list[OpenPage]:
        """Pages of this route and group whose alerts have not been resolved, in first-seen order."""
        return _open_pages(await self._script("by_group", [self.keys.group(route, group_key)], [self.keys.pages]))

    async def look(self, route: str, group_key: str, key: str, claims: Sequence[str],
                   now: datetime) -> tuple[list[OpenPage], bool]:
        """by_group() and seen() in one script: one round trip per planned page of a resend."""
        group, cache = self.keys.group(route, group_key), self.cache
        remembered = cache.get(group, key, now.timestamp())
        if remembered is not None:
            return remembered, True
        generation = cache.generation
        held, until, *flat = await self._script(
            "look", [group, self.keys.page(key), *(self.keys.claim(c) for c in claims)], [self.keys.pages, _ts(now)])
        pages = _open_pages(flat)
        if until:
            cache.put(group, key, pages, float(until), generation)
        return pages, bool(held)

    async def find_call(self, *, correlation_id: str | None = None, message_id: str | None = None) -> str | None:
        """The key of the page holding the call with this correlationId (tried first) or messageId."""
        idents = [i for i in (correlation_id, message_id) if i]
        if not idents:
            return None
        found = await self._call("find_call", lambda redis: redis.mget([self.keys.call(i) for i in idents]))
        return next((key for key in found if key is not None), None)

    async def take_due(self, now: datetime, limit: int, lease: timedelta, owner: str,
                       skip: Collection[str] = ()) -> list[Page]:
        """Up to `limit` due pages nobody holds, earliest first, leased to `owner` until now + lease."""
        flat = await self._script("take_due", [self.keys.due],
                                  [self.keys.pages, _ts(now), limit, _ts(now + lease), owner, *skip])
        return _load_pages(flat)

    async def renew(self, key: str, lease: Lease) -> bool:
        """Extend the lease `lease.owner` holds on the page; False when it holds none."""
        return bool(await self._script("renew", [self.keys.page(key)], [lease.owner, _ts(lease.until), lease.epoch]))

    async def next_due(self) -> datetime | None:
        """The earliest due time of any page, leased or not."""
        first = await self._call("next_due", lambda redis: redis.zrange(self.keys.due, 0, 0, withscores=True))
        return _time(first[0][1]) if first else None

    async def recent(self, limit: int) -> list[Page]:
        """The most recently updated pages, newest first (of the RECENT_KEPT last updated)."""
        if limit <= 0:
            return []
        return _load_pages(await self._script("recent", [self.keys.recent], [self.keys.pages, limit]))

    async def depth(self) -> int:
        """How many pages have work due."""
        return await self._call("depth", lambda redis: redis.zcard(self.keys.due))

    async def purge(self, before: datetime) -> int:
        """Forget finished pages last updated before `before` and claims expired by then, in chunks."""
        removed = 0
        while True:
            with self._changing(EVERYTHING):
                pages, done, claims = await self._script(
                    "purge", [self.keys.done, self.keys.claims, self.keys.recent],
                    [self.keys.pages, _ts(before), PURGE_CHUNK, self.keys.calls, self.keys.wake])
            removed += pages
            if done < PURGE_CHUNK and claims < PURGE_CHUNK:
                return removed

    # --------------------------------------------------------------------------------- shared limits

    async def reserve_call(self, number: str, now: datetime, tiers: Sequence[Tier]) -> datetime | None:
        """Count a call to `number` at `now` if every tier has room (None); else the earliest fit."""
        member, cutoff, retain = self._placement(now)
        blocked = await self._script("reserve_call", [self.keys.placed(number), self.keys.placed_all],
                                     [_ts(now), member, cutoff, retain, *self._windows(tiers, now)])
        return self._fits_at(blocked, tiers) if blocked else None

    async def unreserve_call(self, number: str, at: datetime) -> None:
        """Give back the slot counted at `at`."""
        await self._script("unreserve_call", [self.keys.placed(number), self.keys.placed_all], [_ts(at)])

    async def calls_within(self, number: str, now: datetime, per: timedelta) -> list[datetime]:
        """When the calls to `number` counted within the last `per` were placed, oldest first."""
        placed = await self._call("calls_within", lambda redis: redis.zrangebyscore(
            self.keys.placed(number), "(" + _ts(now - per), "+inf", withscores=True))
        return [_time(score) for _, score in placed]

    async def storm_join(self, number: str, key: str, release_at: datetime) -> StormBatch:
        """Join the number's open storm batch, or open one released at `release_at`."""
        release, keys = await self._script("storm_join", [self.keys.storm(number)],
                                           [key, release_at.isoformat(), _ms(RETAIN)])
        return StormBatch(datetime.fromisoformat(release), keys.split("\n"))

    async def storm_batch(self, number: str) -> StormBatch | None:
        """The number's storm batch, if any."""
        release, keys, leader = await self._call("storm_batch", lambda redis: redis.hmget(
            self.keys.storm(number), "release", "keys", "leader"))
        if release is None:
            return None
        return StormBatch(datetime.fromisoformat(release), keys.split("\n") if keys else [], leader)

    async def storm_lead(self, number: str, key: str) -> bool:
        """Make the page the batch's leader unless it has one already."""
        return bool(await self._script("storm_lead", [self.keys.storm(number)], [key, _ms(RETAIN)]))

    async def storm_end(self, number: str, key: str) -> None:
        """Drop the number's batch if `key` leads it."""
        await self._script("storm_end", [self.keys.storm(number)], [key])

    async def take_token(self, now: float, rate: float, burst: float) -> float:
        """One token bucket for every replica: 0 when a token was taken, else the seconds to wait."""
        return float(await self._script("take_token", [self.keys.tokens], [repr(now), *self._bucket(rate, burst)]))

    # ------------------------------------------------------------------------------------- wake-ups

    def on_wakeup(self, callback: Callable[[datetime | None], None]) -> None:
        """Call `callback` on the event loop when another replica publishes a wake-up (None: look now), or
        writes due work under a lease (the lease's end: look then, in case its holder died)."""
        self._wakeups.append(callback)

    async def wake_others(self) -> None:
        """Publish a wake-up, signed with this instance's id so that it does not wake itself."""
        await self._call("wake_others", lambda redis: redis.publish(self.keys.wake, self.instance))

    def _wake(self, at: datetime | None = None) -> None:
        for callback in self._wakeups:
            try:
                callback(at)
            except Exception:
                log.exception("wake-up callback failed")

    async def _listen(self) -> None:
        """Subscribe to wake-ups for as long as the store is open, reconnecting after every failure."""
        delay, subscribed_before = 0.1, False
        while True:
            assert self._redis is not None
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.wake)  # its confirmation, read by _pump, makes the cache live
                try:
                    await self._check_durability()  # at every (re)connection: a restarted Redis may lack its AOF
                    await self._connected()
                except RedisRefused as exc:  # too old, or the credentials refused: waiting will not help
                    log.error("%s", exc)
                except StoreUnavailable:
                    pass
                if subscribed_before:
                    self._wake()  # wake-ups published while we were away are lost: look once
                subscribed_before, delay = True, 0.1
                await self._pump(pubsub)
            except (RedisError, OSError) as exc:
                log.debug("wake-up subscription lost; reconnecting", extra={"error": str(self._unavailable(
                    "subscribe", exc))})
            finally:
                self.cache.dark()  # invalidations may be missed until subscribed again
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX, delay * 2)

    async def _pump(self, pubsub: PubSub) -> None:
        """Hand wake-ups from others to the callbacks; a PING after WAKE_PING quiet seconds proves the link."""
        while True:
            message = await pubsub.get_message(timeout=WAKE_PING)
            if message is None:
                await pubsub.ping()
                message = await pubsub.get_message(timeout=self.socket_timeout)
                if message is None:
                    raise TimeoutError("no answer to PING on the wake-up subscription")
            self.cache.heard()  # the confirmation of the subscription, a message, a PONG: invalidations arrive
            if message["type"] != "message":
                continue
            data = message["data"]
            if data.startswith("look|"):
                self.cache.invalidate(data.removeprefix("look|"))
            elif data.startswith(("due|", "lease|")):  # "lease|": from a replica of an earlier version
                _, at, sender = data.split("|", 2)
                if sender != self.instance:
                    self._wake(_time(at))
            elif data != self.instance:
                self._wake()

    # ------------------------------------------------------------------------------------ heartbeats

    async def beat(self, name: str, at: datetime) -> None:
        """Keep the later of the stored last-seen time and `at` (one script: replicas race on it)."""
        await self._script("beat", [self.keys.prefix + "beats"], [name, _ts(at)])

    async def beats(self) -> dict[str, datetime]:
        """Every heartbeat's last-seen time."""
        seen = await self._call("beats", lambda redis: redis.hgetall(self.keys.prefix + "beats"))
        return {name: _time(at) for name, at in seen.items()}
