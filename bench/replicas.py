"""Phase 7, with --replicas N (N >= 2) on the Redis store: N `alert2voice serve` processes on one redis-server.

The new-page path on one replica alone (the others running, idle), then on all of them at once, each with a
load generator of its own: each replica's own throughput beside the one alone's, and what a page costs in
either case (serve CPU, store round trips, failed commands, fsyncs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

from bench import loadgen, say
from bench.costs import Cost, metered
from bench.rig import NUMBER, REDIS, Load, Rig, Service

SHOWN = "scale-out: not on {cores} cores; no stall between replicas: the rows above"  # the table's cell
CAN_SHOW = ("{cores} cores run the load generators, redis-server, the simulator and {n} serve processes: linear "
            "scale-out cannot be shown here (the replicas share the cores they would each need); what is shown is "
            "that no replica stalls another: each one's rate beside one alone, and round trips, failed commands and "
            "CPU per page alone and together")


@dataclass(frozen=True)
class ReplicaRun:
    """One replica's share of a load: webhooks answered, pages it called, its rate over the common span."""

    replica: int                     # 1-based
    load: Load
    pages_called: int
    sustained_rps: float             # pages it called / (last call - start of the load), the span of all
    cpu_ms_per_page: float | None    # its own serve process


@dataclass(frozen=True)
class Replicas:
    """The new-page path on one replica alone, then on every replica at once, on one redis-server."""

    store: str
    replicas: int
    cores: int
    alone: ReplicaRun
    alone_cost: Cost
    together: tuple[ReplicaRun, ...]
    together_cost: Cost
    combined_sustained_rps: float
    pages_called: int
    calls_received_by_simulator: int
    every_call_placed: bool
    can_show: str


async def replicas(rig: Rig, store: str) -> Replicas:
    """rig.replicas serve processes on one redis-server of their own, stopped (it last) on the way out."""
    if store != REDIS:
        raise ValueError(f"--replicas needs the Redis store, not {store}")
    n = rig.replicas
    redis = rig.start_redis("replicas-redis-server")
    try:
        async with contextlib.AsyncExitStack() as stack:
            services = [await stack.enter_async_context(rig.service(f"replica{i + 1}", store=REDIS, shared=redis))
                        for i in range(n)]
            template = rig.body(loadgen.MARKER)
            (alone,), alone_cost, _, _ = await _new_pages(rig, services[:1], template, "alone")
            together, cost, called, calls = await _new_pages(rig, services, template, "together")
    finally:
        rig.stop(redis.proc)
    combined = sum(r.sustained_rps for r in together)
    cores = os.cpu_count() or 1
    say(f"  replicas: one alone {alone.sustained_rps:,.0f}/s; together " +
        ", ".join(f"#{r.replica} {r.sustained_rps:,.0f}/s" for r in together) + f" = {combined:,.0f}/s")
    return Replicas(store=store, replicas=n, cores=cores, alone=alone, alone_cost=alone_cost, together=together,
                    together_cost=cost, combined_sustained_rps=round(combined, 1), pages_called=called,
                    calls_received_by_simulator=calls, every_call_placed=calls >= called > 0,
                    can_show=CAN_SHOW.format(cores=cores, n=n))


async def _new_pages(rig: Rig, services: list[Service], template: str,
                     tag: str) -> tuple[tuple[ReplicaRun, ...], Cost, int, int]:
    """Every service loaded at once with new groups, until every call is placed: each one's run, the cost per page
    of all of them, pages called and calls the simulator received."""
    p = rig.plan
    urls = [f"{svc.url}/alerts" for svc in services]
    warm = [await rig.metrics(svc) for svc in services]
    await asyncio.gather(*(rig.load(url, template=template, mode="distinct", duration=p.warmup, prefix=f"{tag}w{i}")
                           for i, url in enumerate(urls)))
    for svc, before in zip(services, warm, strict=True):
        await rig.wait_placed(svc, before, route="bench", within=p.drain_timeout)
    await rig.reset_simulator(NUMBER)
    async with metered(rig, services, f"replicas-{tag}") as meter:
        before = [await rig.metrics(svc) for svc in services]
        start = time.time()
        loads = await asyncio.gather(*(rig.load(url, template=template, mode="distinct", duration=p.duration,
                                                prefix=f"{tag}{i}-") for i, url in enumerate(urls)))
        load_end = time.time()
        drains = [await rig.wait_placed(svc, b, route="bench", within=p.drain_timeout)
                  for svc, b in zip(services, before, strict=True)]
    calls = await rig.sim_calls()
    last = max((c["time"] for c in calls), default=load_end)
    span = max(last, load_end) - start
    called = sum(d.called for d in drains)
    runs = tuple(ReplicaRun(replica=i + 1, load=Load(**load.to_json()), pages_called=d.called,
                            sustained_rps=round(d.called / span, 1) if span > 0 else 0.0,
                            cpu_ms_per_page=round(cpu * 1000 / d.called, 4) if d.called else None)
                 for i, (load, d, cpu) in enumerate(zip(loads, drains, meter.cpu_spent_s, strict=True)))
    return runs, meter.cost(called), called, len(calls)
