"""The benchmark's own machinery: the table and JSON from typed results (SQLite and Redis side by side), a
failing phase, the stores' figures, and the phases and the CLI end to end on real processes, Redis among
them (no wrk, no timing targets)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from alert2voice.pages import Call, Page, PageState, new_nonce
from alert2voice.routing import correlation_id, page_key
from alert2voice.store.redis import RedisStore
from alert2voice.store.sqlite import SQLiteStore
from bench import loadgen, phases, report
from bench.memory import Memory
from bench.rig import QUICK, REDIS, REDIS_KEY_PREFIX, SQLITE, Drain, Load, Rig
from bench.startup import Startup, startup
from bench.store_stats import RedisStats, StoreStats, redis_stats, store_stats
from bench.storm import BigWebhook, Burst, Storms
from bench.throughput import Ceiling, CeilingRun, Duplicate, DuplicateRun, NewPage, Paths, RelayFloor, Throughput
from bench.ttc import RATE, TimeToCall, by_page_key, match_calls
from tests.redis_support import redis_server_in, require_redis_server

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATENCY = {"p50": 4.0, "p90": 6.0, "p99": 9.5, "max": 12.0, "count": 300}
DRAIN = Drain(called=300, placed_202=300, provider_other=0, drained=True, waited_s=0.01)


def load(rps: float) -> dict:
    return {"generator": "wrk -t1 -c32", "requests": int(rps * 3), "duration_s": 3.0, "rps": rps, "non_2xx": 0,
            "socket_errors": 0, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0}}


def fabricated_paths(store: str, dup_rps: float, ceiling: list[CeilingRun]) -> Paths:
    dup = [DuplicateRun(**load(dup_rps), server_cpu_ms_per_request=0.13, ratio=round(dup_rps / c.rps, 3))
           for c in ceiling]
    return Paths(
        store=store,
        rss_idle_mb=57.0,
        duplicate=Duplicate(rps=dup_rps, ratio=round(dup_rps / 10000.0, 3), runs=dup, non_2xx=0,
                            server_cpu_ms_per_request=0.13, pages_duplicate=21000, pages_called=0),
        new_page=NewPage(**load(500.0), webhooks_accepted=1500, pages_called=1500, calls_received_by_simulator=1500,
                         every_call_placed=True, last_call_after_load_end_s=0.05, sustained_rps=500.0,
                         server_cpu_ms_per_webhook=1.9, simulator_cpu_ms_per_call=0.4, provider_non_202=0,
                         ratio=0.05, accepted_ratio=0.05, ratio_to_relay_floor=0.2),
        rss_end_mb=70.0,
    )


def fabricated_throughput(*stores: tuple[str, float]) -> Throughput:
    """The ceiling and relay floor, and per (store, duplicate-path requests/s) that store's paths."""
    ceiling = [CeilingRun(**load(rps), server_cpu_ms_per_request=0.1) for rps in (9000.0, 10000.0, 11000.0)]
    return Throughput(
        ceiling=Ceiling(rps=10000.0, runs=ceiling, spread=0.2),
        relay_floor=RelayFloor(**load(2500.0), calls_received_by_simulator=7500, sustained_rps=2500.0,
                               server_cpu_ms_per_webhook=0.3, ratio=0.25),
        stores=tuple(fabricated_paths(store, rps, ceiling) for store, rps in stores or ((SQLITE, 7000.0),)),
    )


def fabricated_ttc(store: str = SQLITE, p99: float = 9.5) -> TimeToCall:
    return TimeToCall(store=store, rate_per_s=100.0, webhooks=300, answered_200=300, statuses={"200": 300},
                      calls_matched=300, missing=0,
                      ms={**LATENCY, "p99": p99}, webhook_response_ms=LATENCY, send_lateness_ms=LATENCY,
                      service_metric_mean_ms=3.9,
                      host_fdatasync_ms={"p50": 0.4, "p90": 0.6, "p99": 1.25, "max": 3.0, "count": 300},
                      slowest=[{"ms": 12.0, "index": 0, "at_s": 0.0, "answered_ms": 11.0}],
                      simulator_time_resolution_ms=1, drain=DRAIN)


