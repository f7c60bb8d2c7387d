"""The dispatcher on its own: provider limits, backoff, quiet hours, throttle, drain — with an injected clock."""

from __future__ import annotations

import asyncio
import logging
import random
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from alert2voice.alertmanager import parse_payload
from alert2voice.callbacks import Event
from alert2voice.config import RetryConfig
from alert2voice.dispatch import Backoff, Dispatcher, RateLimiter, tiers
from alert2voice.dispatch.limits import tiers_for
from alert2voice.live import make_speech
from alert2voice.metrics import Metrics
from alert2voice.pages import CallState, PageState, new_page, resolve
from alert2voice.provider.fake import RecordingProvider
from alert2voice.routing import plan
from alert2voice.speech import Speech
from alert2voice.store import StoreUnavailable
from alert2voice.store.memory import MemoryStore
from tests.support import CONFIG, INTERACTIVE, PAYMENTS, T0, FakeClock, alert, make_config, payload, settle


def make_dispatcher(config, *, provider=None, clock=None, store=None):
    store = store or MemoryStore()
    provider = provider or RecordingProvider()
    clock = clock or FakeClock()
    speech = make_speech(config)
    d = Dispatcher(config=lambda: config, store=store, provider=provider, speech=lambda: speech,
                   metrics=Metrics(CollectorRegistry()), clock=clock, rng=random.Random(7))
    return d, store, provider, clock


async def queue(d, store, config, *alerts, group="g"):
    body = payload(*alerts, group_key=group)
    for planned in plan(config, parse_payload(body)).pages:
        page = new_page(planned, {}, d.clock.now())
        assert await store.admit(page, planned.claims, timedelta(hours=4), d.clock.now())


@pytest.mark.parametrize(("tries", "retry_after", "low", "high"), [
    (1, None, 0.5, 1.0),      # initial 1s, full jitter on the upper half
    (2, None, 1.0, 2.0),
    (4, None, 4.0, 8.0),
    (20, None, 30.0, 60.0),   # capped at max
    (1, 10.0, 10.0, 10.0),    # Retry-After wins when longer
    (1, 600.0, 60.0, 60.0),   # ... but never beyond max
])
def test_backoff_table(tries, retry_after, low, high):
    policy = RetryConfig(initial="1s", max="1m", give_up_after="15m")
    for seed in range(20):
        wait = Backoff(policy, random.Random(seed)).delay(tries, retry_after).total_seconds()
        assert low <= wait <= high


async def test_throttle_tiers():
    config = make_config(**{"per_number: [{calls: 3, per: 15m}]":
                            "per_number: [{calls: 3, per: 15m}, {calls: 4, per: 1h}]\n  global: {calls: 5, per: 1m}"})
    store, rules, now = MemoryStore(), tiers(config), T0
    for i in range(3):
        assert await store.reserve_call("+1", now + timedelta(minutes=i), rules) is None  # counted
    # The fourth call within 15 minutes waits until the first one leaves the window (and is not counted).
    assert await store.reserve_call("+1", now + timedelta(minutes=3), rules) == now + timedelta(minutes=15)
    assert await store.reserve_call("+1", now + timedelta(minutes=15), rules) is None
    # Four within the hour: the next waits for the hour tier.
    assert await store.reserve_call("+1", now + timedelta(minutes=31), rules) == now + timedelta(hours=1)
    # Another number is free, until the global tier of 5 per minute fills.
    assert await store.reserve_call("+2", now + timedelta(minutes=15), rules) is None
    for i in range(3):
        assert await store.reserve_call(f"+3{i}", now + timedelta(minutes=15, seconds=i), rules) is None
    assert await store.reserve_call("+4", now + timedelta(minutes=15, seconds=5), rules) == \
        now + timedelta(minutes=16)  # the global tier: 5 within the minute that began at +15m
    # A slot given back (the provider did not take the call) is free again.
    await store.unreserve_call("+32", now + timedelta(minutes=15, seconds=2))
    assert await store.reserve_call("+4", now + timedelta(minutes=15, seconds=5), rules) is None


@pytest.mark.parametrize(("per_number", "kind", "fits"), [
    ("[{calls: 3, per: 15m}, {calls: 7, per: 1h}]", "page", [(3, 15), (7, 60), (60, 1)]),
    ("[{calls: 3, per: 15m}, {calls: 7, per: 1h}]", "resolved", [(2, 15), (6, 60), (59, 1)]),
    ("[{calls: 1, per: 15m}]", "page", [(1, 15), (60, 1)]),
    ("[{calls: 1, per: 15m}]", "resolved", None),
], ids=["page call (a heartbeat's too): the tiers", "resolved call: one slot spared in each tier",
        "a tier of one call", "resolved call, a tier of one call: no slot to spare, never fits"])
