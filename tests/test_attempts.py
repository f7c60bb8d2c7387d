"""Issue 19's engine rules, each on the production dispatcher with an injected clock: an attempt frozen when it
is created, unknown outcomes, one replica never conflicting with itself, an accepted call never sent again
because its record waited for the store, and storm summaries that survive their leader."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from datetime import timedelta

from alert2voice.alertmanager import parse_payload
from alert2voice.dispatch.context import lease_span
from alert2voice.pages import CallState, PageState, new_page
from alert2voice.provider import NetworkError, Rejected
from alert2voice.routing import plan
from alert2voice.store.base import Conflict
from alert2voice.store.memory import MemoryStore
from tests.support import PAYMENTS, SleepingClock, alert, make_config, payload, settle
from tests.test_dispatcher import make_dispatcher

TIMEOUT = NetworkError("messages: timed out after 10s", timeout=True)


async def open_pages(d, config, *alerts, groups=("g",)):
    """Open one page per group through Dispatcher.open(), as the admission does; returns them."""
    pages = []
    for group in groups:
        for planned in plan(config, parse_payload(payload(*alerts, group_key=group))).pages:
            page = new_page(planned, {}, d.clock.now())
            assert await d.open(page, planned.claims, d.clock.now())
            pages.append(page)
    return pages


def spoken(request) -> str:
    return "".join(ET.fromstring(request.audio.text).itertext())


# ------------------------------------------------------------------------------------- frozen attempts


async def test_every_try_of_an_attempt_sends_the_bytes_frozen_at_its_creation():
    # The alert is 5 minutes old at T0: spoken at a retry's `now` it would be 6 minutes old, another body.
    config = make_config()
    d, store, provider, clock = make_dispatcher(config)
    provider.fail_next(TIMEOUT)
    [page] = await open_pages(d, config, alert(PAYMENTS))
    await settle(d)
    clock.advance(timedelta(seconds=61))
    await settle(d)
    first, retry = provider.requests
    assert retry == first and retry.message_body() == first.message_body()
    assert "5 minutes" in spoken(first)
    stored = await store.get(page.key)
    call = stored.calls[0]
    assert (call.state, call.tries) == (CallState.ACCEPTED, 2)
    # Rendered now, the same call would say something else: the test would see a re-render.
    again = d.speaker.audio_for(stored, call, config, clock.now())[0]
    assert again.text != first.audio.text


async def test_a_refused_repeat_of_an_unknown_try_waits_for_its_receipts_not_a_new_attempt():
    config = make_config()
    d, store, provider, clock = make_dispatcher(config)
    provider.fail_next(TIMEOUT)
    provider.fail_next(Rejected("7004", message="Invalid parameter -  : Idempotency-Key"))
    [page] = await open_pages(d, config, alert(PAYMENTS))
    await settle(d)
    assert (await store.get(page.key)).calls[0].state is CallState.UNKNOWN
    clock.advance(timedelta(minutes=1))
    await settle(d)
    stored = await store.get(page.key)
    [call] = stored.calls
    assert call.state is CallState.UNKNOWN and call.settle_at is not None
    assert len(provider.requests) == 2 and provider.requests[0] == provider.requests[1]
    # No receipt by the deadline: not reached, and the next attempt waits for alice's interval (3m).
    clock.advance(config.provider.callback.deadline)
    await settle(d)
    stored = await store.get(page.key)
    assert stored.calls[0].state is CallState.NO_ANSWER and len(provider.requests) == 2
    clock.advance(timedelta(minutes=2, seconds=59))
    await settle(d)
    assert len(provider.requests) == 2
    clock.advance(timedelta(seconds=1))
    await settle(d)
    assert len(provider.requests) == 3 and provider.requests[2].correlation_id != call.correlation_id


async def test_a_receipt_settles_an_unknown_attempt_whose_repeat_was_refused():
    config = make_config()
    d, store, provider, clock = make_dispatcher(config)
    provider.fail_next(TIMEOUT)
    provider.fail_next(Rejected("7004"))
    [page] = await open_pages(d, config, alert(PAYMENTS))
    await settle(d)
    clock.advance(timedelta(minutes=1))
    await settle(d)
    correlation = provider.requests[0].correlation_id
    assert await d.outcomes.receipt(page.key, correlation=correlation, message_id="platform-1",
                                    outcome=CallState.ANSWERED) == "ok"
    stored = await store.get(page.key)
    assert stored.state is PageState.ANSWERED and stored.calls[0].message_id == "platform-1"
    clock.advance(timedelta(hours=1))
    await settle(d)
    assert len(provider.requests) == 2


# ---------------------------------------------------------------------------- one replica, no conflicts


class YieldingStore(MemoryStore):
    """A MemoryStore whose writes yield to the event loop first, as every real store's round trip does."""

    async def admit(self, *args, **kwargs):
        await asyncio.sleep(0)
        return await super().admit(*args, **kwargs)

    async def put(self, *args, **kwargs):
        await asyncio.sleep(0)
        return await super().put(*args, **kwargs)


