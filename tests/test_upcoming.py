"""upcoming.py on its own: a page's next call (who, when) and why it waits, read from the page as stored.

Every case is a row: a page built with test_pages.py's config and helpers, the instant, and the whole Upcoming.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from alert2voice.pages import HELD_STORM, HELD_THROTTLED, CallState, Page, PageState
from alert2voice.upcoming import Upcoming, upcoming
from tests.test_pages import CONFIG, DAY, NIGHT, NOON, NUMBERS, add_call, make_page

LATER = DAY + timedelta(minutes=9)


def queued(error: str | None, due: datetime = LATER) -> Callable[[], Page]:
    def build() -> Page:
        page = make_page(at=(0, 0, 1), due_at=due)
        add_call(page, "alice", CallState.QUEUED, message_id=False).error = error
        return page
    return build


def unknown(settle: bool) -> Page:
    page = make_page(at=(0, 0, 1), due_at=LATER)
    call = add_call(page, "alice", CallState.UNKNOWN, message_id=False)
    call.settle_at = LATER if settle else None
    return page


def accepted() -> Page:
    page = make_page(at=(0, 0, 1), due_at=LATER)
    add_call(page, "alice", CallState.ACCEPTED)
    return page


def after_no_answer(contact: str = "alice", at: tuple[int, int, int] = (0, 0, 1)) -> Callable[[], Page]:
    def build() -> Page:
        page = make_page(at=at, due_at=DAY + timedelta(minutes=3))
        add_call(page, contact, CallState.NO_ANSWER)
        return page
    return build


def quiet_first(due: datetime) -> Callable[[], Page]:
    return lambda: make_page("all-quiet", due_at=due)


def answered_with_resolved_call() -> Page:
    page = make_page(state=PageState.RESOLVED, due_at=DAY)
    add_call(page, "bob", CallState.ANSWERED)
    add_call(page, "bob", CallState.QUEUED, message_id=False, kind="resolved")
    return page


def answered() -> Page:
    page = make_page(state=PageState.ANSWERED, due_at=None)
    add_call(page, "alice", CallState.ANSWERED)
    return page


def route_missing() -> Page:
    page = make_page(at=(0, 0, 1), due_at=DAY + timedelta(seconds=30))
    add_call(page, "alice", CallState.QUEUED, message_id=False)
    page.route_missing_since = DAY
    return page


def alice(state: str, at: datetime, held: str | None, **kw) -> Upcoming:
    return Upcoming(state, "alice", NUMBERS["alice"], at, held, **{"attempt": 1, "step": 0, **kw})


CASES: dict[str, tuple[Callable[[], Page], datetime, Upcoming | None]] = {
    "a queued call, throttled": (queued(HELD_THROTTLED), DAY, alice("queued", LATER, "throttled until 2026-11-26 15:09:00 UTC")),
    "a queued call, held for a storm summary": (
        queued(HELD_STORM), DAY, alice("queued", LATER, "storm: held for a summary until 2026-11-26 15:09:00 UTC")),
    "a queued call, retrying a provider error": (
        queued("provider unavailable (503)"), DAY,
        alice("queued", LATER, "provider error (provider unavailable (503)): tried again at 2026-11-26 15:09:00 UTC")),
    "a throttled call due now: no longer held": (queued(HELD_THROTTLED, DAY), DAY, alice("queued", DAY, None)),
    "a fresh queued call": (queued(None, DAY), DAY, alice("queued", DAY, None)),
    "outcome unknown, settling": (
        lambda: unknown(True), DAY,
        alice("unknown", LATER, "outcome unknown: waiting for receipts until 2026-11-26 15:09:00 UTC")),
    "outcome unknown, to be sent again": (
        lambda: unknown(False), DAY,
        alice("unknown", LATER, "outcome unknown: the same request is sent again at 2026-11-26 15:09:00 UTC")),
    "accepted: waiting for the outcome": (
        accepted, DAY, alice("accepted", LATER, "waiting for the outcome until 2026-11-26 15:09:00 UTC")),
    "unanswered: the step's second attempt after the interval": (
        after_no_answer(), DAY,
        Upcoming("planned", "alice", NUMBERS["alice"], DAY + timedelta(minutes=3),
                 "next attempt after the interval at 2026-11-26 15:03:00 UTC", step=0, reason="named in step 1")),
    "unanswered, the step done: the next person": (
        after_no_answer(at=(0, 0, 2)), DAY,
        Upcoming("planned", "bob", NUMBERS["bob"], DAY + timedelta(minutes=3),
                 "next attempt after the interval at 2026-11-26 15:03:00 UTC", step=1, reason="named in step 2")),
    "the interval over: due now": (
        after_no_answer(at=(0, 0, 2)), DAY + timedelta(minutes=4),
        Upcoming("planned", "bob", NUMBERS["bob"], DAY + timedelta(minutes=4), None, step=1,
                 reason="named in step 2")),
    "a rotation: whoever is on call when the page is due": (
        lambda: make_page("rota", due_at=DAY), DAY,
        Upcoming("planned", "carol", NUMBERS["carol"], DAY, None, step=0,
                 reason="shift 26 of primary (bob, carol), 2026-11-26 00:00 → 2026-11-27 00:00 UTC")),
    "a rotation, due after its handover: the next one on call": (
        lambda: make_page("rota", due_at=DAY + timedelta(days=1)), DAY,
        Upcoming("planned", "bob", NUMBERS["bob"], DAY + timedelta(days=1),
                 "quiet hours until 2026-11-27 15:00:00 UTC", step=0,
                 reason="shift 27 of primary (bob, carol), 2026-11-27 00:00 → 2026-11-28 00:00 UTC")),
    "the chain run: nobody left": (
        after_no_answer("bob", at=(1, 1, 1)), DAY,
        Upcoming("planned", None, None, None, reason="nobody left to call: the page ends exhausted")),
    "quiet hours before the first call: who is called when they end": (
        quiet_first(NOON), NIGHT,
        Upcoming("planned", "erin", NUMBERS["erin"], NOON, "quiet hours until 2026-11-26 12:00:00 UTC", step=1,
                 reason="named in step 2")),
    "everyone quiet now": (
        quiet_first(NIGHT), NIGHT, Upcoming("planned", None, None, NOON, "quiet hours until 2026-11-26 12:00:00 UTC")),
    "resolved after an answer: its resolved call": (
        answered_with_resolved_call, DAY,
        Upcoming("queued", "bob", NUMBERS["bob"], DAY, None, attempt=2, kind="resolved", step=0)),
    "answered: no further call": (answered, DAY, None),
    "route missing from a replica's config": (
        route_missing, DAY,
        alice("queued", DAY + timedelta(seconds=30), "route chain missing from a replica's config since "
              "2026-11-26 15:00:00 UTC: looked at again at 2026-11-26 15:00:30 UTC")),
}


@pytest.mark.parametrize(("build", "now", "expected"), CASES.values(), ids=CASES.keys())
def test_upcoming(build: Callable[[], Page], now: datetime, expected: Upcoming | None) -> None:
    page = build()
    before = copy.deepcopy(page)
    assert upcoming(page, CONFIG, now) == expected
    assert page == before and (page.step, page.round, page.attempts_in_step) == (
        before.step, before.round, before.attempts_in_step)


def test_upcoming_json_masks_the_number_and_counts_steps_from_one() -> None:
    nxt = upcoming(queued(HELD_THROTTLED)(), CONFIG, DAY)
    assert nxt is not None
    assert nxt.to_json() == {"state": "queued", "attempt": 1, "kind": "page", "contact": "alice",
                             "number": "+14*****0101", "step": 1, "reason": None,
                             "at": "2026-11-26T15:09:00+00:00", "held": "throttled until 2026-11-26 15:09:00 UTC"}
