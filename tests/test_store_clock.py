"""The store's clock as a process reads it (store/clock.py), with the store's time and the round trips injected."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alert2voice.clock import Clock
from alert2voice.provider.fake import RecordingProvider
from alert2voice.store.base import StoreUnavailable
from alert2voice.store.clock import FIRST_RETRY, KEPT, MEASURE_EVERY, QUICK, RETRY_EVERY, StoreClock
from alert2voice.store.memory import MemoryStore
from alert2voice.store.redis import RedisStore
from alert2voice.web import create_app
from alert2voice.web.keys import CLOCK, DISPATCHER, HEARTBEATS
from tests.harness import AUTH
from tests.redis_support import opened, redis_server_in
from tests.support import PAYMENTS, FakeClock, alert, make_config, payload
from tests.test_store import keys, make_page


class StoreTime:
    """A store's clock `behind` seconds behind the process's wall clock. A read takes `before` seconds of the
    process's clocks until the store reads its clock, then `after` more until the answer is back."""

    def __init__(self, process: FakeClock, behind: float = 0.0) -> None:
        self.process, self.behind = process, behind
        self.trips: deque[tuple[float, float]] = deque()  # (before, after) of the next reads; else 1 ms each
        self.away = False

    async def read(self) -> datetime:
        if self.away:
            raise StoreUnavailable("redis store: time failed: connection refused")
        before, after = self.trips.popleft() if self.trips else (0.001, 0.001)
        self.process.advance(before)
        read = self.process.now() - timedelta(seconds=self.behind)
        self.process.advance(after)
        return read

    def true_now(self) -> datetime:
        return self.process.now() - timedelta(seconds=self.behind)


def off_by(clock: StoreClock, store: StoreTime) -> float:
    return abs((clock.now() - store.true_now()).total_seconds())


@pytest.fixture
def process() -> FakeClock:
    return FakeClock()


async def test_a_store_without_a_clock_leaves_the_process_clock_in_charge(process) -> None:
    async def no_clock() -> None:
        return None

    clock = StoreClock(process, no_clock)
    assert not clock.measured and clock.now() == process.now()
    await clock.measure()
    assert clock.measured and clock.local and clock.skew is None
    assert clock.now() == process.now()
    process.advance(5)
    assert clock.now() == process.now() and clock.monotonic() == process.monotonic()
    await asyncio.wait_for(clock.run(sleep=pytest.fail), 1)  # nothing to measure: returns without sleeping


async def test_a_replica_ahead_reads_the_stores_time_and_reports_its_skew(process, caplog) -> None:
    store, skews = StoreTime(process, behind=30.0), []
    clock = StoreClock(process, store.read, skew=skews.append)
    assert not clock.measured and clock.now() == process.now()  # not measured yet: nothing is shared yet
    with caplog.at_level(logging.INFO, "alert2voice.store"):
        await clock.measure()
        assert clock.measured and off_by(clock, store) < 0.002
        assert skews == [pytest.approx(30.0, abs=0.002)]
        for _ in range(3):
            process.advance(MEASURE_EVERY)
            await clock.measure()
    assert off_by(clock, store) < 0.002
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "warned once, not at every measurement"
    assert "+30.0s off the store's" in warnings[0].getMessage()
    assert warnings[0].skew_seconds == pytest.approx(30.0, abs=0.002)


async def test_the_warning_follows_the_skew_as_it_changes(process, caplog) -> None:
    store = StoreTime(process, behind=0.2)
    clock = StoreClock(process, store.read)
    with caplog.at_level(logging.INFO, "alert2voice.store"):
        await clock.measure()
        assert not caplog.records  # within a second: nothing said
        # The process's wall clock is stepped by hand (its monotonic clock is not): the store's time does not move.
        for step, behind in ((5.0, 5.2), (0.5, 5.7), (3.0, 8.7), (-8.5, 0.2)):
            before = store.true_now()
            process.t += timedelta(seconds=step)
            store.behind = behind
            assert off_by(clock, store) < 0.002 and store.true_now() == before
            await clock.measure()
    said = [(r.levelname, round(r.skew_seconds, 1)) for r in caplog.records]
    # Beyond 1s: a warning; moved by less than 1s: nothing; by more: a warning again; back within: one line.
    assert said == [("WARNING", 5.2), ("WARNING", 8.7), ("INFO", 0.2)]


