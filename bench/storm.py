"""Phase 5, storms: one webhook with 5,000 alerts, and 1,000 groups within one second, with real limits.

Its own alert2voice: per-number tiers raised above the storm rule's allowance, so that an enforced storm
rule (5 pages per 2 minutes -> one summary call) and the per-number tier can be told apart by the
number of calls placed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

from bench import loadgen, say
from bench.rig import Rig, Samples, Service

BIG_NUMBER = "+14155550102"
BURST_NUMBER = "+14155550103"
BIG_ALERTS = 5000
BURST_GROUPS = 1000
STORM: dict[str, Any] = {
    "contacts": {
        "big": {"number": BIG_NUMBER, "timezone": "UTC"},
        "burst": {"number": BURST_NUMBER, "timezone": "UTC"},
    },
    "routes": [
        {"name": "storm-big", "matchers": ['storm="big"'], "escalation": [{"call": "big", "attempts": 1}]},
        {"name": "storm-burst", "matchers": ['storm="burst"'], "escalation": [{"call": "burst", "attempts": 1}]},
        {"name": "everything-else", "matchers": [], "escalation": []},
    ],
    "throttle": {
        "per_number": [{"calls": 20, "per": "15m"}, {"calls": 40, "per": "1h"}],
        "global": {"calls": 60, "per": "1m"},
        "storm": {"pages": 5, "per": "2m"},
    },
}


@dataclass(frozen=True)
class BigWebhook:
    """One webhook with BIG_ALERTS alerts: answered as a new page, then resent; its call."""

    alerts: int
    bytes: int
    status: int
    result: list[Any]
    response_s: float
    resend_status: int
    resend_result: list[Any]
    resend_response_s: float
    calls_placed: int = 0                 # counted once the dispatcher is done
    time_to_call_s: float | None = None


@dataclass(frozen=True)
class Burst:
    """BURST_GROUPS distinct groups within one second: statuses, answer times, calls against the limits."""

    groups: int
    sent_within_s: float
    all_answered_within_s: float
    statuses: dict[str, int]
    response_ms: dict[str, float | None]
    pages_called: int
    pages_throttled: int
    calls_placed: int
    calls_allowed_by_throttle: int
    calls_allowed_by_storm_rule: int
    throttle_respected: bool
    storm_rule_respected: bool


@dataclass(frozen=True)
class Storms:
    """Both storms, the throttle they ran under, and the RSS the service was left with."""

    store: str
    config: dict[str, Any]
    big_webhook: BigWebhook
    burst: Burst
    rss_mb_after: float


def _results(answer: Any) -> list[Any]:
    return [p.get("result") for p in (answer.get("pages", []) if isinstance(answer, dict) else [])]


async def storms(rig: Rig, store: str) -> Storms:
    """The big webhook, then the burst, on an alert2voice with the STORM contacts, routes and throttle."""
    async with rig.service("storm", STORM, store=store) as svc:
        await rig.reset_simulator(BIG_NUMBER, BURST_NUMBER)
        before = await rig.metrics(svc)
        big, sent_wall = await _big_webhook(rig, svc)
        sent, t0 = await _burst(rig, svc)
        await _quiesce(rig, svc, before)
        after = await rig.metrics(svc)
        calls = await rig.sim_calls()
        per_number: dict[str, int] = {}
        for c in calls:
            per_number[c["dialedNumber"]] = per_number.get(c["dialedNumber"], 0) + 1
        big_arrival = min((c["time"] for c in calls if c["dialedNumber"] == BIG_NUMBER), default=None)
        big = replace(big, calls_placed=per_number.get(BIG_NUMBER, 0),
                      time_to_call_s=round(big_arrival - sent_wall, 3) if big_arrival else None)
        burst = _burst_result(sent, t0, per_number, before, after)
        rss = round(svc.proc.rss_mb() or 0, 1)
    return Storms(store=store, config=STORM["throttle"], big_webhook=big, burst=burst, rss_mb_after=rss)


async def _big_webhook(rig: Rig, svc: Service) -> tuple[BigWebhook, float]:
    """The big webhook's answers (its call is counted later), and the wall time it was sent."""
    big = loadgen.webhook("Big", starts_at=rig.starts_at, alerts=BIG_ALERTS, extra_labels={"storm": "big"},
                          name_prefix="Storm")
    body = loadgen.dumps(big).encode()
    sent_wall = time.time()
    status1, answer1, first_s = await rig.post(f"{svc.url}/alerts", body)
    status2, answer2, again_s = await rig.post(f"{svc.url}/alerts", body)
    results = _results(answer1)
    say(f"  5,000-alert webhook ({len(body) / 1e6:.1f} MB): answered {status1} in {first_s * 1000:.0f} ms "
        f"({', '.join(map(str, results))}); resent: {status2} in {again_s * 1000:.0f} ms")
    return BigWebhook(alerts=BIG_ALERTS, bytes=len(body), status=status1, result=results,
                      response_s=round(first_s, 4), resend_status=status2, resend_result=_results(answer2),
                      resend_response_s=round(again_s, 4)), sent_wall


