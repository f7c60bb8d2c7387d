"""Phase 4, time to call: webhook sent -> the simulator receiving its provider request, at 100 and at 300
webhooks/s (the target is at 100/s; 300/s shows what a moderate load adds: per-commit and per-wake-up costs
shared less).

Each rate on an alert2voice of its own: the throughput loads leave thousands of pages awaiting callbacks behind them,
which are not what a latency figure is about. A call is matched to its webhook by the page key its
correlationId carries (`a2v-<hex of the page key>-<nonce>-<attempt>`; the nonce is not in the answer).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, say
from bench.costs import Cost, metered
from bench.rig import NUMBER, Drain, Rig, Service

RATES = (100.0, 300.0)  # webhooks per second, open loop, one after the other
TARGET_RATE = 100.0     # the rate the time-to-call target is set at


@dataclass(frozen=True)
class TimeToCall:
    """p50/p99 of (simulator received - webhook sent), with what tells a host stall from our own."""

    store: str
    rate_per_s: float
    webhooks: int
    answered_200: int
    statuses: dict[str, int]  # every answer's status (or, unanswered, the error)
    calls_matched: int
    missing: int
    ms: dict[str, float | None]
    webhook_response_ms: dict[str, float | None]
    send_lateness_ms: dict[str, float | None]
    service_metric_mean_ms: float | None
    host_fdatasync_ms: dict[str, float | None]
    slowest: list[dict[str, Any]]  # the ten slowest calls: ms, index, at_s (after the first send), answered_ms
    simulator_time_resolution_ms: int
    drain: Drain
    cost: Cost | None = None  # per webhook over the load and its drain: serve CPU, round trips, fsyncs


@dataclass(frozen=True)
class TimesToCall:
    """Phase 4 on one store: a TimeToCall per rate of RATES."""

    store: str
    runs: tuple[TimeToCall, ...]

    def at(self, rate: float) -> TimeToCall | None:
        return next((r for r in self.runs if r.rate_per_s == rate), None)


def fsync_probe(folder: Path, *, count: int = 300, rate: float = 100.0) -> dict[str, float | None]:
    """The host's own commit latency: `count` 4 KiB writes, each followed by fdatasync, at `rate` per second,
    in the folder the stores use. Nothing of ours runs in it; a time-to-call figure carries this tail."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    block = b"\0" * 4096
    took = []
    try:
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            os.pwrite(fd, block, (i % 64) * 4096)
            os.fdatasync(fd)
            took.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return loadgen.latency_summary(took)


async def settle() -> None:
    """Write back what earlier loads left dirty in the page cache (their logs: tens of MB) before a latency
    measurement, so that its fsyncs do not queue behind that writeback."""
    await asyncio.to_thread(os.sync)


async def time_to_call(rig: Rig, store: str) -> TimesToCall:
    """Open loop at each rate of RATES for plan.ttc_seconds, each webhook a new group; its call matched by
    correlationId. Each rate on an alert2voice of its own."""
    runs = []
    for rate in RATES:
        # The earlier loads' files are written back first, so that neither this start nor its latencies wait on it.
        await settle()
        async with rig.service(f"ttc{rate:g}", store=store) as svc:
            runs.append(await _measure(rig, svc, rate))
    return TimesToCall(store=store, runs=tuple(runs))


