"""The store's rules pinned across backends: random operation sequences, the clock at the rules' boundaries,
run against memory, SQLite and a real Redis, every answer compared.

Memory and SQLite apply store/rules.py; Redis encodes the same rules in Lua (store/redis_scripts.py). Any
answer on which they differ is a rule written twice that drifted: fix the rule, not this test.
"""

from __future__ import annotations

import asyncio
import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alert2voice.pages import Page, PageState
from alert2voice.store.base import Conflict, FirstCall, Lease, Store, Tier
from alert2voice.store.memory import MemoryStore
from alert2voice.store.redis import RedisStore
from alert2voice.store.sqlite import SQLiteStore
from tests.e2e_support import LOOPBACK, eventually
from tests.redis_support import RedisServer, redis_server  # noqa: F401 (a fixture)
from tests.test_store import T0, make_call, make_page

WINDOW = timedelta(seconds=300)
LEASE = timedelta(seconds=60)
DB = 9  # a Redis database of its own, flushed before every example
PREFIX = "diff:"

# Seconds after T0 at which page operations happen: equal times, a window (300), a lease (60) apart.
MOMENTS = (0, 10, 50, 60, 70, 240, 290, 300, 310, 360, 600)
PAGE_KEYS, CLAIMS, OWNERS = ("a", "b", "c"), ("c1", "c2", "c3"), ("r1", "r2")
NUMBERS, BEATS = ("n1", "n2"), ("h1", "h2")
TIERS = ((), (Tier("number", 2, timedelta(seconds=60)),),
         (Tier("number", 1, timedelta(seconds=60)), Tier("all", 2, timedelta(seconds=100))))
# (rate, burst) of the token bucket, and steps of its clock: a tenth of a second is 10/s's refill.
BUCKETS = ((10.0, 1.0), (3.0, 1.0), (2.0, 2.0))
TOKEN_STEPS = (0.0, 0.0999, 0.1, 0.1001, 1 / 3, 0.5, 2.0)
FINAL = (PageState.ANSWERED, PageState.RESOLVED, PageState.EXHAUSTED)


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


moments = st.sampled_from(MOMENTS).map(at)
maybe_moment = st.none() | moments
page_keys = st.sampled_from(PAGE_KEYS)
claim_sets = st.lists(st.sampled_from(CLAIMS), max_size=3, unique=True)
leases = st.none() | st.builds(Lease, st.sampled_from(OWNERS), moments, st.just(""))

# Three families, each its own test, so that a sequence dwells on one part of the store.
PAGE_OPS = st.one_of(
    st.tuples(st.just("admit"), page_keys, claim_sets, moments, maybe_moment, leases),
    st.tuples(st.just("seen"), page_keys, claim_sets, moments),
    st.tuples(st.just("look"), page_keys, claim_sets, moments),
    st.tuples(st.just("release"), claim_sets),
    # put: which earlier read of the page to write over (0: the latest), and what it changes.
    st.tuples(st.just("put"), page_keys, st.integers(0, 3), st.sampled_from((PageState.ACTIVE, *FINAL)),
              maybe_moment, moments, st.booleans(), leases),
    st.tuples(st.just("get"), page_keys),
    st.tuples(st.just("take_due"), moments, st.integers(1, 3), st.sampled_from(OWNERS),
              st.lists(page_keys, max_size=1)),
    # renew: with no epoch, or one no page was read under.
    st.tuples(st.just("renew"), page_keys, st.builds(Lease, st.sampled_from(OWNERS), moments,
                                                     st.sampled_from(("", "another")))),
    st.tuples(st.just("next_due")),
    st.tuples(st.just("depth")),
    st.tuples(st.just("recent"), st.integers(0, 4)),
    st.tuples(st.just("find_call"), page_keys),
    st.tuples(st.just("purge"), moments),
)
LIMIT_OPS = st.one_of(
    st.tuples(st.just("reserve_call"), st.sampled_from(NUMBERS), moments, st.sampled_from(TIERS)),
    # admit, clearing the page's first call in the same step (a page never admitted before: it is admitted).
    st.tuples(st.just("admit_calling"), st.sampled_from(NUMBERS), moments, st.sampled_from(TIERS),
              st.sampled_from(BUCKETS)),
    st.tuples(st.just("unreserve_call"), st.sampled_from(NUMBERS), moments),
    st.tuples(st.just("calls_within"), st.sampled_from(NUMBERS), moments, st.sampled_from((60, 100, 600))),
    st.tuples(st.just("storm_join"), st.sampled_from(NUMBERS), page_keys, moments),
    st.tuples(st.just("storm_batch"), st.sampled_from(NUMBERS)),
    st.tuples(st.just("storm_lead"), st.sampled_from(NUMBERS), page_keys),
    st.tuples(st.just("storm_end"), st.sampled_from(NUMBERS), page_keys),
)
CLOCK_OPS = st.one_of(
    # take_token: how far its clock moves (None: exactly the wait the last refusal asked for), rate and burst.
    st.tuples(st.just("take_token"), st.none() | st.sampled_from(TOKEN_STEPS), st.sampled_from(BUCKETS)),
    st.tuples(st.just("beat"), st.sampled_from(BEATS), moments),
    st.tuples(st.just("beats")),
)