async def _burst(rig: Rig, svc: Service) -> tuple[list[loadgen.Sent], float]:
    """BURST_GROUPS new groups at 1,000/s, open loop; and when the load started (monotonic)."""
    template = loadgen.dumps(loadgen.webhook(loadgen.MARKER, starts_at=rig.starts_at,
                                             extra_labels={"storm": "burst"}, name_prefix="Storm"))
    bodies = [template.replace(loadgen.MARKER, f"Burst{i}").encode() for i in range(BURST_GROUPS)]
    t0 = time.monotonic()
    return await loadgen.open_loop(f"{svc.url}/alerts", token=rig.token, bodies=bodies, rate=1000.0), t0


async def _quiesce(rig: Rig, svc: Service, before: Samples) -> None:
    """Let the dispatcher place what the limits allow: until the provider requests stop for 2 s (at most 15 s)."""
    deadline = time.monotonic() + 15
    last_count, stable_since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        m = await rig.metrics(svc)
        placed = m.delta(before, "alert2voice_provider_requests_total", endpoint="messages")
        if placed != last_count:
            last_count, stable_since = placed, time.monotonic()
        elif time.monotonic() - stable_since >= 2.0:
            break
        await asyncio.sleep(0.2)


def _burst_result(sent: list[loadgen.Sent], t0: float, per_number: dict[str, int], before: Samples,
                  after: Samples) -> Burst:
    """The burst's figures; `t0` is when its load started (monotonic), per_number the calls each number got."""
    statuses = loadgen.status_counts(sent)
    responses = [s.response_time for s in sent if s.response_time is not None]
    sending_s = sent[-1].sent - sent[0].sent if sent else 0.0
    burst_span = max((s.done or t0) for s in sent) - t0 if sent else 0.0
    throttle = STORM["throttle"]
    # Everything happens within every window, so the smallest tier binds; the big page's call counts globally.
    allowed_by_throttle = min(min(t["calls"] for t in throttle["per_number"]),
                              throttle["global"]["calls"] - per_number.get(BIG_NUMBER, 0))
    allowed_by_storm = throttle["storm"]["pages"] + 1
    burst_calls = per_number.get(BURST_NUMBER, 0)
    summary = loadgen.latency_summary(responses)
    say(f"  {BURST_GROUPS:,} groups sent in {sending_s:.2f} s: {statuses}; answers p50 {summary['p50'] or 0:.0f} ms, "
        f"p99 {summary['p99'] or 0:.0f} ms, all within {burst_span:.2f} s")
    say(f"  storm calls to the burst number: {burst_calls} placed (throttle allows {allowed_by_throttle}, "
        f"storm rule {throttle['storm']['pages']} pages/{throttle['storm']['per']} allows {allowed_by_storm})")
    return Burst(
        groups=BURST_GROUPS,
        sent_within_s=round(sending_s, 3),
        all_answered_within_s=round(burst_span, 3),
        statuses=statuses,
        response_ms=summary,
        pages_called=int(after.delta(before, "alert2voice_pages_total", route="storm-burst", result="called")),
        pages_throttled=int(after.delta(before, "alert2voice_pages_total", route="storm-burst", result="throttled")),
        calls_placed=burst_calls,
        calls_allowed_by_throttle=allowed_by_throttle,
        calls_allowed_by_storm_rule=allowed_by_storm,
        throttle_respected=0 < burst_calls <= allowed_by_throttle,
        storm_rule_respected=0 < burst_calls <= allowed_by_storm,
    )
