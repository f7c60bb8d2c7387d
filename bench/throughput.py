"""Phases 1-3: the ceiling and the duplicate path measured alternately, the new-page path, the relay floor.

On one alert2voice ("main") per store, against the same body and the same load generator; every figure of
every store is compared with the one ceiling measured in the same rounds.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, replace

from bench import loadgen, say
from bench.costs import Cost, Meter, metered
from bench.rig import NUMBER, Load, Rig, Samples, Service


@dataclass(frozen=True)
class CeilingRun(Load):
    """One round's load on the ceiling (or the duplicate path) and its server's CPU per request."""

    server_cpu_ms_per_request: float | None


@dataclass(frozen=True)
class DuplicateRun(CeilingRun):
    """One round of the duplicate path, and its ratio to the ceiling round just before it."""

    ratio: float | None


@dataclass(frozen=True)
class Ceiling:
    """The bare aiohttp app: the median of its rounds, every round, and their spread (max - min) / median."""

    rps: float
    runs: list[CeilingRun]
    spread: float


@dataclass(frozen=True)
class Duplicate:
    """A group alert2voice already paged, resent: medians over the rounds."""

    rps: float
    ratio: float
    runs: list[DuplicateRun]
    non_2xx: int
    server_cpu_ms_per_request: float
    pages_duplicate: int
    pages_called: int
    # per request over the rounds: serve CPU (the rounds' own), store round trips, commands, fsyncs (costs.py)
    cost: Cost | None = None


@dataclass(frozen=True)
class NewPage(Load):
    """Every webhook a new group: webhooks answered, calls placed, the sustained rate (calls / span)."""

    webhooks_accepted: int
    pages_called: int
    calls_received_by_simulator: int
    every_call_placed: bool
    last_call_after_load_end_s: float
    sustained_rps: float
    server_cpu_ms_per_webhook: float | None
    simulator_cpu_ms_per_call: float | None
    provider_non_202: int
    ratio: float | None = None
    accepted_ratio: float | None = None
    ratio_to_relay_floor: float | None = None
    cost: Cost | None = None  # per page: serve CPU, store round trips, commits, fsyncs (bench/costs.py)


@dataclass(frozen=True)
class RelayFloor(Load):
    """The same distinct-group load through bench/relay.py: each webhook one provider call, nothing else."""

    calls_received_by_simulator: int
    sustained_rps: float
    server_cpu_ms_per_webhook: float | None
    ratio: float | None = None


@dataclass(frozen=True)
class Paths:
    """One store's duplicate and new-page paths, and its main alert2voice's RSS before and after them."""

    store: str
    rss_idle_mb: float
    duplicate: Duplicate
    new_page: NewPage
    rss_end_mb: float


@dataclass(frozen=True)
class Throughput:
    """Phases 1-3: the ceiling and the relay floor, and each store's paths compared with them."""

    ceiling: Ceiling
    relay_floor: RelayFloor
    stores: tuple[Paths, ...]


def _per(total: float, count: int) -> float | None:
    return round(total / count, 4) if count else None


def _ratio(value: float, to: float) -> float | None:
    return round(value / to, 3) if to else None


async def throughput(rig: Rig) -> Throughput:
    """Ceiling and every store's duplicate path in alternate rounds, then each new-page path and the relay floor."""
    p = rig.plan
    async with contextlib.AsyncExitStack() as stack:
        services = [await stack.enter_async_context(rig.service("main", store=store)) for store in rig.stores]
        idle = [round(svc.proc.rss_mb() or 0, 1) for svc in services]
        fixed = rig.body("Dup")
        template = rig.body(loadgen.MARKER)
        say(f"  body: {len(fixed)} bytes, 2 alerts; load: {'wrk' if rig.wrk else 'python'} "
            f"{p.connections} connections, {p.duration:g} s per measurement after {p.warmup:g} s warm-up")
        ceiling_runs, duplicates = await _rounds(rig, services, fixed)
        new = [await _new_page(rig, svc, template) for svc in services]
        floor = await _relay_floor(rig, template)
        end = [round(svc.proc.rss_mb() or 0, 1) for svc in services]
    rps = statistics.median(r.rps for r in ceiling_runs)
    spread = (max(r.rps for r in ceiling_runs) - min(r.rps for r in ceiling_runs)) / rps if rps else 0.0
    floor = replace(floor, ratio=_ratio(floor.rps, rps))
    paths = tuple(Paths(svc.store, i, d, _compared(n, rps, floor), e)
                  for svc, i, d, n, e in zip(services, idle, duplicates, new, end, strict=True))
    say(f"  ceiling, median of {len(ceiling_runs)}: {rps:,.0f} requests/s; relay floor "
        f"{floor.ratio or 0:.2f} x ceiling")
    for path in paths:
        say(f"  {path.store}: duplicate {path.duplicate.ratio:.2f} x ceiling (median of the rounds), "
            f"new-page {path.new_page.ratio or 0:.2f} x ceiling")
    return Throughput(ceiling=Ceiling(round(rps, 1), ceiling_runs, round(spread, 3)), relay_floor=floor,
                      stores=paths)