async def _measure(rig: Rig, svc: Service, rate: float) -> TimeToCall:
    count = int(rate * rig.plan.ttc_seconds)
    await rig.reset_simulator(NUMBER)
    await settle()
    # Every webhook waits for one commit before its call is placed: an fdatasync of SQLite's WAL, or of
    # Redis's append-only file (appendfsync always) in the same folder.
    fsync = await asyncio.to_thread(fsync_probe, rig.workdir, count=min(300, count))
    say(f"  host fdatasync of 4 KiB at 100/s, nothing of ours running: p50 {fsync['p50'] or 0:.2f} ms, "
        f"p99 {fsync['p99'] or 0:.2f} ms, max {fsync['max'] or 0:.2f} ms")
    template = rig.body(loadgen.MARKER)
    bodies = [template.replace(loadgen.MARKER, f"ttc{i}").encode() for i in range(count)]
    async with metered(rig, [svc], f"time_to_call{rate:g}-{svc.store}") as meter:
        before = await rig.metrics(svc)
        sent = await rig.profiled(f"time_to_call{rate:g}-{svc.store}", svc.proc, rig.plan.ttc_seconds,
                                  loadgen.open_loop(f"{svc.url}/alerts", token=rig.token, bodies=bodies, rate=rate))
        drain = await rig.wait_placed(svc, before, route="bench", within=rig.plan.drain_timeout)
    after = await rig.metrics(svc)
    by_page = by_page_key(sent)
    timed = match_calls(by_page, await rig.sim_calls())
    latencies = [latency for latency, _ in timed]
    ttc_sum = after.delta(before, "alert2voice_time_to_call_seconds_sum")
    ttc_count = after.delta(before, "alert2voice_time_to_call_seconds_count")
    summary = loadgen.latency_summary(latencies)
    statuses = loadgen.status_counts(sent)
    cost = meter.cost(count)
    say(f"  time to call at {rate:g}/s ({svc.store}): p50 {summary['p50'] or 0:.1f} ms, "
        f"p99 {summary['p99'] or 0:.1f} ms, max {summary['max'] or 0:.1f} ms "
        f"({len(latencies)} of {count} calls matched; answers {statuses})")
    return TimeToCall(
        store=svc.store,
        rate_per_s=rate,
        webhooks=count,
        answered_200=statuses.get("200", 0),
        statuses=statuses,
        calls_matched=len(latencies),
        missing=len(by_page) - len(latencies),
        ms=summary,
        webhook_response_ms=loadgen.latency_summary([s.response_time for s in sent if s.response_time is not None]),
        send_lateness_ms=loadgen.latency_summary([s.sent - s.scheduled for s in sent]),
        service_metric_mean_ms=round(ttc_sum / ttc_count * 1000, 2) if ttc_count else None,
        host_fdatasync_ms=fsync,
        slowest=_slowest(timed, first=sent[0].sent if sent else 0.0),
        simulator_time_resolution_ms=1,
        drain=drain,
        cost=cost,
    )


def by_page_key(sent: list[loadgen.Sent]) -> dict[str, loadgen.Sent]:
    """Each answered webhook by the key of the page it called."""
    out: dict[str, loadgen.Sent] = {}
    for s in sent:
        pages = (s.body or {}).get("pages", []) if isinstance(s.body, dict) else []
        called = [p for p in pages if p.get("result") == "called"]
        if s.status == 200 and called:
            out[called[0]["page_key"]] = s
    return out


def key_in(correlation_id: str | None) -> str | None:
    """The start of the page key a correlationId carries: `a2v-<hex of the key>-<nonce>-<attempt>`."""
    prefix, _, rest = (correlation_id or "").partition("-")
    if prefix != "a2v":
        return None
    return rest.split("-", 1)[0] or None


def match_calls(by_page: dict[str, loadgen.Sent], calls: list[dict[str, Any]]) -> list[tuple[float, loadgen.Sent]]:
    """(simulator received - webhook sent, the webhook) for every webhook whose page's first call arrived."""
    arrivals: dict[str, float] = {}
    for c in calls:
        key = key_in(c["correlationId"])
        if key:
            arrivals.setdefault(key, c["time"])
    width = len(next(iter(arrivals), ""))  # every id carries the same number of the key's characters
    return [(arrivals[key[:width]] - s.sent_wall, s) for key, s in by_page.items() if key[:width] in arrivals]


def _slowest(timed: list[tuple[float, loadgen.Sent]], *, first: float, top: int = 10) -> list[dict[str, Any]]:
    """The slowest calls, to tell a cold start (the first indices) from stalls during the run."""
    slowest = sorted(timed, key=lambda pair: pair[0], reverse=True)[:top]
    return [{"ms": round(latency * 1000, 1), "index": s.index, "at_s": round(s.sent - first, 2),
             "answered_ms": round((s.done - s.sent) * 1000, 1) if s.done is not None else None}
            for latency, s in slowest]