def fabricated_storms() -> Storms:
    big = BigWebhook(alerts=5000, bytes=2_305_890, status=200, result=["called"], response_s=0.29, resend_status=200,
                     resend_result=["duplicate"], resend_response_s=0.61, calls_placed=1, time_to_call_s=0.38)
    burst = Burst(groups=1000, sent_within_s=1.0, all_answered_within_s=1.3, statuses={"200": 1000},
                  response_ms={**LATENCY, "p50": 200.0, "p99": 280.0, "max": 290.0}, pages_called=1000,
                  pages_throttled=995, calls_placed=5, calls_allowed_by_throttle=20, calls_allowed_by_storm_rule=6,
                  throttle_respected=True, storm_rule_respected=True)
    return Storms(store=SQLITE, config={"storm": {"pages": 5, "per": "2m"}}, big_webhook=big, burst=burst,
                  rss_mb_after=88.0)


def fabricated_memory(stats: StoreStats | RedisStats, store: str = SQLITE) -> Memory:
    idle = RedisStats(used_memory=1_000_000) if store == REDIS else StoreStats(bytes=4096)
    return Memory(store=store, rss_idle_mb=57.1, rss_after_mb=60.9, rss_growth_mb=3.8, rss_peak_mb=61.0,
                  webhooks_planned=10000, webhooks=10031, share_new_pages=0.02, duplicate_groups=50, pages_called=249,
                  pages_duplicate=9782, load=Load(**load(3800.0)), drain=DRAIN, stats_idle=idle, stats=stats,
                  dedup_window="1m", samples_t_webhooks_rss_store=[(0.0, 0.0, 57.1, 0.1), (2.0, 7886.0, 60.6, 2.5)])


def by_figure(rows: list[report.Row]) -> dict[str, report.Row]:
    """Each row by its figure and store, as the missed and failed ones are listed."""
    return {r.name: r for r in rows}


# --------------------------------------------------------------------------------------- table and JSON


def test_table_and_json_from_typed_results():
    results = [fabricated_throughput(), fabricated_ttc(), fabricated_storms(),
               fabricated_memory(StoreStats(bytes=3_300_000, pages=249, active_pages=249, claims=498, calls=498)),
               Startup(store=SQLITE, samples_s=[0.55, 0.6, 0.7], median_s=0.6, max_s=0.7)]
    rows = report.table(results)
    got = by_figure(rows)
    assert got["duplicate path (sqlite)"] == report.Row("duplicate path", "7,000 req/s", ">= 0.6 x ceiling", "0.70",
                                                        "ok", SQLITE)
    assert got["ceiling runs"].value == "9,000 / 10,000 / 11,000 req/s"
    assert got["ceiling runs"].store == ""  # one ceiling for every store
    assert got["new-page path, sustained with every call placed (sqlite)"].result == "MISSED"  # 0.05 < 0.3
    assert got["time to call p99 at 100 webhooks/s (sqlite)"].value == "9.5 ms"
    assert got["host fdatasync (4 KiB) p50 / p99, just before (sqlite)"].value == "0.40 ms / 1.25 ms"
    assert got["resent (duplicate) answered in (sqlite)"].result == "MISSED"  # 610 ms > 500 ms
    assert got["RSS growth after 10,000 webhooks (short run) (sqlite)"].value == "3.8 MB"
    assert got["store after the memory run (sqlite)"].value == "249 pages, 498 claims, 3.3 MB"
    assert got["startup to /-/ready (median / max) (sqlite)"].value == "600 ms / 700 ms"
    assert rows[-1].figure.startswith("startup")  # in the order of the phases
    assert report.missed(rows) == ["new-page path, sustained with every call placed (sqlite)",
                                   "resent (duplicate) answered in (sqlite)"]
    assert report.errors(rows) == {}

    doc = report.document(plan=QUICK, machine={"cpu": "test"}, callbacks="off", stores=(SQLITE,), elapsed_s=1.0,
                          results=results, rows=rows, profiles={})
    out = json.loads(json.dumps(doc))
    assert list(out["results"]) == ["ceiling", "relay_floor", "stores"]
    assert list(out["results"]["stores"]) == [SQLITE]
    sqlite = out["results"]["stores"][SQLITE]
    assert list(sqlite) == ["rss_idle_mb", "duplicate", "new_page", "rss_end_mb", "time_to_call", "storms", "memory",
                            "startup"]
    assert sqlite["new_page"]["rps"] == 500.0  # a load's figures sit beside the phase's own
    assert sqlite["duplicate"]["runs"][0]["ratio"] == 0.778
    assert sqlite["time_to_call"]["drain"] == asdict(DRAIN)
    assert sqlite["memory"]["stats"]["claims"] == 498
    assert out["table"][2] == asdict(got["duplicate path (sqlite)"])
    assert out["targets"] == {SQLITE: report.TARGETS}
    assert out["errors"] == {} and "redis_server" not in out["settings"]