def _compared(new: NewPage, ceiling_rps: float, floor: RelayFloor) -> NewPage:
    """The new-page path's ratios to the ceiling and to the relay floor."""
    return replace(new, ratio=_ratio(new.sustained_rps, ceiling_rps), accepted_ratio=_ratio(new.rps, ceiling_rps),
                   ratio_to_relay_floor=_ratio(new.sustained_rps, floor.rps))


async def _rounds(rig: Rig, services: list[Service], fixed: str) -> tuple[list[CeilingRun], list[Duplicate]]:
    """The ceiling and every store's duplicate path, measured alternately `rounds` times.

    This machine's speed drifts (shared cores, a VM's neighbours) by more than the difference being
    measured, and a pair measured back to back sees the same machine. Each round measures the ceiling,
    then the stores one after the other, in turn first; each figure is the median over the rounds.
    """
    p = rig.plan
    for svc in services:
        await _first_page(rig, svc, fixed)
    await rig.load(f"{rig.ceiling_url}/alerts", template=fixed, mode="fixed", duration=p.warmup)
    for svc in services:
        await rig.load(f"{svc.url}/alerts", template=fixed, mode="fixed", duration=p.warmup)
    before = [await rig.metrics(svc) for svc in services]
    meters = [await Meter(rig, [svc], f"duplicate-{svc.store}", fsyncs=rig.count_fsyncs).start() for svc in services]
    ceiling_runs: list[CeilingRun] = []
    runs: list[list[DuplicateRun]] = [[] for _ in services]
    for round_ in range(p.rounds):
        ceiling_runs.append(await _ceiling_run(rig, fixed))
        order = range(len(services)) if round_ % 2 == 0 else reversed(range(len(services)))
        for i in order:
            runs[i].append(await _duplicate_run(rig, services[i], fixed, ceiling_runs[-1], profiled=round_ == 0))
        each = ", ".join(f"{svc.store} {r[-1].rps:,.0f} requests/s -> {r[-1].ratio or 0:.2f}"
                         for svc, r in zip(services, runs, strict=True))
        say(f"  round {round_ + 1}/{p.rounds}: ceiling {ceiling_runs[-1].rps:,.0f} requests/s, duplicate path {each}")
    costs = [_rounds_cost(await meter.stop(), rs) for meter, rs in zip(meters, runs, strict=True)]
    after = [await rig.metrics(svc) for svc in services]
    return ceiling_runs, [_duplicate(*each) for each in zip(runs, before, after, costs, strict=True)]


def _rounds_cost(meter: Meter, runs: list[DuplicateRun]) -> Cost:
    """The store's counts over the rounds per request; CPU only of the rounds' own loads (the service idles
    while the ceiling and the other store are measured)."""
    requests = sum(r.requests for r in runs)
    cpu_ms = sum((r.server_cpu_ms_per_request or 0.0) * r.requests for r in runs)
    cost = meter.cost(requests)
    return replace(cost, cpu_ms=round(cpu_ms / requests, 4) if requests else None)


async def _first_page(rig: Rig, svc: Service, fixed: str) -> None:
    """Page the duplicate group once: every later request of it is a resend."""
    status, answer, _ = await rig.post(f"{svc.url}/alerts", fixed.encode())
    first = answer["pages"][0]["result"] if status == 200 else f"HTTP {status}"
    if first != "called":
        raise RuntimeError(f"the first webhook of the duplicate group was not called ({svc.store}): "
                           f"{status} {answer}")


async def _duplicate_run(rig: Rig, svc: Service, fixed: str, ceiling: CeilingRun, *, profiled: bool) -> DuplicateRun:
    """One round's duplicate path on `svc`, and its ratio to the round's ceiling."""
    duration = rig.plan.duration
    cpu0 = svc.proc.cpu_s()
    load = rig.load(f"{svc.url}/alerts", template=fixed, mode="fixed", duration=duration)
    dup = await (rig.profiled(f"duplicate-{svc.store}", svc.proc, duration, load) if profiled else load)
    return DuplicateRun(**dup.to_json(), server_cpu_ms_per_request=_per((svc.proc.cpu_s() - cpu0) * 1000, dup.requests),
                        ratio=_ratio(dup.rps, ceiling.rps))


