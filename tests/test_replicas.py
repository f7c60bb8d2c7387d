"""Two dispatchers on one store behave as one: shared limits, callbacks taken by either, lost races re-applied.

Each Dispatcher has its own locks, slots and loop, as two replicas have; they share only the store (here a
MemoryStore, the reference implementation of the protocol that every backend passes).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from alert2voice.admission import Admission
from alert2voice.alertmanager import parse_payload
from alert2voice.dispatch.stepping import ROUTE_RECHECK
from alert2voice.live import LiveConfig
from alert2voice.pages import CallState, PageState
from alert2voice.routing import plan
from tests.support import PAYMENTS, alert, make_config, payload, settle
from tests.test_dispatcher import make_dispatcher, queue

# Both replicas take at most three pages at a time, so six due pages are shared out between them.
ONE_NUMBER = make_config(**{"rate_limit: 1000/s": "rate_limit: 1000/s\n  max_in_flight: 3",
                            "    escalation:\n      - {call: alice, attempts: 2, interval: 3m}\n"
                            "      - {call: bob, attempts: 1, interval: 5m}\n":
                            "    escalation:\n      - {call: bob, attempts: 1, interval: 5m}\n"})


ONE_PER_SECOND = make_config(**{"rate_limit: 1000/s": "rate_limit: 1/s\n  max_in_flight: 3",
                                "    escalation:\n      - {call: alice, attempts: 2, interval: 3m}\n"
                                "      - {call: bob, attempts: 1, interval: 5m}\n":
                                "    escalation:\n      - {call: bob, attempts: 1, interval: 5m}\n"})
ONE_PER_SECOND_TWICE = make_config(**{"rate_limit: 1000/s": "rate_limit: 1/s"})


def replicas(config=ONE_NUMBER):
    """Two dispatchers (their own providers and clocks' view of one time) sharing one store."""
    a, store, provider_a, clock = make_dispatcher(config)
    b, _, provider_b, _ = make_dispatcher(config, store=store, clock=clock)
    return a, b, store, (provider_a, provider_b), clock


async def in_flight(dispatcher, store, provider) -> tuple[asyncio.Task[None], str]:
    """Start the dispatcher on the one queued page, its provider request held at a gate; (its task, the key)."""
    provider.gate = asyncio.Event()
    running = asyncio.create_task(settle(dispatcher))
    await at_gate(provider)
    return running, (await store.recent(1))[0].key


async def at_gate(provider) -> None:
    """Return once a request waits at the provider's gate (the page's task runs on the event loop)."""
    await asyncio.wait_for(provider.arrived.wait(), 5)


async def test_the_per_number_tier_holds_across_replicas():
    a, b, store, providers, clock = replicas()
    for i in range(6):
        await queue(a, store, ONE_NUMBER, alert({**PAYMENTS, "instance": f"n{i}"}), group=f"g{i}")
    await asyncio.gather(settle(a), settle(b))
    placed = [r for p in providers for r in p.requests]
    assert len(placed) == 3  # 3 per 15 minutes to one number, whichever replica placed them
    pages = [await store.get(k) for k in [p.key for p in await store.recent(10)]]
    deferred = [p for p in pages if p.open_call is not None and p.open_call.state is CallState.QUEUED]
    assert len(deferred) == 3 and all(p.due_at is not None for p in deferred)  # deferred, none dropped
    clock.advance(timedelta(minutes=15))
    await asyncio.gather(settle(a), settle(b))
    assert sum(len(p.requests) for p in providers) == 6


async def test_a_receipt_taken_by_the_other_replica_ends_the_call():
    a, b, store, (provider_a, _), clock = replicas()
    await queue(a, store, ONE_NUMBER, alert(PAYMENTS))
    await settle(a)
    [request] = provider_a.requests
    key = await store.find_call(correlation_id=request.correlation_id)
    result = await b.outcomes.receipt(key, correlation=request.correlation_id,
                                      message_id=provider_a.accepted[0].message_id, outcome=CallState.ANSWERED)
    assert result == "ok"
    assert (await store.get(key)).state is PageState.ANSWERED
    clock.advance(timedelta(minutes=10))
    await asyncio.gather(settle(a), settle(b))
    assert len(provider_a.requests) == 1  # nothing more is placed for an answered page


async def test_a_callback_written_by_the_other_replica_while_the_call_was_in_flight_is_kept():
    a, b, store, (provider_a, _), _clock = replicas()
    await queue(a, store, ONE_NUMBER, alert(PAYMENTS))
    running, key = await in_flight(a, store, provider_a)
    page = await store.get(key)
    correlation = page.calls[0].correlation_id
    # Replica B takes the platform's receipt first: the call answered, while A still waits for its 202.
    assert await b.outcomes.receipt(key, correlation=correlation, message_id="msg-1",
                                    outcome=CallState.ANSWERED) == "ok"
    provider_a.gate.set()
    await asyncio.wait_for(running, 5)
    page = await store.get(key)
    # A's write lost the race; it re-read the page and found the call ended: B's answer stands.
    assert page.state is PageState.ANSWERED
    assert [(c.state, c.message_id) for c in page.calls] == [(CallState.ANSWERED, "msg-1")]
    assert len(provider_a.placed) == 1


async def test_a_page_resolved_by_the_other_replica_while_its_call_was_in_flight_stays_resolved():
    a, b, store, (provider_a, _), clock = replicas()
    await queue(a, store, ONE_NUMBER, alert(PAYMENTS))
    running, key = await in_flight(a, store, provider_a)
    # The alerts resolve, and the webhook saying so reaches replica B while A's request is in flight.
    stored = await store.get(key)
    stored.resolved_at = clock.now()
    stored.state = PageState.RESOLVED
    stored.calls[0].state = CallState.CANCELLED
    stored.due_at = None
    await store.put(stored)
    provider_a.gate.set()
    await asyncio.wait_for(running, 5)
    page = await store.get(key)
    # A's write lost the race and did not bring the escalation back to life.
    assert (page.state, page.resolved_at) == (PageState.RESOLVED, clock.now())
    clock.advance(timedelta(minutes=10))
    await asyncio.gather(settle(a), settle(b))
    assert len(provider_a.placed) == 1


async def test_one_token_bucket_for_both_replicas():
    config = make_config(**{"rate_limit: 1000/s": "rate_limit: 1/s"})
    a, b, store, providers, clock = replicas(config)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(timedelta(seconds=seconds))

    for d in (a, b):
        d.placer.limiter.sleep = sleep
    await queue(a, store, config, alert(PAYMENTS), group="g1")
    await settle(a)
    await queue(b, store, config, alert({**PAYMENTS, "alertname": "Other"}), group="g2")
    await settle(b)
    assert sum(len(p.requests) for p in providers) == 2
    assert sum(slept) >= 0.99  # B waited for the token A had taken


class Paused:
    """Holds a replica in its rate-limit wait, just before it sends, until resumed (moving the clock by `by`
    meanwhile, as a paused process finds when it goes on)."""

    def __init__(self, dispatcher, clock, by: timedelta = timedelta(0)) -> None:
        self.clock, self.by = clock, by
        self.waiting, self.resume = asyncio.Event(), asyncio.Event()
        dispatcher.placer.limiter.sleep = self.sleep

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # what was sent before the wait (the lease's renewal) is answered before it
        self.clock.advance(self.by)
        self.waiting.set()
        await self.resume.wait()
        self.clock.advance(timedelta(seconds=seconds))  # then the wait asked for, as a real sleep


def waits_on(dispatcher, clock) -> None:
    """The replica's rate-limit waits move the shared clock on, as time passes for a real process."""
    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)

    dispatcher.placer.limiter.sleep = sleep