def test_sqlite_and_redis_side_by_side_in_one_table_against_one_ceiling():
    redis_keys = RedisStats(used_memory=5_200_000, used_memory_peak=6_000_000, keys=1501, expiring=1498,
                            indexes={"seq": 1, "done": 249, "recent": 249}, finished_pages=249)
    results = [fabricated_throughput((SQLITE, 7000.0), (REDIS, 5200.0)),
               fabricated_ttc(SQLITE, p99=9.5), fabricated_ttc(REDIS, p99=21.0),
               fabricated_memory(StoreStats(bytes=3_300_000, pages=249, active_pages=0, claims=498, calls=498)),
               fabricated_memory(redis_keys, REDIS)]
    rows = report.table(results)
    got = by_figure(rows)
    # Redis is judged by its own targets (#13): duplicate path >= 0.5 x ceiling, time to call p99 <= 25 ms.
    assert got["duplicate path (redis)"] == report.Row("duplicate path", "5,200 req/s", ">= 0.5 x ceiling", "0.52",
                                                       "ok", REDIS)
    assert got["time to call p99 at 100 webhooks/s (redis)"].target == "<= 25 ms"
    assert got["time to call p99 at 100 webhooks/s (redis)"].result == "ok"  # 21 ms: over SQLite's 20, within 25
    assert got["store after the memory run (redis)"].value == "used_memory 5.2 MB, 1,501 keys"
    assert got["keys neither expiring nor live work (redis)"] == report.Row(
        "  keys neither expiring nor live work", "0 of 1,501 (0 live pages)", "0", "", "ok", REDIS)

    grid = report.grid(rows)
    header, lines = grid[0], {line[0].strip(): line[1:] for line in grid[1:]}
    assert header == ["figure", SQLITE, "target", "ratio", "result", REDIS, "target", "ratio", "result"]
    assert len(lines) == len(grid) - 1  # one line per figure, both stores in it
    assert lines["ceiling (bare aiohttp + json.loads), median"] == ["10,000 req/s", "", "1.00", ""] * 2
    assert lines["duplicate path"] == ["7,000 req/s", ">= 0.6 x ceiling", "0.70", "ok",
                                       "5,200 req/s", ">= 0.5 x ceiling", "0.52", "ok"]
    assert lines["keys neither expiring nor live work"][:4] == ["", "", "", ""]  # a Redis figure only

    doc = report.document(plan=QUICK, machine={}, callbacks="off", stores=(SQLITE, REDIS), elapsed_s=1.0,
                          results=results, rows=rows, profiles={})
    assert list(doc["results"]["stores"]) == [SQLITE, REDIS]
    assert doc["results"]["stores"][REDIS]["memory"]["stats"]["indexes"] == {"seq": 1, "done": 249, "recent": 249}
    assert doc["targets"][REDIS]["duplicate_ratio"] == 0.5 and doc["targets"][SQLITE]["duplicate_ratio"] == 0.6
    assert doc["settings"]["redis_server"]["appendfsync"] == "always"


