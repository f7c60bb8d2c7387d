"""Phase 6, memory: RSS of a fresh alert2voice at idle and after plan.memory_webhooks webhooks, and its store.

The simulator answers every call of this phase (callbacks on, whatever --callbacks says), so that its pages
finish as they would in production and the store shows what it keeps of finished pages: on Redis, every
key expires or belongs to live work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import aiohttp
from redis.exceptions import RedisError

from bench import loadgen, say
from bench.rig import NUMBER, Drain, Load, Rig, Samples, Service
from bench.store_stats import RedisStats, StoreStats, snapshot, store_bytes

NEW_EVERY = 50    # one webhook in NEW_EVERY is a new group (a page and a call) ...
DUP_GROUPS = 50   # ... the others resend one of these groups
SAMPLE_EVERY = 2.0


@dataclass(frozen=True)
class Memory:
    """RSS at idle, after the load and at its peak; what the load was; the store at idle and after."""

    store: str
    rss_idle_mb: float
    rss_after_mb: float
    rss_growth_mb: float
    rss_peak_mb: float
    webhooks_planned: int
    webhooks: int
    share_new_pages: float
    duplicate_groups: int
    pages_called: int
    pages_duplicate: int
    load: Load
    drain: Drain
    stats_idle: StoreStats | RedisStats
    stats: StoreStats | RedisStats
    dedup_window: str
    # every SAMPLE_EVERY s: (s, webhooks so far, RSS MB, store MB: Redis's used_memory or SQLite's files)
    samples_t_webhooks_rss_store: list[tuple[float, float, float, float]]


async def memory(rig: Rig, store: str) -> Memory:
    """Idle RSS after a second, then the mixed load (bounded by count and time), the drain, RSS and the store."""
    say(f"  {rig.plan.memory_webhooks:,} webhooks, 1 in {NEW_EVERY} a new page, dedup window 1m, every call answered")
    async with rig.service("memory", store=store) as svc:
        await rig.reset_simulator(NUMBER, callbacks=True)
        await asyncio.sleep(1.0)
        idle = svc.proc.rss_mb() or 0.0
        stats_idle = await snapshot(svc)
        before = await rig.metrics(svc)
        samples: list[tuple[float, float, float, float]] = []
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
        stats = await snapshot(svc)
    webhooks = int(after.delta(before, "alert2voice_webhooks_total"))
    say(f"  memory ({store}): RSS {idle:.1f} MB idle -> {rss:.1f} MB after {webhooks:,} webhooks "
        f"(+{rss - idle:.1f} MB; {describe(stats)})")
    return Memory(
        store=store,
        rss_idle_mb=round(idle, 1),
        rss_after_mb=round(rss, 1),
        rss_growth_mb=round(rss - idle, 1),
        rss_peak_mb=round(peak, 1),
        webhooks_planned=rig.plan.memory_webhooks,
        webhooks=webhooks,
        share_new_pages=1 / NEW_EVERY,
        duplicate_groups=DUP_GROUPS,
        pages_called=int(after.delta(before, "alert2voice_pages_total", result="called")),
        pages_duplicate=int(after.delta(before, "alert2voice_pages_total", result="duplicate")),
        load=Load(**result.to_json()),
        drain=drain,
        stats_idle=stats_idle,
        stats=stats,
        dedup_window="1m",
        samples_t_webhooks_rss_store=samples,
    )


def describe(stats: StoreStats | RedisStats) -> str:
    """The store in a few words, for the progress line."""
    if stats.error:
        return stats.error
    if isinstance(stats, RedisStats):
        return (f"used_memory {stats.used_memory / 1e6:.1f} MB, {stats.keys:,} keys, {stats.unbounded} neither "
                f"expiring nor live work")
    return f"{stats.pages} pages, {stats.claims} claims, {stats.bytes / 1e6:.1f} MB on disk"


async def _load(rig: Rig, svc: Service, before: Samples) -> loadgen.LoadResult:
    """The mixed load, bounded by count (plan.memory_webhooks) and by time (200 s, or 60 s with --quick)."""
    total = rig.plan.memory_webhooks
    cap = 60.0 if rig.plan.name == "quick" else 200.0

    async def enough() -> bool:
        return (await rig.metrics(svc)).delta(before, "alert2voice_webhooks_total") >= total

    return await rig.load(f"{svc.url}/alerts", template=rig.body(loadgen.MARKER), mode="mixed", duration=cap,
                          prefix="m", limit=total, new_every=NEW_EVERY, dup_groups=DUP_GROUPS, until=enough)


async def _sample(rig: Rig, svc: Service, samples: list[tuple[float, float, float, float]],
                  stop: asyncio.Event) -> None:
    """(seconds, webhooks so far, RSS MB, store MB) every SAMPLE_EVERY seconds until `stop` is set."""
    t0 = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(OSError, aiohttp.ClientError, RedisError):
            m = await rig.metrics(svc)
            samples.append((round(time.monotonic() - t0, 1), m.sum("alert2voice_webhooks_total"),
                            round(svc.proc.rss_mb() or 0, 1), round(await store_bytes(svc) / 1e6, 2)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
