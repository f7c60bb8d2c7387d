"""Phase 6, memory: RSS of a fresh alert2voice at idle and after plan.memory_webhooks webhooks, and its store."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import loadgen, say
from bench.rig import NUMBER, Drain, Load, Rig, Samples, Service

NEW_EVERY = 50    # one webhook in NEW_EVERY is a new group (a page and a call) ...
DUP_GROUPS = 50   # ... the others resend one of these groups
SAMPLE_EVERY = 2.0
COUNTS = {
    "pages": "SELECT count(*) FROM pages",
    "active_pages": "SELECT count(*) FROM pages WHERE state = 'active'",
    "claims": "SELECT count(*) FROM claims",
    "calls": "SELECT count(*) FROM calls",
}


@dataclass(frozen=True)
class StoreStats:
    """The SQLite store's size on disk and rows; `error` says why the rows could not be counted."""

    bytes: int
    pages: int | None = None
    active_pages: int | None = None
    claims: int | None = None
    calls: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Memory:
    """RSS at idle, after the load and at its peak; what the load was; the store it left."""

    rss_idle_mb: float
    rss_after_mb: float
    rss_growth_mb: float
    rss_peak_mb: float
    webhooks: int
    share_new_pages: float
    duplicate_groups: int
    pages_called: int
    pages_duplicate: int
    load: Load
    drain: Drain
    store: StoreStats
    dedup_window: str
    samples_t_webhooks_rss: list[tuple[float, float, float]]  # every SAMPLE_EVERY s: (s, webhooks so far, MB)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # the -wal or -shm went between listing and stat
        return 0


def store_stats(path: Path) -> StoreStats:
    """Rows in the SQLite store (read-only, from outside the process) and its size on disk."""
    size = sum(_size(p) for p in path.parent.glob(path.name + "*") if p.is_file())
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


async def memory(rig: Rig) -> Memory:
    """Idle RSS after a second, then the mixed load (bounded by count and time), the drain, RSS and the store."""
    say(f"  {rig.plan.memory_webhooks:,} webhooks, 1 in {NEW_EVERY} a new page, dedup window 1m")
    async with rig.service("memory") as svc:
        await rig.reset_simulator(NUMBER)
        await asyncio.sleep(1.0)
        idle = svc.proc.rss_mb() or 0.0
        before = await rig.metrics(svc)
        samples: list[tuple[float, float, float]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(rig, svc, samples, stop))
        try:
            result = await _load(rig, svc, before)
            drain = await rig.wait_placed(svc, before, route="bench", within=rig.plan.drain_timeout)
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await sampler
        after = await rig.metrics(svc)
        rss = svc.proc.rss_mb() or 0.0
        peak = svc.proc.hwm_mb() or 0.0
        store = store_stats(svc.db)
    webhooks = int(after.delta(before, "alert2voice_webhooks_total"))
    stored = store.error or f"{store.pages} pages, {store.claims} claims"
    say(f"  memory: RSS {idle:.1f} MB idle -> {rss:.1f} MB after {webhooks:,} webhooks "
        f"(+{rss - idle:.1f} MB; {stored}, {store.bytes / 1e6:.1f} MB on disk)")
    return Memory(
        rss_idle_mb=round(idle, 1),
        rss_after_mb=round(rss, 1),
        rss_growth_mb=round(rss - idle, 1),
        rss_peak_mb=round(peak, 1),
        webhooks=webhooks,
        share_new_pages=1 / NEW_EVERY,
        duplicate_groups=DUP_GROUPS,
        pages_called=int(after.delta(before, "alert2voice_pages_total", result="called")),
        pages_duplicate=int(after.delta(before, "alert2voice_pages_total", result="duplicate")),
        load=Load(**result.to_json()),
        drain=drain,
        store=store,
        dedup_window="1m",
        samples_t_webhooks_rss=samples,
    )


async def _load(rig: Rig, svc: Service, before: Samples) -> loadgen.LoadResult:
    """The mixed load, bounded by count (plan.memory_webhooks) and by time (200 s, or 60 s with --quick)."""
    total = rig.plan.memory_webhooks
    cap = 60.0 if rig.plan.name == "quick" else 200.0

    async def enough() -> bool:
        return (await rig.metrics(svc)).delta(before, "alert2voice_webhooks_total") >= total

    return await rig.load(f"{svc.url}/alerts", template=rig.body(loadgen.MARKER), mode="mixed", duration=cap,
                          prefix="m", limit=total, new_every=NEW_EVERY, dup_groups=DUP_GROUPS, until=enough)


async def _sample(rig: Rig, svc: Service, samples: list[tuple[float, float, float]], stop: asyncio.Event) -> None:
    """(seconds, webhooks so far, RSS MB) every SAMPLE_EVERY seconds until `stop` is set."""
    t0 = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(OSError, aiohttp.ClientError):
            m = await rig.metrics(svc)
            samples.append((round(time.monotonic() - t0, 1), m.sum("alert2voice_webhooks_total"),
                            round(svc.proc.rss_mb() or 0, 1)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