def test_store_that_cannot_be_read_is_an_error_cell_not_a_crash():
    # The table used to format the missing row counts ("?") with a thousands separator: ValueError.
    failed = StoreStats(bytes=0, error="OperationalError: unable to open database file")
    rows = report.table([fabricated_memory(failed)])
    cell = by_figure(rows)["store after the memory run (sqlite)"]
    assert (cell.value, cell.result) == ("error: OperationalError: unable to open database file", "ERROR")
    assert by_figure(rows)["RSS at idle (sqlite)"].result == "ok"  # the phase's other figures stay
    assert report.errors(rows) == {
        "store after the memory run (sqlite)": "OperationalError: unable to open database file"}
    unread = report.table([fabricated_memory(RedisStats(error="ConnectionError: refused"), REDIS)])
    assert report.errors(unread) == {"store after the memory run (redis)": "ConnectionError: refused"}


async def test_failed_phase_is_an_error_row_and_the_next_phase_runs():
    ran = []

    async def explode(rig: Rig) -> Startup:
        raise RuntimeError("simulator exited before it answered\n----- simulator log -----\nTraceback ...")

    async def fine(rig: Rig) -> Startup:
        ran.append("fine")
        return Startup(store=SQLITE, samples_s=[0.5], median_s=0.5, max_s=0.5)

    failing = phases.Phase("storms", "5", "storms", explode)
    results = [await phases.attempt(p, rig=None) for p in (failing, phases.Phase("startup", "7", "startup", fine))]
    assert results[0] == phases.PhaseError("storms", "storms", "RuntimeError: simulator exited before it answered")
    assert ran == ["fine"]
    rows = report.table(results)
    assert rows[0] == report.Row("storms", "error: RuntimeError: simulator exited before it answered",
                                 result="ERROR")
    assert rows[1].figure.startswith("startup")
    doc = report.document(plan=QUICK, machine={}, callbacks="off", stores=(SQLITE,), elapsed_s=1.0,
                          results=results, rows=rows, profiles={})
    assert doc["errors"] == {"storms": "RuntimeError: simulator exited before it answered"}
    assert doc["results"] == {"stores": {SQLITE: {"startup": {"samples_s": [0.5], "median_s": 0.5, "max_s": 0.5}}}}


async def test_a_phase_run_per_store_fails_on_one_store_only():
    async def on(rig: Rig, store: str) -> Startup:
        if store == REDIS:
            raise RuntimeError("redis-server exited at start")
        return Startup(store=store, samples_s=[0.5], median_s=0.5, max_s=0.5)

    phase = phases.Phase("startup", "7", "startup", on)
    rig = Rig(plan=QUICK, workdir=Path("."), wrk=None, session=None, stores=(SQLITE, REDIS))
    results = [await phases.attempt(phase, rig, store) for store in phases.stores_of(phase, rig)]
    assert results[1] == phases.PhaseError("startup", "startup", "RuntimeError: redis-server exited at start", REDIS)
    rows = report.table(results)
    assert report.errors(rows) == {"startup (redis)": "RuntimeError: redis-server exited at start"}
    assert by_figure(rows)["startup to /-/ready (median / max) (sqlite)"].result == "ok"