async def empty_bucket(store, clock) -> None:
    """Take the provider's only token (rate_limit 1/s): the next send waits for one."""
    await store.take_token(clock.now().timestamp(), 1.0, 1.0)


async def test_a_page_admitted_by_one_replica_is_not_placed_by_the_other_before_its_first_call_goes_out():
    a, b, store, (provider_a, provider_b), clock = replicas(ONE_PER_SECOND)
    await settle(a)
    await asyncio.wait_for(settle(b), 5)  # both loops run, as in two serve processes
    paused = Paused(a, clock)
    waits_on(b, clock)
    await empty_bucket(store, clock)
    live = LiveConfig(ONE_PER_SECOND, a.metrics, None)
    body = parse_payload(payload(alert(PAYMENTS), group_key="g"))
    summary = await Admission(live, store, a.metrics, a).accept(body, plan(ONE_PER_SECOND, body), clock.now())
    assert [p["result"] for p in summary["pages"]] == ["called"]
    await asyncio.wait_for(paused.waiting.wait(), 5)
    await asyncio.wait_for(settle(b), 5)  # B looks at the queue while A is about to send: the page is A's
    paused.resume.set()
    await settle(a)
    assert provider_b.requests == [] and len(provider_a.placed) == 1


async def test_an_escalation_step_committed_by_one_replica_is_not_sent_by_the_other_before_it_goes_out():
    a, b, store, (provider_a, provider_b), clock = replicas(ONE_PER_SECOND_TWICE)  # alice twice, 3 minutes apart
    waits_on(a, clock)
    await queue(a, store, ONE_PER_SECOND_TWICE, alert(PAYMENTS))
    await settle(a)
    [first] = provider_a.requests
    key = await store.find_call(correlation_id=first.correlation_id)
    assert await b.outcomes.receipt(key, correlation=first.correlation_id,
                                    message_id=provider_a.accepted[0].message_id, outcome=CallState.NO_ANSWER) == "ok"
    clock.advance(timedelta(minutes=3))
    paused = Paused(a, clock)
    waits_on(b, clock)
    await empty_bucket(store, clock)
    running = asyncio.create_task(settle(a))
    await asyncio.wait_for(paused.waiting.wait(), 5)
    assert [c.attempt for c in (await store.get(key)).calls] == [1, 2]  # committed before it is sent
    await settle(b)
    paused.resume.set()
    await asyncio.wait_for(running, 5)
    assert provider_b.requests == []
    assert [r.correlation_id[-2:] for r in provider_a.requests] == ["-1", "-2"]