def new_page(key: str, due_at) -> Page:
    """Pages a and b share an alert group, c has its own; each has one call, to be found by its ids."""
    group = "g1" if key in "ab" else "g2"
    return make_page(key, group_key=group, due_at=due_at, calls=[make_call(1, key=key, message_id=f"m-{key}")])


def seen_as(page: Page | None) -> tuple[Page, int] | None:
    """A page as an answer: its content and its version (which Page equality leaves out)."""
    return None if page is None else (page, page.version)


class Run:
    """One operation sequence, applied to every store in turn; the reads of pages a writer may write over."""

    def __init__(self, stores: dict[str, Store]) -> None:
        self.stores = stores
        # Per store and page key, what was read of it, latest last (the same pages, each at its store's version).
        self.reads: dict[str, dict[str, list[Page]]] = {name: {} for name in stores}
        self.token_now = T0.timestamp()
        self.token_wait = 0.0
        self.admitted = 0  # pages admit_calling admitted

    def read(self, pages: dict[str, Page | None]) -> None:
        for name, page in pages.items():
            if page is not None:
                self.reads[name].setdefault(page.key, []).append(copy.deepcopy(page))

    async def each(self, call: Callable[[Store], Any]) -> dict[str, Any]:
        """The answer of every store (a Conflict is an answer too)."""
        answers = {}
        for name, store in self.stores.items():
            try:
                answers[name] = await call(store)
            except Conflict:
                answers[name] = "Conflict"
        return answers

    def name(self, store: Store) -> str:
        return next(name for name, s in self.stores.items() if s is store)

    async def apply(self, op: tuple) -> dict[str, Any]:
        name, *args = op
        return await getattr(self, "op_" + name)(*args)

    async def op_admit(self, key, claims, now, due_at, lease):
        pages: dict[str, Page] = {}

        async def admit(store):
            page = new_page(key, due_at)
            admitted = await store.admit(page, claims, WINDOW, now, lease)
            if admitted:
                pages[self.name(store)] = page
            return admitted, page.version if admitted else None
        answers = await self.each(admit)
        self.read(pages)
        return answers

    async def op_seen(self, key, claims, now):
        return await self.each(lambda store: store.seen(key, claims, now))

    async def op_look(self, key, claims, now):
        return await self.each(lambda store: store.look("db", "g1" if key in "ab" else "g2", key, claims, now))

    async def op_release(self, claims):
        return await self.each(lambda store: store.release(claims))

    async def op_put(self, key, which, state, due_at, updated, resolved, lease):
        written: dict[str, Page] = {}

        async def put(store):
            reads = self.reads[self.name(store)].get(key) or [new_page(key, None)]
            page = copy.deepcopy(reads[-1 - which % len(reads)])
            page.state, page.due_at, page.updated_at = state, due_at, updated
            page.resolved_at = updated if resolved else None
            await store.put(page, lease)
            written[self.name(store)] = page
            return page.version
        answers = await self.each(put)
        self.read(written)
        return answers

    async def op_get(self, key):
        answers = await self.each(lambda store: store.get(key))
        self.read(answers)
        return {name: seen_as(page) for name, page in answers.items()}

    async def op_take_due(self, now, limit, owner, skip):
        answers = await self.each(lambda store: store.take_due(now, limit, LEASE, owner, skip))
        for taken in zip(*answers.values(), strict=False):  # the same pages, if the stores agree
            self.read(dict(zip(answers, taken, strict=True)))
        return {name: [seen_as(p) for p in pages] for name, pages in answers.items()}

    async def op_renew(self, key, lease):
        return await self.each(lambda store: store.renew(key, lease))

    async def op_next_due(self):
        return await self.each(lambda store: store.next_due())

    async def op_depth(self):
        return await self.each(lambda store: store.depth())

    async def op_recent(self, limit):
        answers = await self.each(lambda store: store.recent(limit))
        return {name: [seen_as(p) for p in pages] for name, pages in answers.items()}

    async def op_find_call(self, key):
        return await self.each(lambda store: asyncio.gather(store.find_call(correlation_id=f"{key}-1"),
                                                            store.find_call(message_id=f"m-{key}")))

    async def op_purge(self, before):
        return await self.each(lambda store: store.purge(before))

    async def op_reserve_call(self, number, now, tiers):
        return await self.each(lambda store: store.reserve_call(number, now, tiers))

    async def op_admit_calling(self, number, now, tiers, bucket):
        self.admitted += 1
        first = FirstCall(number, tiers, *bucket)
        return await self.each(lambda store: store.admit(new_page(f"f{self.admitted}", now), [f"f{self.admitted}"],
                                                         WINDOW, now, first=first))

    async def op_unreserve_call(self, number, when):
        return await self.each(lambda store: store.unreserve_call(number, when))

    async def op_calls_within(self, number, now, per):
        return await self.each(lambda store: store.calls_within(number, now, timedelta(seconds=per)))

    async def op_storm_join(self, number, key, release_at):
        return await self.each(lambda store: store.storm_join(number, key, release_at))

    async def op_storm_batch(self, number):
        return await self.each(lambda store: store.storm_batch(number))

    async def op_storm_lead(self, number, key):
        return await self.each(lambda store: store.storm_lead(number, key))

    async def op_storm_end(self, number, key):
        return await self.each(lambda store: store.storm_end(number, key))

    async def op_take_token(self, step, bucket):
        self.token_now += self.token_wait if step is None else step
        rate, burst = bucket
        answers = await self.each(lambda store: store.take_token(self.token_now, rate, burst))
        self.token_wait = answers["memory"]
        return answers

    async def op_beat(self, name, when):
        return await self.each(lambda store: store.beat(name, when))

    async def op_beats(self):
        return await self.each(lambda store: store.beats())