def test_tiers_for_a_kind_of_call(per_number, kind, fits):
    config = make_config(**{"per_number: [{calls: 3, per: 15m}]": f"per_number: {per_number}\n  global: {{calls: 60, per: 1m}}"})
    rules = tiers_for(config, kind)
    assert fits == (None if rules is None else [(t.calls, t.per // timedelta(minutes=1)) for t in rules])


async def test_rate_limiter_waits_on_injected_clock():
    clock = FakeClock()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    limiter = RateLimiter(MemoryStore().take_token, lambda: clock.now().timestamp(), sleep=sleep)
    for _ in range(6):
        await limiter.acquire(2.0)
    # Burst of 2, then one request every half second.
    assert waits == pytest.approx([0.5, 0.5, 0.5, 0.5])


class CountingProvider(RecordingProvider):
    """Counts how many requests are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.now = self.peak = 0

    async def place_call(self, request):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await super().place_call(request)
        finally:
            self.now -= 1


async def gated_run(max_in_flight: int, per_number: int, pages: int):
    """`pages` pages to one number, the loop driven with every provider request held at a gate."""
    config = make_config(**{"rate_limit: 1000/s": f"rate_limit: 1000/s\n  max_in_flight: {max_in_flight}",
                            "per_number: [{calls: 3, per: 15m}]": f"per_number: [{{calls: {per_number}, per: 15m}}]"})
    d, store, provider, _ = make_dispatcher(config, provider=CountingProvider())
    provider.gate = asyncio.Event()
    for i in range(pages):
        await queue(d, store, config, alert({**PAYMENTS, "instance": f"n{i}"}), group=f"g{i}")
    run = asyncio.create_task(settle(d))
    for _ in range(50):
        await asyncio.sleep(0)
    return provider, run


async def test_max_in_flight_is_enforced():
    provider, run = await gated_run(max_in_flight=2, per_number=100, pages=5)
    assert provider.now == 2  # two requests held at the gate, three pages waiting for a slot
    provider.gate.set()
    await run
    assert len(provider.accepted) == 5
    assert provider.peak == 2


async def test_a_call_held_within_max_hold_is_deferred_not_dropped():
    config = make_config(**{"per_number: [{calls: 3, per: 15m}]": "per_number: [{calls: 1, per: 15m}]\n  max_hold: 15m"})
    d, store, provider, clock = make_dispatcher(config)
    await queue(d, store, config, alert(PAYMENTS), group="a")
    await queue(d, store, config, alert({**PAYMENTS, "alertname": "Other"}), group="b")
    await settle(d)
    assert len(provider.accepted) == 1
    assert d.metrics.registry.get_sample_value("alert2voice_pages_total",
                                               {"route": "payments", "result": "throttled"}) == 1
    clock.advance(timedelta(minutes=15))
    await settle(d)
    assert len(provider.accepted) == 2


# ------------------------------------------------------------------------- a limit never stalls a page (issue 20)

ELI, DANA = "+14155550101", "+442071838750"
# The test config with the throttle tiers left at their defaults (3 calls per 15m, 7 per 1h; max_hold 1m), eli
# then dana on the payments route, and a route "db" that calls eli alone.
TEAM_TEXT = CONFIG.replace("alice", "eli").replace("bob", "dana").replace(
    "throttle:\n  per_number: [{calls: 3, per: 15m}]\n", "").replace(
    "  - name: catch-all\n", "  - name: db\n    matchers: ['team=\"db\"']\n    escalation: [{call: eli}]\n"
                             "  - name: catch-all\n")
TEAM = make_config(TEAM_TEXT)
DB = {**PAYMENTS, "team": "db"}


async def open_page(d, labels, group):
    """Open a page for one alert through Dispatcher.open(), as the admission does, and let the loop run."""
    [planned] = plan(d.config, parse_payload(payload(alert(labels), group_key=group))).pages
    page = new_page(planned, {}, d.clock.now())
    assert await d.open(page, planned.claims, d.clock.now())
    await settle(d)
    return page


async def unanswered_calls_to_eli(d, store, n):
    """`n` db pages, from a minute from now on and a minute apart, each calling eli, who does not answer."""
    for i in range(n):
        d.clock.advance(timedelta(minutes=1))
        page = await open_page(d, {**DB, "instance": f"db{i}"}, f"db{i}")
        [call] = (await store.get(page.key)).calls
        assert await d.outcomes.receipt(page.key, correlation=call.correlation_id, message_id=None,
                                        outcome=CallState.NO_ANSWER) == "ok"
    await settle(d)


async def resolve_page(d, key):
    """The page's alerts resolved (as admission.resolve does): its resolved call is queued and frozen."""
    async def decide(page, fx):
        resolve(page, d.clock.now(), send_resolved=True)
        d.speaker.freeze_new(page, d.config)
        fx.save()
    await d.ctx.work.change(key, decide)
    await settle(d)


def calls_total(d, outcome, route="payments"):
    return d.metrics.registry.get_sample_value("alert2voice_calls_total", {"route": route, "outcome": outcome})


async def test_a_page_a_tier_holds_past_max_hold_calls_the_next_person_at_once():
    d, store, provider, clock = make_dispatcher(TEAM)
    await unanswered_calls_to_eli(d, store, 3)
    assert [r.dialed_number for r in provider.requests] == [ELI] * 3
    opened = clock.now()
    # A new critical page for eli then dana: eli's next slot is 13 minutes away (T0 + 1m + 15m).
    page = await open_page(d, PAYMENTS, "payments")
    assert [r.dialed_number for r in provider.requests] == [ELI] * 3 + [DANA]
    assert clock.now() - opened <= TEAM.throttle.max_hold  # dana is called within max_hold (at once, in fact)
    stored = await store.get(page.key)
    assert [(c.contact, c.state) for c in stored.calls] == [("eli", CallState.THROTTLED), ("dana", CallState.ACCEPTED)]
    assert stored.calls[0].error == "throttled" and stored.state is PageState.ACTIVE
    assert calls_total(d, "throttled") == 1
    assert d.metrics.registry.get_sample_value("alert2voice_pages_total",
                                               {"route": "payments", "result": "throttled"}) == 1


async def test_a_page_with_nobody_else_to_call_waits_for_the_limit():
    d, store, provider, clock = make_dispatcher(TEAM)
    await unanswered_calls_to_eli(d, store, 3)
    page = await open_page(d, {**DB, "instance": "db9"}, "db9")  # eli alone: a throttle never ends it uncalled
    stored = await store.get(page.key)
    assert [c.state for c in stored.calls] == [CallState.QUEUED]
    assert stored.due_at == T0 + timedelta(minutes=16)
    clock.advance(stored.due_at - clock.now())
    await settle(d)
    assert [r.dialed_number for r in provider.requests] == [ELI] * 4


async def test_a_resolved_call_does_not_take_the_slot_a_firing_page_needs():
    d, store, provider, _ = make_dispatcher(TEAM)
    first = await open_page(d, PAYMENTS, "payments")  # eli is called and answers
    call = (await store.get(first.key)).calls[0]
    await d.outcomes.receipt(first.key, correlation=call.correlation_id, message_id=None,
                             outcome=CallState.ANSWERED)
    await unanswered_calls_to_eli(d, store, 1)  # eli: 2 calls of 3 in 15 minutes, one slot left
    await resolve_page(d, first.key)
    # Eli's one slot is for a page: the resolved call cannot go out within max_hold, and is dropped.
    assert [r.dialed_number for r in provider.requests] == [ELI] * 2
    stored = await store.get(first.key)
    assert [(c.kind, c.state) for c in stored.calls] == [("page", CallState.ANSWERED),
                                                         ("resolved", CallState.THROTTLED)]
    assert stored.due_at is None
    assert calls_total(d, "throttled") == 1
    # A new critical page takes the slot at once.
    page = await open_page(d, {**PAYMENTS, "alertname": "Other"}, "other")
    assert [r.dialed_number for r in provider.requests] == [ELI] * 3
    assert (await store.get(page.key)).calls[0].state is CallState.ACCEPTED


async def test_a_resolved_call_never_takes_the_only_slot_of_a_tier_of_one():
    config = make_config(TEAM_TEXT + "throttle: {per_number: [{calls: 1, per: 15m}]}\n")
    d, store, provider, clock = make_dispatcher(config)
    first = await open_page(d, PAYMENTS, "payments")
    call = (await store.get(first.key)).calls[0]
    await d.outcomes.receipt(first.key, correlation=call.correlation_id, message_id=None,
                             outcome=CallState.ANSWERED)
    clock.advance(timedelta(hours=1))  # eli's slot is free, and still not for a resolved call
    await resolve_page(d, first.key)
    assert len(provider.requests) == 1
    stored = await store.get(first.key)
    assert (stored.calls[-1].kind, stored.calls[-1].state, stored.due_at) == ("resolved", CallState.THROTTLED, None)
    assert calls_total(d, "throttled") == 1


async def test_a_resolved_call_waits_within_max_hold_for_a_spare_slot():
    d, store, provider, clock = make_dispatcher(TEAM)
    first = await open_page(d, PAYMENTS, "payments")
    call = (await store.get(first.key)).calls[0]
    await d.outcomes.receipt(first.key, correlation=call.correlation_id, message_id=None,
                             outcome=CallState.ANSWERED)
    clock.advance(timedelta(minutes=13, seconds=30))
    await unanswered_calls_to_eli(d, store, 1)  # eli: 2 calls; the first leaves the window 30 s from now
    await resolve_page(d, first.key)
    stored = await store.get(first.key)
    assert stored.calls[-1].state is CallState.QUEUED and stored.due_at == T0 + timedelta(minutes=15)
    clock.advance(stored.due_at - clock.now())
    await settle(d)
    assert [r.dialed_number for r in provider.requests] == [ELI] * 3
    assert (await store.get(first.key)).calls[-1].state is CallState.ACCEPTED


async def test_quiet_hours_defer_until_window_ends():
    config = make_config()
    night = T0.replace(hour=7)  # 23:00 in Los Angeles: alice is in quiet hours
    d, store, provider, clock = make_dispatcher(config, clock=FakeClock(night))
    labels = {**PAYMENTS, "severity": "warning"}
    # Only alice in the chain, so quiet hours are the only reason nobody can be called.
    config = make_config(**{"      - {call: bob, attempts: 1, interval: 5m}\n": ""})
    d.ctx.config = lambda: config
    await queue(d, store, config, alert(labels))
    await settle(d)
    assert provider.placed == []
    [page] = await store.recent(1)
    assert page.state is PageState.ACTIVE
    assert page.due_at == night + timedelta(hours=8)  # 07:00 in Los Angeles
    clock.advance(timedelta(hours=8))
    await settle(d)
    assert [r.dialed_number for r in provider.requests] == ["+14155550101"]


async def test_critical_is_not_held_by_quiet_hours():
    config = make_config()
    d, store, provider, _ = make_dispatcher(config, clock=FakeClock(T0.replace(hour=7)))
    await queue(d, store, config, alert(PAYMENTS))
    await settle(d)
    assert [r.dialed_number for r in provider.requests] == ["+14155550101"]


async def test_drain_lets_in_flight_finish_and_keeps_the_rest():
    config = make_config(**{"rate_limit: 1000/s": "rate_limit: 1000/s\n  max_in_flight: 1",
                            "per_number: [{calls: 3, per: 15m}]": "per_number: [{calls: 100, per: 15m}]"})
    d, store, provider, _ = make_dispatcher(config)
    provider.gate = asyncio.Event()
    for i in range(3):
        await queue(d, store, config, alert({**PAYMENTS, "instance": f"n{i}"}), group=f"g{i}")
    task = asyncio.create_task(d.run())
    for _ in range(50):
        await asyncio.sleep(0)
    drain = asyncio.create_task(d.drain(task, grace=5))
    await asyncio.sleep(0)
    provider.gate.set()
    await drain
    pages = await store.recent(10)
    states = sorted(p.calls[0].state.value if p.calls else "none" for p in pages)
    # What was in flight finished; nothing new was started after the drain began.
    assert len(provider.accepted) == 1
    assert states.count(CallState.ACCEPTED.value) == len(provider.accepted)
    assert sum(1 for p in pages if p.due_at is not None) == 3


async def test_throttle_holds_under_concurrency():
    provider, run = await gated_run(max_in_flight=8, per_number=2, pages=6)
    provider.gate.set()
    await run
    # All six were in flight together; only the two the tier allows reached each number: alice's, then (the
    # other four held past max_hold, moving on) bob's.
    numbers = [r.dialed_number for r in provider.requests]
    assert (numbers.count("+14155550101"), numbers.count("+442071838750")) == (2, 2)


async def test_loop_purges_finished_pages_after_the_dedup_window():
    config = make_config()
    d, store, _, clock = make_dispatcher(config)
    await queue(d, store, config, alert(PAYMENTS))
    await settle(d)
    page = (await store.recent(1))[0]
    await d.outcomes.receipt(page.key, correlation=page.calls[0].correlation_id, message_id=None,
                          outcome=CallState.ANSWERED)
    clock.advance(timedelta(hours=4, minutes=1))
    await d._purge(config)
    assert await store.recent(10) == []


async def test_storm_rule_folds_pages_into_one_summary_call():
    config = make_config(**{"per_number: [{calls: 3, per: 15m}]":
                            "per_number: [{calls: 100, per: 15m}]\n  storm: {pages: 2, per: 10m}"})
    d, store, provider, clock = make_dispatcher(config)
    for i in range(5):
        await queue(d, store, config, alert({**PAYMENTS, "alertname": f"Storm{i}", "instance": f"node{i}:9100"}),
                    group=f"g{i}")
    await settle(d)
    # Two calls within the window, then the storm rule holds the other three pages for one summary.
    assert len(provider.requests) == 2
    assert d.metrics.registry.get_sample_value("alert2voice_pages_total",
                                               {"route": "payments", "result": "throttled"}) == 3
    clock.advance(timedelta(minutes=10))
    await settle(d)
    assert len(provider.requests) == 3
    summary = provider.requests[2]
    spoken = "".join(ET.fromstring(summary.audio.text).itertext())
    pages = {p.key: p for p in await store.recent(10)}
    # Pages due at the same instant are taken in the order of their keys (store/rules.py, take_order): the
    # three folded are the ones not called first, whichever they are.
    called = {r.correlation_id for r in provider.requests[:2]}
    folded = [p.alerts[0]["labels"]["alertname"] for p in pages.values() if p.calls[0].correlation_id not in called]
    assert len(folded) == 3
    for name in folded:
        assert name in spoken, spoken
    members = [p for p in pages.values() if p.calls[0].correlation_id != summary.correlation_id
               and p.calls[0].message_id == provider.accepted[2].message_id]
    assert len(members) == 2  # the two other folded pages share the summary's messageId
    leader = next(p for p in pages.values() if p.calls[0].correlation_id == summary.correlation_id)
    await d.outcomes.receipt(leader.key, correlation=summary.correlation_id, message_id=None,
                          outcome=CallState.ANSWERED)
    pages = {p.key: p for p in await store.recent(10)}
    answered = [p for p in pages.values() if p.state is PageState.ANSWERED]
    assert len(answered) == 3
    clock.advance(timedelta(hours=1))
    await settle(d)
    assert len(provider.requests) == 3


# --------------------------------------------------------------------------------- a template that fails

# Passes check-config (the critical sample alert has an instance) yet fails on a critical alert without one.
CRITICAL_INSTANCE = ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="{{ language }}">'
                     '{% for a in alerts_spoken %}<s>{{ a.alertname }}</s>'
                     '{% if a.severity == "critical" %}<s>On {{ a.labels.instance }}.</s>{% endif %}'
                     "{% endfor %}</speak>")
NO_INSTANCE = {key: value for key, value in PAYMENTS.items() if key != "instance"}


def templated_config(tmp_path, **replace):
    """The test config, with the payments route speaking mine.ssml.j2 (CRITICAL_INSTANCE)."""
    (tmp_path / "mine.ssml.j2").write_text(CRITICAL_INSTANCE)
    return make_config(CONFIG + f"templates: {{directory: {tmp_path}}}\n",
                       **{"    send_resolved: true\n": "    send_resolved: true\n    template: mine.ssml.j2\n"}, **replace)


async def builtin_text(config, labels) -> str:
    """What the built-in template says for a page of one alert, placed by a dispatcher of its own."""
    d, store, provider, _ = make_dispatcher(config)
    await queue(d, store, config, alert(labels))
    await settle(d)
    return provider.requests[0].audio.text


def template_errors(d) -> float | None:
    return d.metrics.registry.get_sample_value("alert2voice_template_errors_total", {"route": "payments"})


async def test_a_template_failing_on_a_real_alert_still_places_the_call(tmp_path, caplog):
    config = templated_config(tmp_path)
    d, store, provider, _ = make_dispatcher(config)
    await queue(d, store, config, alert(NO_INSTANCE))
    with caplog.at_level(logging.WARNING, logger="alert2voice.dispatch"):
        await settle(d)
    [request] = provider.requests
    assert request.audio.text == await builtin_text(make_config(), NO_INSTANCE)
    assert "High CPU" in "".join(ET.fromstring(request.audio.text).itertext())
    [page] = await store.recent(1)
    assert page.calls[0].state is CallState.ACCEPTED
    assert template_errors(d) == 1
    [record] = [r for r in caplog.records if r.getMessage().startswith("template failed")]
    assert record.getMessage() == "template failed; the built-in firing.ssml.j2 is spoken instead"
    assert record.template == "mine.ssml.j2"
    assert record.error.startswith("mine.ssml.j2:1: 'dict object' has no attribute 'instance'")


async def answered(d, store, config):
    """Queue a page whose alert lacks `instance`, place its call, and answer it: the action the callee hears."""
    await queue(d, store, config, alert(NO_INSTANCE))
    await settle(d)
    [page] = await store.recent(1)
    call = page.calls[0]
    return await d.outcomes.call_event(page.key, Event("answered", call.correlation_id, call.message_id, None,
                                                       call_event=True))


async def test_an_answered_interactive_call_hears_the_fallback(tmp_path):
    config = templated_config(tmp_path, **INTERACTIVE)
    d, store, _, _ = make_dispatcher(config)
    answer = await answered(d, store, config)
    [audio] = answer.action["audio"]  # the built-in template says the prompt itself
    heard = "".join(ET.fromstring(audio["text"]).itertext())
    assert "High CPU" in heard and heard.strip().endswith(
        "Press 1 to acknowledge, 5 to pass to the next person, star to repeat.")
    assert template_errors(d) == 1


async def test_when_no_template_fits_a_fixed_sentence_and_the_prompt_are_spoken(tmp_path):
    config = templated_config(tmp_path, **INTERACTIVE)
    d, store, _, _ = make_dispatcher(config)
    # Too short a budget for the built-in template too: only the fixed sentence is left.
    short = Speech(tmp_path, max_chars=300)
    d.ctx.speech = lambda: short
    answer = await answered(d, store, config)
    heard = ["".join(ET.fromstring(a["text"]).itertext()) for a in answer.action["audio"]]
    assert heard == ["Alert firing: HighCPU.", "Press 1 to acknowledge, 5 to pass to the next person, star to repeat."]
    assert template_errors(d) == 1


async def test_a_page_whose_store_operation_failed_is_taken_again_as_soon_as_the_store_answers(caplog):
    # As after a Redis restart: the first operation on a stale connection fails (here the step's first, its
    # throttle slot). The page is still leased to this process, which must not wait for its own lease to end
    # (25 s) before going on.
    config = make_config()
    d, store, provider, _clock = make_dispatcher(config)
    await queue(d, store, config, alert(PAYMENTS))
    reserve = store.reserve_call
    failures = []

    async def flaky_reserve(*args):
        if not failures:
            failures.append(args)
            raise StoreUnavailable("connection closed by server (test)")
        return await reserve(*args)

    store.reserve_call = flaky_reserve
    await settle(d)
    assert failures and len(provider.requests) == 1  # placed at once, the clock never moved
    assert any("store unavailable while processing a page" in r.getMessage() for r in caplog.records)


async def test_a_receipt_wakes_the_loop_only_when_the_page_is_due():
    # A callback writes the page outside the loop: the loop looks when the page is due next, not at once
    # (each look is a take_due and a next_due, two round trips on Redis), nor later than that.
    config = make_config()
    d, store, provider, clock = make_dispatcher(config)
    looks = []
    take_due = store.take_due

    async def counted(*args, **kwargs):
        looks.append(clock.now())
        return await take_due(*args, **kwargs)

    store.take_due = counted

    async def receipt(outcome: CallState) -> None:
        request = provider.requests[-1]
        key = await store.find_call(correlation_id=request.correlation_id)
        assert await d.outcomes.receipt(key, correlation=request.correlation_id,
                                        message_id=provider.accepted[-1].message_id, outcome=outcome) == "ok"
        for _ in range(20):  # the loop's task runs whatever a wake-up started
            await asyncio.sleep(0)

    await queue(d, store, config, alert(PAYMENTS))
    await settle(d)
    before = len(looks)
    await receipt(CallState.NO_ANSWER)  # the next attempt in 3 minutes: nothing to look at now
    assert len(looks) == before and len(provider.requests) == 1
    clock.advance(timedelta(minutes=3))
    await settle(d)
    assert len(provider.requests) == 2
    before = len(looks)
    await receipt(CallState.FAILED)  # moves on at once: the loop looks now and calls the next step
    assert len(looks) > before and len(provider.requests) == 3