async def test_the_midpoint_of_the_round_trip_and_the_shortest_one_believed(process) -> None:
    store = StoreTime(process, behind=-3.0)  # the store ahead, this time
    clock = StoreClock(process, store.read)
    # A slow round trip whose answer was read at its very start: the midpoint is off by half of it, at most.
    store.trips.append((0.0, 0.8))
    await clock.measure()
    assert off_by(clock, store) == pytest.approx(0.4, abs=0.001)
    # A quick one is believed over it; slow ones after it do not displace it.
    store.trips.extend([(0.002, 0.002), (0.6, 0.0), (0.0, 0.5)])
    for _ in range(3):
        await clock.measure()
        assert off_by(clock, store) < 0.003


async def test_between_measurements_the_stores_time_runs_on_the_monotonic_clock(process) -> None:
    store = StoreTime(process, behind=30.0)
    clock = StoreClock(process, store.read)
    await clock.measure()
    process.mono += 10.0  # ten seconds pass; the wall clock is stuck meanwhile (a paused VM's, a bad NTP step)
    assert clock.now() - store.true_now() == pytest.approx(timedelta(seconds=10), abs=timedelta(milliseconds=2))
    process.t += timedelta(seconds=10)
    assert off_by(clock, store) < 0.002


async def test_a_stepped_store_clock_voids_what_was_measured_before(process, caplog) -> None:
    store = StoreTime(process, behind=0.0)
    clock = StoreClock(process, store.read)
    store.trips.extend([(0.0005, 0.0005)] * KEPT)
    for _ in range(KEPT):
        await clock.measure()
    # The store failed over to a host whose clock is 20s behind: a slower round trip than any kept, but it
    # cannot agree with them, so it is believed at once.
    store.behind = 20.0
    store.trips.append((0.05, 0.05))
    with caplog.at_level(logging.WARNING, "alert2voice.store"):
        await clock.measure()
    assert off_by(clock, store) < 0.06
    moved = [r for r in caplog.records if r.getMessage() == "the store's clock moved: measuring it afresh"]
    assert len(moved) == 1 and moved[0].moved_seconds == pytest.approx(-20.0, abs=0.1)


async def test_a_slewed_clock_is_followed_without_calling_it_a_step(process, caplog) -> None:
    store = StoreTime(process)
    clock = StoreClock(process, store.read)
    with caplog.at_level(logging.WARNING, "alert2voice.store"):
        for _ in range(2 * KEPT):
            await clock.measure()
            assert off_by(clock, store) < 0.002
            # NTP slews the store's host clock 500 ppm fast, and this host's 500 ppm slow.
            process.advance(MEASURE_EVERY)
            store.behind -= 1000e-6 * MEASURE_EVERY
    assert not caplog.records


async def test_measurements_come_quickly_at_start_and_after_the_store_was_away(process) -> None:
    store = StoreTime(process)
    clock = StoreClock(process, store.read)
    waits: list[float] = []
    # Whether the store is away at each measurement: two not answered, QUICK + 2 answered, two not, five answered.
    script = deque([True, True, *[False] * (QUICK + 2), True, True, *[False] * 5])

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if not script:
            raise asyncio.CancelledError
        store.away = script.popleft()

    with pytest.raises(asyncio.CancelledError):
        await clock.run(sleep=sleep)
    # Until the store first answers, at once again; the first QUICK measurements quickly, then every MEASURE_EVERY;
    # after a failure, quickly again until QUICK have been answered (the store may be another host now), then slowly.
    first, quick, slow = FIRST_RETRY, RETRY_EVERY, MEASURE_EVERY
    assert waits == [first, first, first, *[quick] * (QUICK - 1), slow, slow, slow, quick, *[quick] * QUICK,
                     slow, slow, slow]
    assert clock.measured


# ----------------------------------------------------------------------------------------- in the app


class StoreBehind(MemoryStore):
    """A memory store with a clock of its own, `behind` seconds behind the process's (as Redis's may be)."""

    def __init__(self, process: FakeClock, behind: float) -> None:
        super().__init__()
        self.clock = StoreTime(process, behind)

    async def time(self) -> datetime:
        return await self.clock.read()