async def run_sequence(server: RedisServer, directory: Path, ops: list[tuple]) -> None:
    stores: dict[str, Store] = {"memory": MemoryStore(), "sqlite": SQLiteStore(directory / "a2v.db"),
                                "redis": RedisStore(server.url.rsplit("/", 1)[0] + f"/{DB}", key_prefix=PREFIX)}
    for store in stores.values():
        await store.open()
    redis_store = stores["redis"]
    assert isinstance(redis_store, RedisStore)

    async def listening() -> bool:
        return redis_store.cache.live
    # Subscribed to invalidations, so that look() answers from its remembered duplicates as in production.
    await eventually(listening, "the wake-up subscription", within=10, interval=0.002)
    try:
        run = Run(stores)
        for done, op in enumerate(ops):
            answers = await run.apply(op)
            expected = answers["memory"]
            for name, answer in answers.items():
                assert answer == expected, (f"{name} differs from memory at operation {done}: {op}\n"
                                            f"  memory: {expected!r}\n  {name}: {answer!r}\n"
                                            "after: " + "\n       ".join(map(repr, ops[:done])))
    finally:
        for store in stores.values():
            await store.close()


@pytest.fixture(scope="module")
def flushed_redis(redis_server: RedisServer) -> Iterator[Callable[[], RedisServer]]:  # noqa: F811 (the fixture)
    """The session's redis-server, its database DB emptied on every call."""
    client = redis.Redis(host=LOOPBACK, port=redis_server.port, db=DB, socket_timeout=2)

    def flushed() -> RedisServer:
        client.flushdb()
        return redis_server
    yield flushed
    client.close()


