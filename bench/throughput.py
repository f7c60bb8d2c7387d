"""Phases 1-3: the ceiling and the duplicate path measured alternately, the new-page path, the relay floor.

All on one alert2voice ("main"), against the same body and the same load generator; every figure is
compared with the ceiling measured in the same rounds.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

from bench import loadgen, say
from bench.rig import NUMBER, Load, Rig, Service


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


@dataclass(frozen=True)
class RelayFloor(Load):
    """The same distinct-group load through bench/relay.py: each webhook one provider call, nothing else."""

    calls_received_by_simulator: int
    sustained_rps: float
    server_cpu_ms_per_webhook: float | None
    ratio: float | None = None


@dataclass(frozen=True)
class Throughput:
    """Phases 1-3, and the main alert2voice's RSS before and after them."""

    main_rss_idle_mb: float
    ceiling: Ceiling
    duplicate: Duplicate
    new_page: NewPage
    relay_floor: RelayFloor
    main_rss_end_mb: float


def _per(total: float, count: int) -> float | None:
    return round(total / count, 4) if count else None


def _ratio(value: float, to: float) -> float | None:
    return round(value / to, 3) if to else None


async def throughput(rig: Rig) -> Throughput:
    """Ceiling and duplicate path in alternate rounds, then the new-page path and the relay floor."""
    p = rig.plan
    async with rig.service("main") as svc:
        idle = round(svc.proc.rss_mb() or 0, 1)
        fixed = rig.body("Dup")
        template = rig.body(loadgen.MARKER)
        say(f"  body: {len(fixed)} bytes, 2 alerts; load: {'wrk' if rig.wrk else 'python'} "
            f"{p.connections} connections, {p.duration:g} s per measurement after {p.warmup:g} s warm-up")
        ceiling_runs, duplicate = await _rounds(rig, svc, fixed)
        new = await _new_page(rig, svc, template)
        floor = await _relay_floor(rig, template)
        end = round(svc.proc.rss_mb() or 0, 1)
    rps = statistics.median(r.rps for r in ceiling_runs)
    spread = (max(r.rps for r in ceiling_runs) - min(r.rps for r in ceiling_runs)) / rps if rps else 0.0
    floor = replace(floor, ratio=_ratio(floor.rps, rps))
    new = replace(new, ratio=_ratio(new.sustained_rps, rps), accepted_ratio=_ratio(new.rps, rps),
                  ratio_to_relay_floor=_ratio(new.sustained_rps, floor.rps))
    say(f"  ceiling, median of {len(ceiling_runs)}: {rps:,.0f} requests/s -> duplicate "
        f"{duplicate.ratio:.2f} x ceiling (median of the rounds), new-page "
        f"{new.ratio or 0:.2f} x ceiling, relay floor {floor.ratio or 0:.2f} x ceiling")
    return Throughput(main_rss_idle_mb=idle, ceiling=Ceiling(round(rps, 1), ceiling_runs, round(spread, 3)),
                      duplicate=duplicate, new_page=new, relay_floor=floor, main_rss_end_mb=end)


async def _rounds(rig: Rig, svc: Service, fixed: str) -> tuple[list[CeilingRun], Duplicate]:
    """The ceiling and the duplicate path, measured alternately `rounds` times.

    This machine's speed drifts (shared cores, a VM's neighbours) by more than the difference being
    measured, and a pair measured back to back sees the same machine. Each figure is the median over the rounds.
    """
    p = rig.plan
    status, answer, _ = await rig.post(f"{svc.url}/alerts", fixed.encode())
    first = answer["pages"][0]["result"] if status == 200 else f"HTTP {status}"
    if first != "called":
        raise RuntimeError(f"the first webhook of the duplicate group was not called: {status} {answer}")
    await rig.load(f"{rig.ceiling_url}/alerts", template=fixed, mode="fixed", duration=p.warmup)
    await rig.load(f"{svc.url}/alerts", template=fixed, mode="fixed", duration=p.warmup)
    before = await rig.metrics(svc)
    ceiling_runs: list[CeilingRun] = []
    dup_runs: list[DuplicateRun] = []
    for round_ in range(p.rounds):
        ceiling_runs.append(await _ceiling_run(rig, fixed))
        cpu0 = svc.proc.cpu_s()
        load = rig.load(f"{svc.url}/alerts", template=fixed, mode="fixed", duration=p.duration)
        dup = await (rig.profiled("duplicate", svc.proc, p.duration, load) if round_ == 0 else load)
        dup_runs.append(DuplicateRun(**dup.to_json(),
                                     server_cpu_ms_per_request=_per((svc.proc.cpu_s() - cpu0) * 1000, dup.requests),
                                     ratio=_ratio(dup.rps, ceiling_runs[-1].rps)))
        say(f"  round {round_ + 1}/{p.rounds}: ceiling {ceiling_runs[-1].rps:,.0f} requests/s, duplicate path "
            f"{dup.rps:,.0f} requests/s -> {dup_runs[-1].ratio or 0:.2f}")
    after = await rig.metrics(svc)
    duplicate = Duplicate(
        rps=round(statistics.median(r.rps for r in dup_runs), 1),
        ratio=statistics.median(r.ratio or 0.0 for r in dup_runs),
        runs=dup_runs,
        non_2xx=sum(r.non_2xx for r in dup_runs),
        server_cpu_ms_per_request=statistics.median(r.server_cpu_ms_per_request or 0.0 for r in dup_runs),
        pages_duplicate=int(after.delta(before, "alert2voice_pages_total", result="duplicate")),
        pages_called=int(after.delta(before, "alert2voice_pages_total", result="called")),
    )
    return ceiling_runs, duplicate


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
    before = await rig.metrics(svc)
    cpu0, sim_cpu0 = svc.proc.cpu_s(), rig.sim.cpu_s()
    load_start = time.time()
    new = await rig.profiled("new_page", svc.proc, p.duration, rig.profiled(
        "new_page_simulator", rig.sim, p.duration, rig.load(
            f"{svc.url}/alerts", template=template, mode="distinct", duration=p.duration, prefix="np")))
    load_end = time.time()
    drain = await rig.wait_placed(svc, before, route="bench", within=p.drain_timeout)
    new_cpu = svc.proc.cpu_s() - cpu0
    sim_cpu = rig.sim.cpu_s() - sim_cpu0
    after = await rig.metrics(svc)
    calls = await rig.sim_calls()
    last = max((c["time"] for c in calls), default=load_end)
    span = max(last, load_end) - load_start
    sustained = len(calls) / span if span > 0 else 0.0
    accepted = int(after.delta(before, "alert2voice_webhooks_total", result="accepted"))
    say(f"  new-page path: {new.rps:,.0f} webhooks/s answered; {len(calls):,} of {drain.called:,} calls "
        f"placed, the last {max(0.0, last - load_end):.2f} s after the load -> {sustained:,.0f}/s sustained")
    return NewPage(
        **new.to_json(),
        webhooks_accepted=accepted,
        pages_called=drain.called,
        calls_received_by_simulator=len(calls),
        every_call_placed=len(calls) >= drain.called and drain.called > 0 and drain.drained,
        last_call_after_load_end_s=round(max(0.0, last - load_end), 3),
        sustained_rps=round(sustained, 1),
        server_cpu_ms_per_webhook=_per(new_cpu * 1000, accepted),
        simulator_cpu_ms_per_call=_per(sim_cpu * 1000, len(calls)),
        provider_non_202=drain.provider_other,
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