def test_time_to_call_matches_each_call_by_the_page_key_its_correlation_id_carries():
    # The bench rebuilt the id as `a2v-<32 hex of the key>-1`; since ids carry a nonce, 0 of 300 matched.
    keys = [page_key("bench", f'{{}}:{{alertname="Bench{i}"}}', [f"id{i}"]) for i in range(3)]
    sent = [loadgen.Sent(index=i, scheduled=float(i), sent=float(i), sent_wall=100.0 + i, done=i + 0.01, status=200,
                         body={"pages": [{"route": "bench", "page_key": key, "result": "called"}]})
            for i, key in enumerate(keys)]
    calls = [{"time": 100.25 + i, "correlationId": correlation_id(key, new_nonce(), 1), "dialedNumber": "+1"}
             for i, key in enumerate(keys[:2])]
    calls += [{"time": 101.0, "correlationId": "a2v-test-0123456789abcdef01234567", "dialedNumber": "+1"},
              {"time": 102.0, "correlationId": None, "dialedNumber": "+1"}]
    timed = match_calls(by_page_key(sent), calls)
    assert [(latency, s.index) for latency, s in timed] == [(0.25, 0), (0.25, 1)]  # the third call never came


# ---------------------------------------------------------------------------------------------- the store


def page(key: str, state: PageState) -> Page:
    call = Call(attempt=1, correlation_id=f"{key}-1", idempotency_key=f"idem-{key}", contact="oncall",
                number="+14155550101", step=0, round=0, created_at=T0, message_id=f"m-{key}")
    return Page(key=key, route="bench", group_key=f'{{}}:{{alertname="{key}"}}', received_at=T0,
                alerts=[{"status": "firing", "labels": {"alertname": key}}], group={"receiver": "voice"},
                identities=[f"id-{key}"], claims=[f"claim-{key}"], severities=["critical"], state=state,
                calls=[call])


async def test_store_stats_counts_a_live_store_whose_path_has_uri_characters(tmp_path):
    # A SQLite URI ends its path at "?" and "#" and decodes "%": the path is percent-encoded now.
    db = tmp_path / "a?b#c%20d" / "bench.db"
    store = SQLiteStore(db)
    await store.open()
    try:
        assert await store.admit(page("one", PageState.ACTIVE), ["claim-one"], timedelta(minutes=1), T0)
        await store.put(page("two", PageState.RESOLVED))
        stats = store_stats(db)  # from outside, while the writer holds the file, as the bench reads it
        database = db.stat().st_size
    finally:
        await store.close()
    assert stats == StoreStats(bytes=stats.bytes, pages=2, active_pages=1, claims=1, calls=4)
    assert stats.bytes > database > 0  # the database and its -wal and -shm


def test_store_stats_without_a_database_says_so(tmp_path):
    stats = store_stats(tmp_path / "missing.db")
    assert stats == StoreStats(bytes=0, error=f"no database file at {tmp_path / 'missing.db'}")


async def test_redis_stats_tell_live_work_and_expiring_keys_from_keys_that_never_go(tmp_path):
    with redis_server_in(tmp_path / "redis") as server:
        store = RedisStore(server.url, key_prefix=REDIS_KEY_PREFIX)
        await store.open()
        try:
            assert await store.admit(page("one", PageState.ACTIVE), ["claim-one"], timedelta(minutes=1), T0)
            await store.put(page("two", PageState.RESOLVED))
            with server.client() as client:
                client.set(REDIS_KEY_PREFIX + "stray", "x")  # what a key that is never purged looks like
            live = await redis_stats(server.url)
            one = await store.get("one")
            assert one is not None
            one.state = PageState.ANSWERED
            await store.put(one)
            done = await redis_stats(server.url)
        finally:
            await store.close()
    for stats in (live, done):
        assert stats.error is None and stats.used_memory > 0
        assert stats.unbounded_keys == [REDIS_KEY_PREFIX + "stray"] and stats.unbounded == 1
        assert stats.keys == stats.expiring + stats.live_work + len(stats.indexes) + stats.unbounded
    assert (live.live_pages, live.finished_pages) == (1, 1)
    assert live.live_work == 4  # page one, its correlationId and messageId, its alert group
    assert (done.live_pages, done.finished_pages, done.live_work) == (0, 2, 0)  # a finished page's keys expire
    assert set(done.indexes) <= {"due", "recent", "done", "claims", "seq", "placed-all", "tokens", "epoch"}