def examples(default: int) -> int:
    """How many sequences a test tries: DIFF_EXAMPLES in the environment overrides, to hunt longer."""
    return int(os.environ.get("DIFF_EXAMPLES", default))


def run_against_all(server_of: Callable[[], RedisServer], ops: list[tuple]) -> None:
    server = server_of()
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run_sequence(server, Path(directory), ops))


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


@settings(max_examples=examples(150), **SETTINGS)
@given(ops=st.lists(PAGE_OPS, min_size=1, max_size=30))
# A page with no claims: admit() refuses it everywhere, and seen() said so only in memory and SQLite.
@example(ops=[("seen", "a", [], at(0)), ("admit", "a", [], at(0), None, None)])
# A page resolved, then admitted anew, keeps its place in its group (SQLite's mirror put it last).
@example(ops=[("admit", "a", ["c1"], at(0), None, None), ("admit", "b", ["c2"], at(0), None, None),
              ("put", "a", 0, PageState.RESOLVED, None, at(10), True, None),
              ("admit", "a", ["c3"], at(10), None, None), ("look", "a", ["c1"], at(10))])
# Pages updated at the same instant: recent() lists the greater key first (Redis did; memory and SQLite listed
# the first admitted first).
@example(ops=[("admit", "a", ["c1"], at(0), None, None), ("admit", "b", ["c2"], at(0), None, None), ("recent", 1)])
# A purged page's lease is forgotten with it (memory still renewed it).
@example(ops=[("put", "b", 0, PageState.ANSWERED, None, at(0), False, Lease("r2", at(0))), ("purge", at(10)),
              ("renew", "b", Lease("r2", at(0)))])
def test_pages_claims_and_leases_agree(flushed_redis, ops):
    run_against_all(flushed_redis, ops)


@settings(max_examples=examples(80), **SETTINGS)
@given(ops=st.lists(LIMIT_OPS, min_size=1, max_size=30))
# Giving back a slot the number never had at that time changes nothing (memory took another number's slot out
# of the global counter).
@example(ops=[("reserve_call", "n1", at(10), ()), ("unreserve_call", "n2", at(10)),
              ("reserve_call", "n1", at(0), ()), ("reserve_call", "n1", at(0), TIERS[2])])
# A first call cleared by its admit: counted and given a token, then held by a tier, then made to wait for a token.
@example(ops=[("admit_calling", "n1", at(0), TIERS[2], (3.0, 1.0)), ("admit_calling", "n1", at(10), TIERS[2], (3.0, 1.0)),
              ("admit_calling", "n2", at(0), TIERS[1], (3.0, 1.0)), ("calls_within", "n1", at(10), 60)])
def test_throttle_tiers_and_storm_batches_agree(flushed_redis, ops):
    run_against_all(flushed_redis, ops)


@settings(max_examples=examples(60), **SETTINGS)
@given(ops=st.lists(CLOCK_OPS, min_size=1, max_size=30))
# The first disagreement found: with 10/s and a burst of 1, memory took a token 99.9 ms after the last one and
# asked for 99.9 ms more at 100 ms; Redis asked for 0.1 ms at 99.9 ms and took it at 100 ms.
@example(ops=[("take_token", 0.0, (10.0, 1.0)), ("take_token", 0.0999, (10.0, 1.0)),
              ("take_token", None, (10.0, 1.0)), ("take_token", 0.0001, (10.0, 1.0))])
def test_the_token_bucket_and_heartbeats_agree(flushed_redis, ops):
    run_against_all(flushed_redis, ops)
