"""What only the Redis store promises: replicas sharing one Redis, outages and restarts, bounded memory, URLs.

The store contract itself runs on Redis in tests/test_store.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from alert2voice.pages import CallState, PageState
from alert2voice.store import StoreUnavailable
from alert2voice.store import redis as redis_store
from alert2voice.store.base import Lease, OpenPage, Tier
from alert2voice.store.redis import RETAIN, RedisStore
from alert2voice.store.redis_cache import LookCache
from alert2voice.store.redis_url import parse_sentinel_url
from tests.e2e_support import eventually
from tests.redis_support import (
    RedisServer,
    fresh_prefix,
    opened,
    redis_server,  # noqa: F401 (a fixture)
    redis_server_in,
    sentinel_for,
)
from tests.test_store import LEASE, T0, WINDOW, at, keys, make_call, make_page

ALICE = "+14155550101"
MINUTE = timedelta(minutes=1)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> RedisServer:
    """The session's redis-server; each test keeps to keys under a prefix of its own."""
    return request.getfixturevalue("redis_server")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test, which may stop, kill or pause it."""
    with redis_server_in(tmp_path / "redis") as server:
        yield server


async def subscribed(server: RedisServer, store: RedisStore, count: int) -> None:
    """Wait until `count` stores listen on the store's wake-up channel (their subscriber tasks run)."""
    client = server.client()

    async def listening() -> bool:
        return dict(client.pubsub_numsub(store.keys.wake)).get(store.keys.wake, 0) >= count

    try:
        await eventually(listening, f"{count} wake-up subscribers", within=10)
    finally:
        client.close()