async def test_one_replica_never_conflicts_with_itself_on_new_pages(caplog):
    config = make_config(**{"per_number: [{calls: 3, per: 15m}]": "per_number: [{calls: 1000, per: 15m}]",
                            "  rate_limit: 1000/s\n": "  rate_limit: 1000/s\n  max_in_flight: 4\n"})
    d, _store, provider, _clock = make_dispatcher(config, store=YieldingStore())
    await settle(d)  # the loop runs: open() starts pages while it takes others
    caplog.set_level(logging.DEBUG, logger="alert2voice")
    groups = [f"g{i}" for i in range(300)]
    await asyncio.gather(*(open_pages(d, config, alert(PAYMENTS), groups=(g,)) for g in groups))
    await settle(d)
    conflicts = [r.getMessage() for r in caplog.records if "another writer" in r.getMessage()
                 or "lease" in r.getMessage()]
    assert conflicts == []
    called = [r.correlation_id for r in provider.requests]
    assert len(called) == 300 and len(set(called)) == 300


# ------------------------------------------------------------------ an accepted call whose record waited


async def test_an_accepted_call_whose_record_waits_for_the_store_is_not_sent_again():
    config = make_config()
    clock = SleepingClock()
    d, store, provider, _ = make_dispatcher(config, clock=clock)
    place = provider.place_call

    async def accepted_while_the_store_goes_away(request):
        accepted = await place(request)
        store.available = False  # as Redis refusing writes (out of memory) when the 202 arrives
        return accepted

    provider.place_call = accepted_while_the_store_goes_away
    [page] = await open_pages(d, config, alert(PAYMENTS))
    retrying = asyncio.Event()
    sleep = clock.sleep

    async def sleep_and_tell(seconds):
        retrying.set()  # the dispatcher waits to write the record again
        await sleep(seconds)

    clock.sleep = d.sleep = sleep_and_tell
    task = asyncio.ensure_future(settle(d))
    await retrying.wait()
    store.available = True
    await task
    clock.advance(timedelta(minutes=1))
    await settle(d)
    assert len(provider.requests) == 1
    assert (await store.get(page.key)).calls[0].state is CallState.ACCEPTED


# ------------------------------------------------------------------------------------------- storms

STORM = {"per_number: [{calls: 3, per: 15m}]": "per_number: [{calls: 100, per: 15m}]\n  storm: {pages: 1, per: 10m}"}


async def storm_of_three(d, config, clock):
    """Three pages to alice: the first called, the other two folded into a batch due 10 minutes later."""
    pages = await open_pages(d, config, *[alert({**PAYMENTS, "alertname": f"Storm{i}", "instance": f"n{i}:9100"})
                                          for i in range(1)], groups=("g0",))
    await settle(d)
    for i in (1, 2):
        pages += await open_pages(d, config, alert({**PAYMENTS, "alertname": f"Storm{i}", "instance": f"n{i}:1"}),
                                  groups=(f"g{i}",))
    await settle(d)
    clock.advance(timedelta(minutes=10))
    return pages


async def test_a_storm_batch_ends_when_its_leader_loses_its_page():
    config = make_config(**STORM)
    d, store, provider, clock = make_dispatcher(config)
    await storm_of_three(d, config, clock)
    renew, storm_end, acquire, ended = store.renew, store.storm_end, d.placer.limiter.acquire, []

    async def long_wait(per_second):  # the summary waited for a token past its lease...
        d.placer.limiter.acquire = acquire
        clock.advance(lease_span(config))
        return True

    async def lost(key, lease):  # ...and another replica took the leader page over meanwhile
        store.renew = renew
        raise Conflict("taken over (test)")

    async def end(number, key):
        ended.append((key, len(provider.requests)))
        await storm_end(number, key)

    store.renew, store.storm_end, d.placer.limiter.acquire = lost, end, long_wait
    await settle(d)
    # Ended in a finally though its request was never sent; the page, taken again, sends its written fan-out.
    leader = ended[0][0]
    assert ended == [(leader, 1), (leader, 2)]
    assert len(provider.requests) == 2 and len(provider.requests[1].audio.text) > len(provider.requests[0].audio.text)


def alert_number(config) -> str:
    return config.contacts["alice"].number


async def test_a_storm_summary_whose_leader_died_is_finished_by_the_replica_that_takes_the_page():
    config = make_config(**STORM)
    store = MemoryStore()
    d1, _, p1, clock = make_dispatcher(config, store=store)
    pages = await storm_of_three(d1, config, clock)
    p1.gate = asyncio.Event()  # the summary's request never returns: its replica is frozen, then gone
    task = asyncio.ensure_future(settle(d1))
    await p1.arrived.wait()
    summary = p1.held[0]
    assert "Storm 1" in spoken(summary) or "Storm1" in spoken(summary)
    d2, _, p2, _ = make_dispatcher(config, store=store, clock=clock)
    clock.advance(timedelta(seconds=26))  # past the lease (provider.timeout 10s x 2 + 5s)
    await settle(d2)
    [sent] = p2.requests
    assert sent.message_body() == summary.message_body()  # the fan-out was written: the same bytes
    by_key = {p.key: await store.get(p.key) for p in pages[1:]}
    assert all(p.calls[-1].state is CallState.ACCEPTED for p in by_key.values()), by_key
    assert await store.storm_batch(alert_number(config)) is None
    leader = next(p for p in by_key.values() if p.calls[-1].correlation_id == sent.correlation_id)
    await d2.outcomes.receipt(leader.key, correlation=sent.correlation_id, message_id=None,
                              outcome=CallState.NO_ANSWER)
    clock.advance(timedelta(minutes=3))
    await settle(d2)
    # Every page of the batch goes on to its next attempt after the summary went unanswered: none is held.
    for p in pages[1:]:
        stored = await store.get(p.key)
        assert stored.state is PageState.ACTIVE and len(stored.calls) == 2, stored
    d1.stopping = True
    p1.gate.set()
    await task