async def test_a_replica_whose_lease_was_taken_over_during_a_wait_does_not_send():
    a, b, store, (provider_a, provider_b), clock = replicas(ONE_PER_SECOND)
    # A waits for a token far longer than its lease (a paused process, a starved limiter): B takes over.
    paused = Paused(a, clock, by=timedelta(minutes=1))
    waits_on(b, clock)
    await empty_bucket(store, clock)
    await queue(a, store, ONE_PER_SECOND, alert(PAYMENTS))
    running = asyncio.create_task(settle(a))
    await asyncio.wait_for(paused.waiting.wait(), 5)
    await asyncio.wait_for(settle(b), 5)  # A's lease ended a minute ago: B takes the page and places the call
    assert len(provider_b.requests) == 1
    paused.resume.set()
    await asyncio.wait_for(running, 5)
    assert provider_a.requests == []  # A's renewal before sending found the page B's
    page = await store.get((await store.recent(1))[0].key)
    assert [(c.attempt, c.state) for c in page.calls] == [(1, CallState.ACCEPTED)]


async def test_a_replica_whose_config_lacks_the_route_leaves_the_page_to_one_that_has_it():
    # A rolling reload: replica A runs the new config (route renamed), B still the old one that admitted the page.
    renamed = make_config(**{"  - name: payments\n": "  - name: payments-v2\n"})
    a, store, provider_a, clock = make_dispatcher(renamed)
    b, _, provider_b, _ = make_dispatcher(make_config(), store=store, clock=clock)
    await queue(b, store, make_config(), alert(PAYMENTS))
    await settle(a)  # A takes the page first and does not know its route
    [page] = await store.recent(1)
    assert page.state is PageState.ACTIVE and page.due_at == clock.now() + ROUTE_RECHECK
    clock.advance(ROUTE_RECHECK)
    await settle(b)
    assert provider_a.requests == [] and len(provider_b.requests) == 1  # B, which has the route, called
    assert (await store.get(page.key)).route_missing_since is None


async def test_a_receipt_whose_first_write_lost_a_race_is_counted_and_logged_once(caplog):
    caplog.set_level(logging.INFO, logger="alert2voice.dispatch")
    a, b, store, (provider_a, _), clock = replicas()
    await queue(a, store, ONE_NUMBER, alert(PAYMENTS))
    await settle(a)
    [request] = provider_a.requests
    key = await store.find_call(correlation_id=request.correlation_id)
    read, raced = store.get, []

    async def get_then_another_writer(k):
        page = await read(k)
        if not raced:  # replica A writes the page between B's read and B's write (a poll's bookkeeping, say)
            raced.append(k)
            other = await read(k)
            other.updated_at = clock.now()
            await store.put(other)
        return page

    store.get = get_then_another_writer
    assert await b.outcomes.receipt(key, correlation=request.correlation_id,
                                    message_id=provider_a.accepted[0].message_id, outcome=CallState.ANSWERED) == "ok"
    assert raced and (await read(key)).state is PageState.ANSWERED
    assert b.metrics.registry.get_sample_value("alert2voice_calls_total",
                                               {"route": "payments", "outcome": "answered"}) == 1
    assert sum(r.getMessage() == "call answered" for r in caplog.records) == 1


async def test_a_resolution_whose_first_write_lost_a_race_is_applied_again():
    a, b, store, _, clock = replicas()
    await queue(a, store, ONE_NUMBER, alert(PAYMENTS))
    await settle(a)
    [page] = await store.recent(1)
    read, raced = store.get, []

    async def get_then_another_writer(k):
        got = await read(k)
        if not raced:  # replica A takes the page (its deadline poll) between B's read and B's write
            raced.append(k)
            await store.take_due(clock.now() + timedelta(hours=1), 10, timedelta(seconds=25), a.owner)
        return got

    store.get = get_then_another_writer
    live = LiveConfig(ONE_NUMBER, b.metrics, None)
    resolved = parse_payload(payload(alert(PAYMENTS, status="resolved"), group_key="g"))
    summary = await Admission(live, store, b.metrics, b).accept(resolved, plan(ONE_NUMBER, resolved), clock.now())
    assert raced and [p["result"] for p in summary["pages"]] == ["resolved"]
    assert (await read(page.key)).state is PageState.RESOLVED