def until(check: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """An eventually() probe of a condition that changes on the event loop."""
    async def probe() -> object:
        return check()
    return probe


async def unavailable_within(seconds: float, call: Callable[[], Awaitable[object]]) -> StoreUnavailable:
    """The StoreUnavailable the call raises, within `seconds`."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await call()
    assert time.monotonic() - started < seconds
    return info.value


# ---------------------------------------------------------------------------------------------- replicas


async def test_two_replicas_admitting_the_same_page_admit_it_once(server):
    prefix = fresh_prefix()
    async with opened(server, key_prefix=prefix) as a, opened(server, key_prefix=prefix) as b:
        results = await asyncio.gather(*((a, b)[i % 2].admit(make_page("p", due_at=T0), ["c1", "c2"], WINDOW, T0)
                                         for i in range(20)))
        assert sum(result is not None for result in results) == 1
        assert (await b.get("p")).version == 1
        assert await b.seen("q", ["c1", "c2"], at(1))  # a's claims hold for b


async def test_two_replicas_taking_due_work_never_share_a_page(server):
    prefix = fresh_prefix()
    async with opened(server, key_prefix=prefix) as a, opened(server, key_prefix=prefix) as b:
        for i in range(30):
            await a.put(make_page(f"p{i}", due_at=at(i)))
        batches = await asyncio.gather(*((a, b)[i % 2].take_due(at(60), 4, LEASE, f"taker-{i}")
                                         for i in range(10)))
        taken = [key for batch in batches for key in keys(batch)]
        assert sorted(taken) == sorted(f"p{i}" for i in range(30))  # each once: 40 asked for, 30 there


async def test_more_operations_at_once_than_the_pool_has_connections_wait_for_one(server):
    # A burst of webhooks (Alertmanager sends every group at once) runs hundreds of operations at a time.
    async with opened(server) as store:
        many = 3 * redis_store.POOL
        results = await asyncio.gather(*(store.seen(f"p{i}", [f"c{i}"], T0) for i in range(many)))
        assert results == [False] * many


async def test_a_wake_up_reaches_the_other_replica_and_not_the_sender(server):
    prefix = fresh_prefix()
    async with opened(server, key_prefix=prefix) as a, opened(server, key_prefix=prefix) as b, \
            opened(server) as elsewhere:
        woken: dict[str, list[int]] = {"a": [], "b": [], "elsewhere": []}
        for name, store in (("a", a), ("b", b), ("elsewhere", elsewhere)):
            store.on_wakeup(lambda at, name=name: woken[name].append(1))
        await subscribed(server, a, 2)
        await subscribed(server, elsewhere, 1)
        await a.wake_others()
        await eventually(until(lambda: woken["b"]), "b woken by a")
        # a reads its own message before b's, on the same channel: had it woken itself, it would show now.
        await b.wake_others()
        await eventually(until(lambda: woken["a"]), "a woken by b")
        await elsewhere.wake_others()  # another prefix, another deployment
        assert woken == {"a": [1], "b": [1], "elsewhere": []}


async def test_due_work_wakes_the_other_replicas_when_it_can_be_taken(server):
    prefix = fresh_prefix()
    async with opened(server, key_prefix=prefix) as a, opened(server, key_prefix=prefix) as b:
        woken: list[tuple[str, datetime | None]] = []
        b.on_wakeup(lambda at: woken.append(("b", at)))
        a.on_wakeup(lambda at: woken.append(("a", at)))
        await subscribed(server, a, 2)
        held = Lease("replica-a", T0 + LEASE)
        page = make_page("p", due_at=at(300))
        # a places it itself: b is told when a's lease ends, to take it over then if a died.
        assert await a.admit(make_page("now", due_at=T0), ["n"], WINDOW, T0, lease=held)
        assert await a.admit(page, ["c"], WINDOW, T0, lease=held)  # due later than the lease ends: then
        await a.put(make_page("idle"))  # nothing due: nobody is told
        await a.put(page)  # the next step, due in five minutes, for whoever is there then
        await b.put(make_page("q", due_at=T0))
        await a.wake_others()  # look now
        await eventually(until(lambda: len(woken) == 5), "five wake-ups")
        # In order for each replica (the two subscriptions are read concurrently).
        assert [when for who, when in woken if who == "b"] == [T0 + LEASE, at(300), at(300), None]
        assert [when for who, when in woken if who == "a"] == [T0]


async def test_a_store_closes_at_once_even_while_its_subscriber_is_still_connecting(server):
    for _ in range(20):  # closing during the subscriber's handshake used to leave it running, and close() waiting
        store = RedisStore(server.url, key_prefix=fresh_prefix())
        await store.open()
        closing = asyncio.ensure_future(store.close())
        done, _ = await asyncio.wait({closing}, timeout=2)
        assert done, "close() still waiting for the wake-up subscriber"
        await closing


async def test_a_quiet_subscriber_pings_and_stays_subscribed(own_server, monkeypatch):
    monkeypatch.setattr(redis_store, "WAKE_PING", 0.05)  # quiet this long: PING to prove the connection
    client = own_server.client()

    def subscribers() -> set[int]:
        return {c["id"] for c in client.client_list() if c.get("sub") == "1"}

    def pings() -> int:
        return client.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)

    try:
        prefix = fresh_prefix()
        async with opened(own_server, key_prefix=prefix) as a, opened(own_server, key_prefix=prefix) as b:
            woken: list[int] = []
            b.on_wakeup(lambda at: woken.append(1))
            await subscribed(own_server, a, 2)
            before, listening = pings(), subscribers()
            await eventually(until(lambda: pings() >= before + 6), "the subscribers' PINGs")
            assert subscribers() == listening and woken == []  # answered: no reconnection, no false wake-up
            await a.wake_others()
            await eventually(until(lambda: woken), "b woken by a")
    finally:
        client.close()


# ------------------------------------------------------------------------------------ outages and restarts


async def test_a_stopped_redis_is_unavailable_at_once_and_the_store_recovers_by_itself(own_server):
    async with opened(own_server) as store:
        assert await store.admit(make_page("p", due_at=T0), ["c"], WINDOW, T0)
        own_server.stop()
        await unavailable_within(2, store.ping)
        for call in (lambda: store.get("p"), lambda: store.admit(make_page("q"), ["d"], WINDOW, T0),
                     lambda: store.take_due(T0, 10, LEASE, "me"), store.depth, store.wake_others):
            error = await unavailable_within(2, call)
            assert str(error).startswith("redis store: ")
        await asyncio.to_thread(own_server.start)
        await store.ping()  # the same store, not reopened
        assert keys(await store.take_due(T0, 10, LEASE, "me")) == ["p"]


async def test_scripts_redis_forgot_are_loaded_again_and_run_once(own_server):
    client = own_server.client()
    try:
        async with opened(own_server) as store:
            assert await store.admit(make_page("p", due_at=T0), ["c"], WINDOW, T0)
            client.script_flush()  # as a Redis restarted without its script cache
            assert await store.look("db", make_page("p").group_key, "q", ["c"], at(1)) == (
                [OpenPage("p", ("id-p",))], True)
            assert not await store.admit(make_page("q"), ["c"], WINDOW, at(1))
            client.script_flush()
            assert keys(await store.take_due(T0, 10, LEASE, "me")) == ["p"]
            assert (await store.get("p")).version == 2  # the lease's token, bumped once
    finally:
        client.close()


async def test_a_store_opened_before_redis_answers_is_unavailable_until_it_does(own_server, caplog):
    # As when a pod starts before its Redis: not an error at open (the service starts unready).
    own_server.stop()
    caplog.set_level(logging.INFO, logger="alert2voice.store")
    async with opened(own_server) as store:
        assert any("does not answer yet" in r.getMessage() for r in caplog.records)
        await unavailable_within(2, store.ping)
        await asyncio.to_thread(own_server.start)
        await store.ping()
        assert await store.admit(make_page("p", due_at=T0), ["c"], WINDOW, T0)
        # The durability check waited for the first connection (the test's Redis runs appendfsync always).
        await eventually(until(lambda: store._durability is not None), "the durability check")
    assert not any("appendonly no" in r.getMessage() for r in caplog.records)


async def test_a_redis_that_does_not_answer_is_unavailable_within_the_socket_timeout(own_server):
    async with opened(own_server) as store:
        await store.put(make_page("p", due_at=T0))
        own_server.pause()  # connections are still accepted, by the kernel; nothing answers
        try:
            error = await unavailable_within(2, store.ping)
            assert "Timeout" in str(error) or "no answer" in str(error)
            await unavailable_within(2, lambda: store.get("p"))
        finally:
            own_server.resume()
        assert (await store.get("p")).due_at == T0


async def test_after_a_crash_redis_replays_its_aof_and_every_page_claim_lease_and_count_is_there(own_server):
    async with opened(own_server) as store:
        page = make_page("p", due_at=at(30), calls=[make_call(1, CallState.ACCEPTED, message_id="m-1")])
        assert await store.admit(page, ["c"], WINDOW, T0)
        await store.put(make_page("q", due_at=T0))
        [leased] = await store.take_due(T0, 1, LEASE, "replica-a")
        assert await store.reserve_call(ALICE, T0, [Tier("number", 1, MINUTE)]) is None
        # SIGKILL: nothing flushed at exit; appendfsync always wrote each change before its reply. In a
        # thread, so that the event loop runs on meanwhile, as a service's does.
        await asyncio.to_thread(own_server.kill)
        await asyncio.to_thread(own_server.start)

        assert await store.get("p") == page  # the same store object: it reconnects by itself
        assert await store.find_call(message_id="m-1") == "p"
        assert not await store.admit(make_page("r"), ["c"], WINDOW, at(1))  # the claim is held
        assert await store.next_due() == T0
        assert await store.take_due(at(1), 10, LEASE, "replica-b") == []  # p not due yet, q leased
        assert keys(await store.take_due(T0 + LEASE, 10, LEASE, "replica-b")) == ["q", "p"]
        assert (await store.get("q")).version == leased.version + 1
        assert await store.reserve_call(ALICE, at(1), [Tier("number", 1, MINUTE)]) == T0 + MINUTE


async def test_wake_ups_flow_again_after_a_redis_restart(own_server):
    prefix = fresh_prefix()
    async with opened(own_server, key_prefix=prefix) as a, opened(own_server, key_prefix=prefix) as b:
        woken: dict[str, list[int]] = {"a": [], "b": []}
        a.on_wakeup(lambda at: woken["a"].append(1))
        b.on_wakeup(lambda at: woken["b"].append(1))
        await subscribed(own_server, a, 2)
        await asyncio.to_thread(own_server.stop)
        await asyncio.to_thread(own_server.start)
        # Each subscriber reconnects by itself, and looks once for what it may have missed meanwhile.
        await eventually(until(lambda: woken["a"] and woken["b"]), "both resubscribed", within=15)
        await a.wake_others()
        await eventually(until(lambda: len(woken["b"]) == 2), "b woken by a after the restart")


# ------------------------------------------------------------------------------------------- memory


async def test_a_page_admitted_again_over_one_with_a_call_still_due_leaves_no_call_key_without_a_ttl(server):
    # The earlier incarnation resolved with its "resolved" call still queued (the page live, its call keys
    # without a TTL); the same alerts fire again before it went out: its call ids go with it.
    async with opened(server) as store:
        resolved = make_call(2, CallState.QUEUED, key="p", message_id=None)
        page = make_page("p", due_at=T0, calls=[make_call(1, CallState.ANSWERED, key="p", message_id="m-1"),
                                                  resolved])
        assert await store.admit(page, ["c"], WINDOW, T0)
        page.state, page.resolved_at = PageState.ANSWERED, T0
        await store.put(page)
        await store.release(["c"])
        keys, redis = store.keys, server.client()
        earlier = [keys.call(page.calls[0].correlation_id), keys.call("m-1"), keys.call(resolved.correlation_id)]
        assert [redis.pttl(k) for k in earlier] == [-1, -1, -1]  # live: no TTL
        again = make_page("p", due_at=at(60), calls=[make_call(1, CallState.QUEUED, key="p2", message_id=None)])
        assert await store.admit(again, ["c"], WINDOW, at(60))
        assert [redis.pttl(k) for k in earlier] == [-2, -2, -2]  # gone with their incarnation
        assert await store.find_call(correlation_id=resolved.correlation_id) is None
        assert await store.find_call(correlation_id=again.calls[0].correlation_id) == "p"


async def test_every_key_expires_or_is_purged_or_is_one_of_a_bounded_few(server):
    # Real times: the TTLs run on Redis's clock. One second of retention, and of dedup window.
    second = timedelta(seconds=1)
    async with opened(server, retention=second) as store:
        now = datetime.now(UTC)
        for i in range(20):
            assert await store.admit(make_page(f"p{i}", group_key=f"g{i % 3}", due_at=now), [f"c{i}"], second, now)
        for page in await store.take_due(now, 100, LEASE, "replica-a"):
            page.calls.append(make_call(1, CallState.NO_ANSWER, key=page.key, message_id=f"m-{page.key}"))
            page.state, page.due_at, page.updated_at = PageState.EXHAUSTED, None, now
            await store.put(page)
        assert await store.admit(make_page("open", group_key="g-open", due_at=now), ["c-open"], second, now)
        await store.reserve_call(ALICE, now, [Tier("number", 3, MINUTE)])
        await store.storm_join(ALICE, "p0", now)
        await store.take_token(now.timestamp(), 1.0, 1.0)

        k, client = store.keys, server.client()
        live = {k.page("open"), k.group("db", "g-open"), k.due}  # an escalation in progress stays
        # A counter, the newest RECENT_KEPT, what purge() walks, and the store's epoch (one short string).
        indexes = {k.seq, k.recent, k.done, k.epoch}
        limits = {k.placed(ALICE), k.placed_all, k.storm(ALICE), k.tokens}

        def stored() -> set[str]:
            return set(client.scan_iter(match=k.prefix + "*"))

        try:
            for key in stored() - live - indexes:
                ttl = client.pttl(key)  # -2: expired already
                assert ttl != -1 and ttl <= RETAIN.total_seconds() * 1000, key
            assert all(client.pttl(key) == -1 for key in live | indexes)
            # Redis's own expiry, not a timer of ours: the finished pages, their call ids, their groups and
            # the claims go.
            await eventually(until(lambda: stored() <= live | indexes | limits), "keys expired", within=10)
            assert await store.purge(datetime.now(UTC)) == 0  # gone already; purge() cleans the indexes
            assert stored() == live | limits | {k.seq, k.recent, k.epoch}
            assert keys(await store.recent(10)) == ["open"]
            assert await store.find_call(message_id="m-p0") is None
        finally:
            client.close()


async def test_the_indexes_purge_walks_stay_bounded_without_purge(server):
    async with opened(server, retention=timedelta(hours=1)) as store:
        k, client = store.keys, server.client()
        try:
            for name, updated in (("old", T0), ("new", T0 + timedelta(hours=2))):
                assert await store.admit(make_page(name, updated_at=updated), [f"c-{name}"], WINDOW, updated)
                page = await store.get(name)
                page.state = PageState.EXHAUSTED
                await store.put(page)
            # "old" finished more than the retention before "new": its page has expired by then.
            assert client.zrange(k.done, 0, -1) == ["new"]
            assert client.zrange(k.claims, 0, -1) == [k.claim("c-new")]  # c-old expired before c-new came
        finally:
            client.close()


# --------------------------------------------------------------------------------- durability check


async def test_open_says_when_redis_would_lose_acknowledged_writes(own_server, caplog):
    caplog.set_level(logging.INFO, logger="alert2voice.store")
    client = own_server.client()
    try:
        for appendonly, appendfsync, expected in (("yes", "always", None),
                                                  ("yes", "everysec", (logging.INFO, "appendfsync everysec")),
                                                  ("no", "always", (logging.WARNING, "appendonly no"))):
            client.config_set("appendfsync", appendfsync)
            client.config_set("appendonly", appendonly)
            caplog.clear()
            async with opened(own_server):
                pass
            said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "alert2voice.store"]
            if expected is None:
                assert said == []
            else:
                assert len(said) == 1 and said[0][0] == expected[0] and expected[1] in said[0][1], said
    finally:
        client.close()


async def test_a_redis_restarted_without_its_aof_is_warned_about_when_the_store_reconnects(own_server, caplog):
    caplog.set_level(logging.INFO, logger="alert2voice.store")

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "appendonly no" in
                r.getMessage()]

    async with opened(own_server) as store:
        await subscribed(own_server, store, 1)
        assert warned() == []
        await asyncio.to_thread(own_server.stop)
        own_server.options = ("--appendonly", "no")
        await asyncio.to_thread(own_server.start)
        await eventually(until(lambda: len(warned()) == 1), "the warning after the reconnection")
        await asyncio.to_thread(own_server.stop)  # the same again: no second line
        await asyncio.to_thread(own_server.start)
        await subscribed(own_server, store, 1)
        await store.ping()
        assert len(warned()) == 1


async def test_open_says_so_when_config_is_refused_and_the_url_credentials_are_used(server, caplog):
    caplog.set_level(logging.INFO, logger="alert2voice.store")
    user, password = f"app-{uuid.uuid4().hex[:6]}", "s3cret-pass"
    client = server.client()
    try:
        # As on a managed Redis: everything but CONFIG.
        client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                           categories=["+@all"], commands=["-config"])
        url = f"redis://{user}:{password}@127.0.0.1:{server.port}/0"
        store = RedisStore(url, key_prefix=fresh_prefix())
        await store.open()
        try:
            await store.put(make_page("p"))
        finally:
            await store.close()
        assert any(r.levelno == logging.INFO and "could not check" in r.getMessage() for r in caplog.records)
        wrong = RedisStore(url.replace(password, "wrong-pass"), key_prefix=fresh_prefix())
        with pytest.raises(StoreUnavailable) as info:
            await wrong.open()
        assert "wrong-pass" not in str(info.value) and "invalid username-password" in str(info.value)
    finally:
        client.acl_deluser(user)
        client.close()


def test_a_password_in_an_error_is_masked():
    store = RedisStore("redis://:hunter2@127.0.0.1:1/0")
    error = store._unavailable("get", RedisConnectionError("AUTH hunter2 refused"))
    assert str(error) == "redis store: get failed: AUTH *** refused"


# ------------------------------------------------------------------------------------------- URLs


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_master_credentials():
    target = parse_sentinel_url("redis+sentinel://app:p%40ss@sentinel-a:26380,sentinel-b,[::1]:26381/mymaster/2")
    assert target.hosts == [("sentinel-a", 26380), ("sentinel-b", 26379), ("::1", 26381)]
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 2, "app", "p@ss")
    assert "p@ss" not in repr(target)
    plain = parse_sentinel_url("redis+sentinel://:pw@10.0.0.1/mymaster")
    assert (plain.hosts, plain.db, plain.username, plain.password) == ([("10.0.0.1", 26379)], 0, None, "pw")


@pytest.mark.parametrize("url, message", [
    ("redis+sentinel://:topsecret@h:26379", "needs sentinel hosts and a service name"),
    ("redis+sentinel://:topsecret@/mymaster/0", "needs sentinel hosts and a service name"),
    ("redis+sentinel://:topsecret@h:26379/mymaster/zero", "database of a redis+sentinel:// URL is a number"),
    ("redis+sentinel://:topsecret@h:port/mymaster/0", "a sentinel's port is a number"),
    ("http://:topsecret@h:6379/0", "the scheme must be one of redis://, rediss://, redis+sentinel://"),
    ("redis://:topsecret@h:port/0", "the port is not a number"),
    ("redis://:topsecret@h:6379/zero", "the database is a number"),
    ("redis://:topsecret@:6379/0", "no host"),
])
def test_a_bad_url_is_refused_without_its_password(url, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        RedisStore(url)
    assert "topsecret" not in str(info.value)


async def test_rediss_means_tls():
    store = RedisStore("rediss://:pw@redis.example:6380/1")
    client = store._client()
    try:
        assert client.connection_pool.connection_class is SSLConnection
        assert client.connection_pool.connection_kwargs["db"] == 1
        assert client.connection_pool.connection_kwargs["socket_timeout"] == 1.0
    finally:
        await client.aclose()


async def test_the_store_finds_its_redis_through_a_sentinel(server, tmp_path):
    user, password = f"app-{uuid.uuid4().hex[:6]}", "master-secret"
    client = server.client()
    try:
        client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                           categories=["+@all"])
        with sentinel_for(server, tmp_path / "sentinel") as port:
            # The password is the master's: the sentinel itself has none.
            store = RedisStore(f"redis+sentinel://{user}:{password}@127.0.0.1:{port}/mymaster/0",
                               key_prefix=fresh_prefix())
            await store.open()
            try:
                assert isinstance(store._redis.connection_pool, SentinelConnectionPool)
                assert await store.admit(make_page("p", due_at=T0), ["c"], WINDOW, T0)
                assert keys(await store.take_due(T0, 10, LEASE, "me")) == ["p"]
            finally:
                await store.close()
            assert client.exists(store.keys.page("p"))
    finally:
        client.acl_deluser(user)
        client.close()


# ------------------------------------------------------------------------------- remembered duplicates

GROUP = "{}:{alertname=\"Down\"}"


def evalsha_calls(client) -> int:
    """How many scripts Redis has run (every store operation on pages is one)."""
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


async def live(store: RedisStore) -> None:
    """Wait until the store's subscription is confirmed: only then does it remember duplicates."""
    await eventually(until(lambda: store.cache.live), "the subscription confirmed")


async def admitted_and_remembered(store: RedisStore, key: str = "p", claims=("c",)) -> None:
    await live(store)
    assert await store.admit(make_page(key, due_at=T0, group_key=GROUP), list(claims), WINDOW, T0)
    # The admit's own invalidation (the group gained a page) comes back through Redis: resends come later.
    generation = store.cache.generation
    await eventually(until(lambda: store.cache.generation > generation), "the admit's invalidation")
    assert (await store.look("db", GROUP, key, list(claims), at(1)))[1]  # fetched, and remembered


async def test_a_resend_is_answered_from_memory_until_its_claims_expire(server):
    client = server.client()
    try:
        async with opened(server) as a:
            await admitted_and_remembered(a)
            before = evalsha_calls(client)
            pages, seen = await a.look("db", GROUP, "p", ["c"], at(2))
            assert seen and keys_of(pages) == ["p"] and evalsha_calls(client) == before  # no round trip
            # At the claim's expiry the answer is Redis's again (the page is still active: a duplicate).
            assert (await a.look("db", GROUP, "p", ["c"], T0 + WINDOW))[1]
            assert evalsha_calls(client) == before + 1
    finally:
        client.close()


async def test_claims_released_on_another_replica_are_not_answered_from_memory(server):
    prefix = fresh_prefix()
    async with opened(server, key_prefix=prefix) as a, opened(server, key_prefix=prefix) as b:
        await admitted_and_remembered(a)
        page = await b.get("p")
        page.state, page.due_at, page.resolved_at = PageState.RESOLVED, None, at(2)
        await b.put(page)
        await b.release(["c"])  # B resolved it: the same alerts firing again must page again
        # Within a second (without the invalidation it would be reused for MAX_AGE, 5 s).
        await eventually(until_async(lambda: not_seen(a, "p", ["c"], at(3))), "a's answer forgotten", within=1.0)


async def test_a_page_joining_the_group_on_another_replica_is_not_answered_from_memory(server):
    prefix = fresh_prefix()
    async with opened(server, key_prefix=prefix) as a, opened(server, key_prefix=prefix) as b:
        await admitted_and_remembered(a)
        assert await b.admit(make_page("q", due_at=T0, group_key=GROUP), ["d"], WINDOW, at(2))

        async def lists_q() -> bool:
            return keys_of((await a.look("db", GROUP, "p", ["c"], at(3)))[0]) == ["p", "q"]

        await eventually(until_async(lists_q), "q in a's answer for the group", within=1.0)


async def test_a_replicas_own_resolution_is_not_answered_from_memory_even_for_a_moment(server):
    async with opened(server) as a:
        await admitted_and_remembered(a)
        page = await a.get("p")
        page.state, page.due_at, page.resolved_at = PageState.RESOLVED, None, at(2)
        await a.put(page)
        await a.release(["c"])
        assert await a.look("db", GROUP, "p", ["c"], at(3)) == ([], False)  # at once: no message awaited


async def test_an_answer_fetched_while_an_invalidation_arrived_is_not_remembered(server, monkeypatch):
    client = server.client()
    try:
        async with opened(server) as a:
            await admitted_and_remembered(a)
            a.cache.invalidate("*")
            script = a._script

            async def invalidated_meanwhile(name, keys, args):
                result = await script(name, keys, args)
                if name == "look":
                    a.cache.invalidate(a.keys.group("db", GROUP))  # another replica's admit, read meanwhile
                return result

            monkeypatch.setattr(a, "_script", invalidated_meanwhile)
            assert (await a.look("db", GROUP, "p", ["c"], at(1)))[1]
            before = evalsha_calls(client)
            assert (await a.look("db", GROUP, "p", ["c"], at(2)))[1]
            assert evalsha_calls(client) == before + 1  # asked Redis again: nothing was kept
    finally:
        client.close()


async def test_what_was_remembered_is_forgotten_when_the_subscription_drops(own_server, monkeypatch):
    client = own_server.client()
    try:
        async with opened(own_server) as a:
            await admitted_and_remembered(a)
            dark = []
            monkeypatch.setattr(a.cache, "dark", lambda real=a.cache.dark: (dark.append(1), real()))
            client.client_kill_filter(_type="pubsub")  # invalidations published now would be missed
            await eventually(until(lambda: dark), "the subscription lost")
            await live(a)  # subscribed again by itself
            before = evalsha_calls(client)
            assert (await a.look("db", GROUP, "p", ["c"], at(2)))[1]
            assert evalsha_calls(client) == before + 1  # asked Redis: nothing from before the gap was kept
            assert not LookCache(monotonic=lambda: 0.0).live  # and a cache never subscribed keeps nothing
    finally:
        client.close()


def keys_of(pages) -> list[str]:
    return [p.key for p in pages]


def until_async(check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[object]]:
    async def probe() -> object:
        return True if await check() else None
    return probe


async def not_seen(store: RedisStore, key: str, claims, now) -> bool:
    return not (await store.look("db", GROUP, key, list(claims), now))[1]


async def test_the_scripts_are_loaded_at_open_so_no_first_use_is_refused(server):
    client = server.client()
    try:
        client.script_flush()  # as a restarted Redis: its script cache empty
        refused = client.info("commandstats").get("cmdstat_evalsha", {}).get("failed_calls", 0)
        async with opened(server) as store:
            assert await store.admit(make_page("p", due_at=T0), ["c"], WINDOW, T0)
            assert await store.get("p") is not None
        assert client.info("commandstats").get("cmdstat_evalsha", {}).get("failed_calls", 0) == refused
    finally:
        client.close()