async def test_the_app_writes_the_stores_time_and_shows_the_skew(aiohttp_client, process) -> None:
    store, registry = StoreBehind(process, behind=30.0), CollectorRegistry()
    app = create_app(make_config(), provider=RecordingProvider(), store=store, clock=process, registry=registry)
    client = await aiohttp_client(app)
    assert (await client.get("/-/ready")).status == 200
    resp = await client.post("/alerts", json=payload(alert(PAYMENTS)), headers=AUTH)
    assert resp.status == 200
    [page] = await store.recent(1)
    # Written with the store's time, not the process's, 30s ahead.
    assert abs((page.received_at - store.clock.true_now()).total_seconds()) < 0.01
    assert registry.get_sample_value("alert2voice_clock_skew_seconds") == pytest.approx(30.0, abs=0.01)


async def test_nothing_compares_shared_times_until_the_stores_clock_is_measured(aiohttp_client, process) -> None:
    store, registry = StoreBehind(process, behind=2.0), CollectorRegistry()
    store.clock.away = True  # the store's clock does not answer at start (Redis not up yet, say)
    app = create_app(make_config(), provider=RecordingProvider(), store=store, clock=process, registry=registry)
    client = await aiohttp_client(app)
    resp = await client.get("/-/ready")
    text = await resp.text()
    assert resp.status == 503 and "the store's clock not measured yet" in text, text
    # The dispatcher and the heartbeat watcher wait: they would take leases and judge heartbeats on this clock.
    assert "dispatcher not running" in text and not app[HEARTBEATS].running
    assert registry.get_sample_value("alert2voice_clock_skew_seconds") == 0
    store.clock.away = False
    await app[CLOCK].measure()  # as the clock's own loop does, a moment after the store answers
    await app[DISPATCHER].settled()
    await app[HEARTBEATS].settled()
    assert (await client.get("/-/ready")).status == 200
    assert registry.get_sample_value("alert2voice_clock_skew_seconds") == pytest.approx(2.0, abs=0.01)


# ------------------------------------------------------------------------------------------ on real Redis


class Ahead(Clock):
    """This process's clocks, its wall clock `seconds` ahead (as libfaketime makes it in the e2e test)."""

    def __init__(self, seconds: float) -> None:
        self.ahead = timedelta(seconds=seconds)

    def now(self) -> datetime:
        return super().now() + self.ahead


async def test_two_replicas_read_one_time_from_redis_and_respect_each_others_leases(tmp_path: Path) -> None:
    with redis_server_in(tmp_path / "redis") as server:
        async with opened(server) as store_a, opened(server, key_prefix=store_a.keys.prefix) as store_b:
            await replicas_on_one_redis(store_a, store_b)


async def replicas_on_one_redis(store_a: RedisStore, store_b: RedisStore) -> None:
    """Replica A's wall clock 30s ahead, B's right: one time, and a lease B holds is B's to A."""
    ahead = Ahead(30.0)
    a, b = StoreClock(ahead, store_a.time), StoreClock(Clock(), store_b.time)
    for _ in range(QUICK):
        await a.measure()
        await b.measure()
    # redis-server runs on this host's clock: B's wall clock is the store's, A's is 30s ahead of it.
    assert abs((a.now() - b.now()).total_seconds()) < 0.05
    assert a.skew == pytest.approx(30.0, abs=0.05) and b.skew == pytest.approx(0.0, abs=0.05)
    # B takes a due page under a 10s lease; A, 30s ahead by its own wall clock, leaves it to B.
    page = make_page("held", due_at=b.now() - timedelta(seconds=1))
    assert await store_b.admit(page, page.claims, timedelta(minutes=5), b.now())
    lease = timedelta(seconds=10)
    assert keys(await store_b.take_due(b.now(), 10, lease, "replica-b")) == ["held"]
    assert await store_a.take_due(a.now(), 10, lease, "replica-a") == []
    # What A would have done reading its own wall clock: taken the page B holds.
    assert keys(await store_a.take_due(ahead.now(), 10, lease, "replica-a")) == ["held"]