# ------------------------------------------------------------------------------------ real processes


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        r = Rig(plan=replace(QUICK, name="test"), workdir=tmp_path, wrk=None, session=session)
        try:
            r.start_simulator()
            yield r
        finally:
            r.stop_all()


async def test_startup_phase_starts_alert2voice_and_times_it(rig):
    result = await startup(rig, SQLITE, at_least=1)
    assert len(result.samples_s) == 1 and result.samples_s[0] > 0
    assert result.median_s == result.max_s == result.samples_s[0]
    assert [p.name for p in rig.procs] == ["simulator"]  # the service it started is stopped again
    row = report.table([result])[0]
    assert row.figure == "startup to /-/ready (median / max)"
    assert row.value == f"{result.median_s * 1000:,.0f} ms / {result.max_s * 1000:,.0f} ms"


TINY = replace(QUICK, name="test", duration=0.5, warmup=0.2, connections=4, ttc_seconds=0.3, memory_webhooks=200,
               drain_timeout=20, rounds=1)


async def test_the_phases_run_on_the_redis_store_end_to_end(tmp_path):
    require_redis_server()  # fails under CI rather than skipping
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        rig = Rig(plan=TINY, workdir=tmp_path, wrk=None, session=session, stores=(REDIS,))
        try:
            results = await phases.run(rig, ["throughput", "ttc", "memory"])
        finally:
            rig.stop_all()
    assert not [r for r in results if isinstance(r, phases.PhaseError)], results
    throughput, ttc, memory, started = results
    (paths,) = throughput.stores
    assert paths.store == REDIS
    assert paths.duplicate.pages_duplicate > 0 and paths.duplicate.pages_called == 0  # resends only
    # Resends are answered from the replica's memory of duplicates, not by a script each (redis_cache).
    assert paths.duplicate.store_commands_per_request.get("evalsha", 0.0) < 0.5
    assert paths.new_page.every_call_placed
    assert ttc.store == REDIS and ttc.calls_matched == ttc.webhooks == int(RATE * TINY.ttc_seconds)
    assert ttc.statuses == {"200": ttc.webhooks}
    assert isinstance(memory.stats, RedisStats) and memory.stats.error is None
    assert memory.stats.live_pages + memory.stats.finished_pages == memory.pages_called > 0  # nothing expired yet
    assert memory.stats.unbounded == 0, memory.stats.unbounded_keys
    assert started.store == REDIS and len(started.samples_s) == 3  # main, ttc, memory: no more were needed
    rows = report.table(results)
    assert {r.store for r in rows} == {"", REDIS} and report.errors(rows) == {}
    assert report.grid(rows)[0][1] == REDIS
    assert [p.name for p in rig.procs if p.alive] == []  # every redis-server stopped with its alert2voice


def test_cli_measures_startup_alone_and_writes_the_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "startup", "--no-wrk",
                           "--store", "sqlite", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert list(doc["results"]) == ["stores"] and list(doc["results"]["stores"]) == [SQLITE]
    assert len(doc["results"]["stores"][SQLITE]["startup"]["samples_s"]) == 3
    assert [r["figure"] for r in doc["table"]] == ["startup to /-/ready (median / max)"]
    assert doc["settings"]["stores"] == [SQLITE]
    assert doc["errors"] == {} and doc["machine"]["load_generator"] == "python (aiohttp)"
    assert "startup to /-/ready" in proc.stdout


def test_cli_refuses_the_redis_store_without_a_redis_server(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--store", "redis", "--only", "startup"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": str(tmp_path)})  # nothing on it: no redis-server
    assert proc.returncode == 2
    assert "redis-server not found" in proc.stderr


def test_cli_refuses_an_unknown_phase():
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--only", "throughput,nonsense"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "unknown phase nonsense" in proc.stderr