def _duplicate(runs: list[DuplicateRun], before: Samples, after: Samples, cost: Cost) -> Duplicate:
    """A store's duplicate path: medians over its rounds, the pages its service counted meanwhile, and what a
    request cost."""
    return Duplicate(
        rps=round(statistics.median(r.rps for r in runs), 1),
        ratio=statistics.median(r.ratio or 0.0 for r in runs),
        runs=runs,
        non_2xx=sum(r.non_2xx for r in runs),
        server_cpu_ms_per_request=statistics.median(r.server_cpu_ms_per_request or 0.0 for r in runs),
        pages_duplicate=int(after.delta(before, "alert2voice_pages_total", result="duplicate")),
        pages_called=int(after.delta(before, "alert2voice_pages_total", result="called")),
        cost=cost,
    )


async def _ceiling_run(rig: Rig, body: str) -> CeilingRun:
    assert rig.ceiling is not None
    cpu0 = rig.ceiling.cpu_s()
    run = await rig.load(f"{rig.ceiling_url}/alerts", template=body, mode="fixed", duration=rig.plan.duration)
    cpu = rig.ceiling.cpu_s() - cpu0
    return CeilingRun(**run.to_json(), server_cpu_ms_per_request=_per(cpu * 1000, run.requests))


async def _new_page(rig: Rig, svc: Service, template: str) -> NewPage:
    """Every request a new group, every page a call; the sustained rate runs until the last call arrived."""
    p = rig.plan
    assert rig.sim is not None
    warm = await rig.metrics(svc)
    await rig.load(f"{svc.url}/alerts", template=template, mode="distinct", duration=p.warmup, prefix="w")
    await rig.wait_placed(svc, warm, route="bench", within=p.drain_timeout)
    await rig.reset_simulator(NUMBER)
    async with metered(rig, [svc], f"new_page-{svc.store}") as meter:
        before = await rig.metrics(svc)
        sim_cpu0 = rig.sim.cpu_s()
        load_start = time.time()
        new = await rig.profiled(f"new_page-{svc.store}", svc.proc, p.duration, rig.profiled(
            f"new_page_simulator-{svc.store}", rig.sim, p.duration, rig.load(
                f"{svc.url}/alerts", template=template, mode="distinct", duration=p.duration, prefix="np")))
        load_end = time.time()
        drain = await rig.wait_placed(svc, before, route="bench", within=p.drain_timeout)
        sim_cpu = rig.sim.cpu_s() - sim_cpu0
    after = await rig.metrics(svc)
    calls = await rig.sim_calls()
    last = max((c["time"] for c in calls), default=load_end)
    span = max(last, load_end) - load_start
    sustained = len(calls) / span if span > 0 else 0.0
    accepted = int(after.delta(before, "alert2voice_webhooks_total", result="accepted"))
    cost = meter.cost(accepted)
    say(f"  new-page path ({svc.store}): {new.rps:,.0f} webhooks/s answered; {len(calls):,} of {drain.called:,} calls "
        f"placed, the last {max(0.0, last - load_end):.2f} s after the load -> {sustained:,.0f}/s sustained")
    return NewPage(
        **new.to_json(),
        webhooks_accepted=accepted,
        pages_called=drain.called,
        calls_received_by_simulator=len(calls),
        every_call_placed=len(calls) >= drain.called and drain.called > 0 and drain.drained,
        last_call_after_load_end_s=round(max(0.0, last - load_end), 3),
        sustained_rps=round(sustained, 1),
        server_cpu_ms_per_webhook=cost.cpu_ms,
        simulator_cpu_ms_per_call=_per(sim_cpu * 1000, len(calls)),
        provider_non_202=drain.provider_other,
        cost=cost,
    )


async def _relay_floor(rig: Rig, template: str) -> RelayFloor:
    """The same load through a bridge that does nothing but one provider request per webhook."""
    p = rig.plan
    if rig.relay is None:
        rig.start_relay()
    assert rig.relay is not None
    await rig.reset_simulator(NUMBER)
    await rig.load(f"{rig.relay_url}/alerts", template=template, mode="distinct", duration=p.warmup, prefix="rw")
    await rig.reset_simulator(NUMBER)
    cpu0 = rig.relay.cpu_s()
    load_start = time.time()
    relay = await rig.load(f"{rig.relay_url}/alerts", template=template, mode="distinct", duration=p.duration,
                           prefix="rl")
    span = time.time() - load_start
    relay_cpu = rig.relay.cpu_s() - cpu0
    calls = await rig.sim_calls()  # answered only after the provider's 202: all placed by now
    say(f"  relay floor: {relay.rps:,.0f} webhooks/s, each one provider call ({len(calls):,} placed)")
    return RelayFloor(**relay.to_json(), calls_received_by_simulator=len(calls),
                      sustained_rps=round(len(calls) / span, 1) if span > 0 else 0.0,
                      server_cpu_ms_per_webhook=_per(relay_cpu * 1000, relay.requests))
