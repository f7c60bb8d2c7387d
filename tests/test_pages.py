"""The escalation state machine of pages.py on its own: next_call, record_outcome, resolve, cancel_queued.

Every case is a row: a page at a fixed instant with a config built here, the function, and the whole state
that matters afterwards (page state, position in the chain, due_at, each call's state).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from alert2voice.alertmanager import parse_payload
from alert2voice.config_file import parse_config
from alert2voice.pages import (
    CALL_OUTCOMES,
    OPEN_CALL_STATES,
    REACHED,
    UNSENT_CALL_STATES,
    Call,
    CallState,
    Page,
    PageState,
    cancel_queued,
    held_too_long,
    interval_after,
    new_page,
    next_call,
    record_outcome,
    resolve,
    route_of,
)
from alert2voice.routing import plan
from tests.support import alert, payload

DAY = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)    # alice 07:00 PST, erin 15:00 UTC: nobody quiet
NIGHT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # alice 02:00 PST (quiet until DAY), erin quiet until NOON
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)

PROVIDER = 'provider: {service_key: k, caller_id: "+15550001234", callback: {allow_unauthenticated: true}}\n'
CONFIG = parse_config(PROVIDER + """
contacts:
  alice: {number: "+14155550101", timezone: America/Los_Angeles,
          quiet_hours: {from: "22:00", to: "07:00", unless_severity: [critical]}}
  bob: {number: "+442071838750", timezone: Europe/London}
  carol: {number: "+14155550102"}
  erin: {number: "+14155550103", quiet_hours: {from: "08:00", to: "12:00"}}
rotations:
  primary: {members: [bob, carol], shift: 1d, start: "2026-11-01T00:00:00"}   # carol on 2026-11-26
  unstarted: {members: [bob], shift: 1d, start: "2027-01-01T00:00:00"}       # nobody on call before 2027
routes:
  - name: chain
    escalation:
      - {call: alice, attempts: 2, interval: 3m}
      - {call: bob, attempts: 1, interval: 5m}
    repeat: 1
    send_resolved: true
  - name: all-quiet
    escalation:
      - {call: alice, interval: 4m}
      - {call: erin, attempts: 2, interval: 1m}
    repeat: 1
  - name: rota
    escalation:
      - {call: "rotation:primary", interval: 2m}
      - {call: "rotation:unstarted", interval: 9m}
      - {call: bob, interval: 5m}
  - name: quiet-or-nobody
    escalation:
      - {call: alice}
      - {call: "rotation:unstarted"}
  - name: nobody
    escalation: [{call: "rotation:unstarted", attempts: 3}]
    repeat: 2
  - name: empty
    escalation: []
""", file="pages.yaml", env={})

NUMBERS = {name: contact.number for name, contact in CONFIG.contacts.items()}
KEY = "0123456789abcdef" * 4
NONCE = "0badcafe"
ID_PREFIX = "a2v-0123456789abcdef01234567-0badcafe-"  # correlation_id(KEY, NONCE, n) without the n


def make_page(route: str = "chain", *, severities: tuple[str, ...] = (), state: PageState = PageState.ACTIVE,
              at: tuple[int, int, int] = (0, 0, 0), due_at: datetime | None = DAY, nonce: str = NONCE) -> Page:
    """A page of `route` at position `at` (step, round, attempts_in_step), without calls."""
    step, rnd, attempts = at
    return Page(key=KEY, route=route, group_key="{}:{}", received_at=NIGHT, alerts=[], group={},
                identities=["alertname=HighCPU"], claims=[], severities=sorted(severities), state=state,
                step=step, round=rnd, attempts_in_step=attempts, due_at=due_at, nonce=nonce)


def add_call(page: Page, contact: str, state: CallState, *, step: int = 0, message_id: bool = True,
             kind: str = "page", storm: tuple[str, ...] = ()) -> Call:
    """Append a call of `page` in `state`; placed calls (message_id) carry a messageId."""
    n = len(page.calls) + 1
    call = Call(attempt=n, correlation_id=f"earlier-{n}", idempotency_key=f"key-{n}", contact=contact,
                number=NUMBERS[contact], step=step, round=page.round, created_at=NIGHT, kind=kind, state=state,
                message_id=f"msg-{n}" if message_id else None, storm=list(storm),
                ended_at=None if state in OPEN_CALL_STATES else NIGHT)
    page.calls.append(call)
    return call


def position(page: Page) -> tuple[PageState, int, int, int, datetime | None]:
    return page.state, page.step, page.round, page.attempts_in_step, page.due_at


def queued(page: Page, call: Call, contact: str, step: int, now: datetime, kind: str = "page") -> None:
    """`call` is the page's newest call: a fresh attempt of `kind` to `contact` of `step`, queued at `now`."""
    attempt = len(page.calls)
    assert page.calls[-1] is call
    assert call.idempotency_key and call.idempotency_key not in {c.idempotency_key for c in page.calls[:-1]}
    assert call == Call(attempt=attempt, correlation_id=call.correlation_id, idempotency_key=call.idempotency_key,
                        contact=contact, number=NUMBERS[contact], step=step, round=page.round, created_at=now,
                        kind=kind)
    assert call.correlation_id == ID_PREFIX + ("r" if kind == "resolved" else "") + str(attempt)


# ------------------------------------------------------------------------------------------ next_call


@dataclass(frozen=True)
class Next:
    """next_call from a position: who is called (None: nobody) and where the page is afterwards."""

    route: str
    now: datetime
    at: tuple[int, int, int]                        # step, round, attempts_in_step before
    calls: str | None                               # the contact called
    after: tuple[PageState, int, int, int, datetime | None]
    severities: tuple[str, ...] = ()
    earlier: int = 0                                # page calls already made (no_answer)


A = PageState.ACTIVE
NEXT = {
    "first attempt of the first step": Next("chain", DAY, (0, 0, 0), "alice", (A, 0, 0, 1, DAY)),
    "second attempt of a two-attempt step": Next("chain", DAY, (0, 0, 1), "alice", (A, 0, 0, 2, DAY), earlier=1),
    "attempts used up: the next step": Next("chain", DAY, (0, 0, 2), "bob", (A, 1, 0, 1, DAY), earlier=2),
    "last step done: a repeat round from step 1": Next("chain", DAY, (1, 0, 1), "alice", (A, 0, 1, 1, DAY),
                                                       earlier=3),
    "last step of the last round done: exhausted": Next("chain", DAY, (1, 1, 1), None,
                                                        (PageState.EXHAUSTED, 0, 2, 0, None), earlier=6),
    "contact in quiet hours: step skipped": Next("chain", NIGHT, (0, 0, 0), "bob", (A, 1, 0, 1, NIGHT)),
    "quiet in the middle of a step: rest of it skipped": Next("chain", NIGHT, (0, 0, 1), "bob", (A, 1, 0, 1, NIGHT),
                                                              earlier=1),
    "quiet hours yield to an exempt severity": Next("chain", NIGHT, (0, 0, 0), "alice", (A, 0, 0, 1, NIGHT),
                                                    severities=("critical",)),
    "one exempt severity among others is enough": Next("chain", NIGHT, (0, 0, 0), "alice", (A, 0, 0, 1, NIGHT),
                                                       severities=("critical", "warning")),
    "a severity not exempt: still quiet": Next("chain", NIGHT, (0, 0, 0), "bob", (A, 1, 0, 1, NIGHT),
                                               severities=("warning",)),
    "rotation: whoever is on call": Next("rota", DAY, (0, 0, 0), "carol", (A, 0, 0, 1, DAY)),
    "rotation with nobody on call: step skipped": Next("rota", DAY, (1, 0, 0), "bob", (A, 2, 0, 1, DAY), earlier=1),
    "quiet step skipped in a repeat round": Next("chain", NIGHT, (1, 0, 1), "bob", (A, 1, 1, 1, NIGHT), earlier=1),
    "everyone quiet, nobody called yet: waits for the earliest window end": Next(
        "all-quiet", NIGHT, (0, 0, 0), None, (A, 0, 0, 0, NOON)),
    "everyone quiet from a later step: waits and starts over": Next(
        "all-quiet", NIGHT, (1, 0, 0), None, (A, 0, 0, 0, NOON)),
    "quiet and nobody on call: waits for the quiet window": Next(
        "quiet-or-nobody", NIGHT, (0, 0, 0), None, (A, 0, 0, 0, DAY)),
    "everyone quiet after calls were made: exhausted, no wait": Next(
        "all-quiet", NIGHT, (0, 1, 0), None, (PageState.EXHAUSTED, 0, 2, 0, None), earlier=4),
    "nobody on call in any round: exhausted, no wait": Next(
        "nobody", DAY, (0, 0, 0), None, (PageState.EXHAUSTED, 0, 3, 0, None)),
    "no steps at all: exhausted": Next("empty", DAY, (0, 0, 0), None, (PageState.EXHAUSTED, 0, 1, 0, None)),
    "past the end of a chain a reload shortened: the next round": Next(
        "chain", DAY, (2, 0, 0), "alice", (A, 0, 1, 1, DAY), earlier=3),
    "route removed by a reload: cancelled where it stood": Next(
        "removed", DAY, (1, 0, 1), None, (PageState.CANCELLED, 1, 0, 1, None), earlier=3),
}


@pytest.mark.parametrize("case", NEXT.values(), ids=NEXT.keys())
def test_next_call(case: Next) -> None:
    page = make_page(case.route, severities=case.severities, at=case.at, due_at=case.now)
    for _ in range(case.earlier):
        add_call(page, "bob", CallState.NO_ANSWER)
    before = copy.deepcopy(page.calls)
    call = next_call(page, CONFIG, case.now)
    assert position(page) == case.after
    if case.calls is None:
        assert call is None
        assert page.calls == before
    else:
        assert call is not None
        assert page.calls[:-1] == before
        queued(page, call, case.calls, case.after[1], case.now)


@dataclass(frozen=True)
class Walk:
    """A page walked to its end, every call unanswered: (contact, step, round, minutes after start) per call."""

    route: str
    start: datetime
    calls: list[tuple[str, int, int, int]]
    ends: tuple[PageState, int]                     # final state, minutes after start it was reached
    severities: tuple[str, ...] = ()


WALKS = {
    "two attempts, next step, one repeat round": Walk(
        "chain", DAY, [("alice", 0, 0, 0), ("alice", 0, 0, 3), ("bob", 1, 0, 6),
                       ("alice", 0, 1, 11), ("alice", 0, 1, 14), ("bob", 1, 1, 17)], (PageState.EXHAUSTED, 22)),
    "night: the quiet contact skipped in every round": Walk(
        "chain", NIGHT, [("bob", 1, 0, 0), ("bob", 1, 1, 5)], (PageState.EXHAUSTED, 10)),
    "night, critical: nobody skipped": Walk(
        "chain", NIGHT, [("alice", 0, 0, 0), ("alice", 0, 0, 3), ("bob", 1, 0, 6),
                         ("alice", 0, 1, 11), ("alice", 0, 1, 14), ("bob", 1, 1, 17)], (PageState.EXHAUSTED, 22),
        severities=("critical",)),
    "all quiet: waits until noon, then calls whoever woke first": Walk(
        "all-quiet", NIGHT, [("erin", 1, 0, 120), ("erin", 1, 0, 121), ("erin", 1, 1, 122), ("erin", 1, 1, 123)],
        (PageState.EXHAUSTED, 124)),
    "rotation, nobody on the next one, then a contact": Walk(
        "rota", DAY, [("carol", 0, 0, 0), ("bob", 2, 0, 2)], (PageState.EXHAUSTED, 7)),
    "nobody on call anywhere": Walk("nobody", DAY, [], (PageState.EXHAUSTED, 0)),
}


@pytest.mark.parametrize("case", WALKS.values(), ids=WALKS.keys())
def test_walk_to_the_end(case: Walk) -> None:
    page = make_page(case.route, severities=case.severities, due_at=case.start)
    made = []
    while page.state is PageState.ACTIVE:
        now = page.due_at
        assert now is not None
        call = next_call(page, CONFIG, now)
        if call is not None:
            assert page.due_at == now
            made.append((call.contact, call.step, call.round, (now - case.start) // MIN))
            assert record_outcome(page, call, CallState.NO_ANSWER, CONFIG, now)
    assert made == case.calls
    assert (page.state, (now - case.start) // MIN, page.due_at) == (*case.ends, None)
    assert [c.correlation_id for c in page.calls] == [ID_PREFIX + str(n) for n in range(1, len(made) + 1)]
    assert len({c.idempotency_key for c in page.calls}) == len(made)


@pytest.mark.parametrize(("nonce", "prefix"), [
    (NONCE, ID_PREFIX),
    ("", "a2v-0123456789abcdef01234567-"),  # a page stored before nonces existed
], ids=["with the admission's nonce", "page stored before nonces"])
def test_correlation_ids_are_the_key_nonce_and_attempt(nonce: str, prefix: str) -> None:
    page = make_page(nonce=nonce)
    first = next_call(page, CONFIG, DAY)
    assert first is not None
    add_call(page, "bob", CallState.NO_ANSWER)
    second = next_call(page, CONFIG, DAY)
    assert second is not None
    assert [first.correlation_id, second.correlation_id] == [prefix + "1", prefix + "3"]
    assert len(second.correlation_id) <= 50


# -------------------------------------------------------------------------------------- record_outcome


@dataclass(frozen=True)
class Outcome:
    """A call's outcome on an active page: the page's state and how long until its next call (None: done)."""

    outcome: CallState
    state: PageState
    wait: timedelta | None
    step: int = 0                                   # the call's step: its interval is the wait
    attempts: int = 1                               # the page's attempts_in_step afterwards


OUTCOMES = {
    "answered: page answered, nothing more due": Outcome(CallState.ANSWERED, PageState.ANSWERED, None),
    "acknowledged: page acknowledged": Outcome(CallState.ACKNOWLEDGED, PageState.ACKNOWLEDGED, None),
    "no_answer: the step's interval": Outcome(CallState.NO_ANSWER, A, 3 * MIN),
    "no_answer on step 2: its own interval": Outcome(CallState.NO_ANSWER, A, 5 * MIN, step=1),
    "busy: the step's interval": Outcome(CallState.BUSY, A, 3 * MIN),
    "voicemail: the step's interval": Outcome(CallState.VOICEMAIL, A, 3 * MIN),
    "failed: moves on at once": Outcome(CallState.FAILED, A, timedelta(0)),
    "failed on step 2: at once too": Outcome(CallState.FAILED, A, timedelta(0), step=1),
    "cancelled (not recorded through here today): not reached, the interval": Outcome(CallState.CANCELLED, A, 3 * MIN),
    "throttled: at once, the step's other attempt skipped (same number)": Outcome(CallState.THROTTLED, A,
                                                                                   timedelta(0), attempts=2),
    "throttled on step 2: at once too": Outcome(CallState.THROTTLED, A, timedelta(0), step=1),
}
OPEN = {"from queued (outcome before the 202)": CallState.QUEUED, "from accepted": CallState.ACCEPTED,
        "from unknown (a try's answer lost; its receipt settles it)": CallState.UNKNOWN}
STORM = {"own call": (), "storm summary call": (KEY, "f" * 64)}


def test_the_tables_cover_every_call_state() -> None:
    """A new call state needs its rows: an outcome in OUTCOMES, an open state in OPEN."""
    assert sorted({c.outcome.value for c in OUTCOMES.values()}) == sorted(CALL_OUTCOMES)
    assert set(OPEN.values()) == OPEN_CALL_STATES


@pytest.mark.parametrize("storm", STORM.values(), ids=STORM.keys())
@pytest.mark.parametrize("was", OPEN.values(), ids=OPEN.keys())
@pytest.mark.parametrize("case", OUTCOMES.values(), ids=OUTCOMES.keys())
def test_record_outcome(case: Outcome, was: CallState, storm: tuple[str, ...]) -> None:
    page = make_page(at=(case.step, 0, 1))
    earlier = add_call(page, "alice", CallState.NO_ANSWER)
    call = add_call(page, "bob", was, step=case.step, message_id=was is CallState.ACCEPTED, storm=storm)
    now = DAY + 7 * MIN
    assert record_outcome(page, call, case.outcome, CONFIG, now)
    due = None if case.wait is None else now + case.wait
    assert position(page) == (case.state, case.step, 0, case.attempts, due)
    assert (call.state, call.ended_at, call.storm, page.updated_at) == (case.outcome, now, list(storm), now)
    assert (earlier.state, earlier.ended_at) == (CallState.NO_ANSWER, NIGHT)


ENDED = [s for s in CallState if s not in OPEN_CALL_STATES]


@pytest.mark.parametrize("second", [CallState.ANSWERED, CallState.NO_ANSWER, CallState.FAILED],
                         ids=lambda s: f"then {s.value}")
@pytest.mark.parametrize("first", ENDED, ids=lambda s: f"ended {s.value}")
def test_second_outcome_of_an_ended_call_changes_nothing(first: CallState, second: CallState) -> None:
    page = make_page(at=(0, 0, 1), due_at=DAY + 3 * MIN)
    call = add_call(page, "alice", first)
    before = copy.deepcopy(page)
    assert not record_outcome(page, call, second, CONFIG, DAY + MIN)
    assert page == before


@pytest.mark.parametrize(("kind", "state"), [
    ("resolved", PageState.RESOLVED),
    ("resolved", PageState.ANSWERED),
    ("test", PageState.ACTIVE),
], ids=["resolved call of a resolved page", "resolved call of an answered page", "test call"])
@pytest.mark.parametrize("outcome", [CallState.ANSWERED, CallState.NO_ANSWER, CallState.FAILED, CallState.THROTTLED],
                         ids=lambda s: s.value)
def test_outcome_of_a_call_that_is_not_a_page_call(kind: str, state: PageState, outcome: CallState) -> None:
    page = make_page(state=state, at=(1, 0, 1), due_at=DAY)
    earlier = add_call(page, "bob", CallState.NO_ANSWER, step=1)
    call = add_call(page, "bob", CallState.ACCEPTED, step=1, kind=kind)
    assert record_outcome(page, call, outcome, CONFIG, DAY + MIN)
    assert position(page) == (state, 1, 0, 1, DAY)
    assert (call.state, call.ended_at, page.updated_at) == (outcome, DAY + MIN, DAY + MIN)
    assert earlier.state is CallState.NO_ANSWER


@dataclass(frozen=True)
class Late:
    """An outcome for a call still ringing when its page stopped escalating."""

    state: PageState
    outcome: CallState
    after: PageState


LATE = {
    "resolved page, no_answer: stays resolved": Late(PageState.RESOLVED, CallState.NO_ANSWER, PageState.RESOLVED),
    "resolved page, failed: stays resolved": Late(PageState.RESOLVED, CallState.FAILED, PageState.RESOLVED),
    "cancelled page, busy: stays cancelled": Late(PageState.CANCELLED, CallState.BUSY, PageState.CANCELLED),
    # Someone heard it after all: the page says so (resolved_at still tells when its alerts resolved).
    "resolved page, answered: answered": Late(PageState.RESOLVED, CallState.ANSWERED, PageState.ANSWERED),
    "cancelled page, acknowledged: acknowledged": Late(PageState.CANCELLED, CallState.ACKNOWLEDGED,
                                                       PageState.ACKNOWLEDGED),
}


@pytest.mark.parametrize("case", LATE.values(), ids=LATE.keys())
def test_outcome_on_a_page_no_longer_active(case: Late) -> None:
    page = make_page(state=case.state, at=(1, 0, 1), due_at=None)
    call = add_call(page, "bob", CallState.ACCEPTED, step=1)
    assert record_outcome(page, call, case.outcome, CONFIG, DAY)
    assert position(page) == (case.after, 1, 0, 1, None)
    assert (call.state, call.ended_at) == (case.outcome, DAY)


# A page answered after its alerts resolved: the resolved call resolve() queued still goes out (or is polled).
@pytest.mark.parametrize(("notice_state", "notice_due"), [
    (CallState.QUEUED, DAY),
    (CallState.ACCEPTED, DAY + 2 * MIN),  # placed by the dispatcher first: due for its deadline poll
], ids=["resolved call still queued", "resolved call placed"])
@pytest.mark.parametrize("reached", sorted(REACHED), ids=lambda s: s.value)
def test_answer_after_resolve_leaves_the_resolved_call_due(reached: CallState, notice_state: CallState,
                                                           notice_due: datetime) -> None:
    page = make_page(at=(1, 0, 1), due_at=DAY)
    ringing = add_call(page, "bob", CallState.ACCEPTED, step=1)
    resolve(page, DAY, send_resolved=True)
    notice = page.calls[-1]
    assert (notice.kind, notice.state, page.due_at) == ("resolved", CallState.QUEUED, DAY)
    notice.state, page.due_at = notice_state, notice_due
    assert record_outcome(page, ringing, reached, CONFIG, DAY + MIN)
    assert (notice.state, page.due_at) == (notice_state, notice_due)


# ------------------------------------------------------------------------------------------ held_too_long


@dataclass(frozen=True)
class Held:
    """A throttle tier holds a queued call (contact, step, round) created at `now` until `now + held`: whether it
    gives way (recorded throttled) rather than wait. throttle.max_hold is the default 1m."""

    contact: str
    step: int
    held: timedelta
    gives_way: bool
    route: str = "chain"
    round: int = 0
    kind: str = "page"
    now: datetime = DAY
    severities: tuple[str, ...] = ()


SEC = timedelta(seconds=1)
HELD = {
    "held up to max_hold: waits": Held("alice", 0, MIN, False),
    "held past max_hold, someone else next: moves on": Held("alice", 0, MIN + SEC, True),
    "held for 9 minutes (issue 20): moves on": Held("alice", 0, 9 * MIN, True),
    "last step of the first round: the next round's first person": Held("bob", 1, 9 * MIN, True),
    "last call of the chain: nobody else, waits for the limit": Held("bob", 1, 9 * MIN, False, round=1),
    "only the same number later (alice quiet at night): waits": Held("bob", 1, 9 * MIN, False, now=NIGHT),
    "a rotation, nobody on the next step, a contact after it: moves on": Held("carol", 0, 9 * MIN, True,
                                                                              route="rota"),
    "route removed by a reload: waits (the loop cancels the page)": Held("bob", 0, 9 * MIN, False,
                                                                        route="removed"),
    "resolved call within max_hold: waits": Held("bob", 1, MIN, False, kind="resolved"),
    "resolved call past max_hold: dropped, even as the last call": Held("bob", 1, MIN + SEC, True, round=1,
                                                                        kind="resolved"),
}


@pytest.mark.parametrize("case", HELD.values(), ids=HELD.keys())
def test_held_too_long(case: Held) -> None:
    page = make_page(case.route, severities=case.severities, at=(case.step, case.round, 1), due_at=case.now)
    call = add_call(page, case.contact, CallState.QUEUED, step=case.step, message_id=False, kind=case.kind)
    call.created_at = case.now
    before = copy.deepcopy(page)
    assert held_too_long(page, call, case.now + case.held, CONFIG, case.now + 2 * SEC) is case.gives_way
    assert page == before  # a pure look ahead: the page is not moved


# ------------------------------------------------------------------------------------- interval, route


@pytest.mark.parametrize(("route", "step", "interval"), [
    ("chain", 0, 3 * MIN),
    ("chain", 1, 5 * MIN),
    ("rota", 1, 9 * MIN),
    ("chain", 2, timedelta(0)),     # a reload shortened the chain under the call
    ("removed", 0, timedelta(0)),
], ids=["first step", "second step", "rotation step", "step no longer in the route", "route removed"])
def test_interval_after(route: str, step: int, interval: timedelta) -> None:
    page = make_page(route)
    call = add_call(page, "bob", CallState.NO_ANSWER, step=step)
    assert interval_after(CONFIG, page, call) == interval
    assert route_of(CONFIG, page) is CONFIG.route(route)
    assert (route_of(CONFIG, page) is None) == (route == "removed")


def test_route_of_finds_a_heartbeat_route() -> None:
    config = parse_config(PROVIDER + """
contacts: {bob: {number: "+442071838750"}}
heartbeats: [{name: cron, timeout: 5m, escalation: [{call: bob, interval: 2m}]}]
""", file="heartbeat.yaml", env={})
    page = make_page("heartbeat:cron")
    route = route_of(config, page)
    assert route is not None
    assert (route.name, [s.call for s in route.escalation]) == ("heartbeat:cron", ["bob"])
    assert interval_after(config, page, add_call(page, "bob", CallState.BUSY)) == 2 * MIN


# -------------------------------------------------------------------------------------------- resolve

Q, ACC, NA, F, ANS, ACK, X = (CallState.QUEUED, CallState.ACCEPTED, CallState.NO_ANSWER, CallState.FAILED,
                              CallState.ANSWERED, CallState.ACKNOWLEDGED, CallState.CANCELLED)
STEP_OF = {"alice": 0, "bob": 1}


@dataclass(frozen=True)
class Resolve:
    """resolve() on a page with calls (contact, state, has a messageId): what is cancelled and who hears of it."""

    state: PageState
    calls: list[tuple[str, CallState, bool]]
    send_resolved: bool
    after: PageState
    states: list[CallState]                         # each earlier call's state afterwards
    notice: str | None                              # who gets the resolved call


RESOLVES = {
    "nothing called yet": Resolve(A, [], True, PageState.RESOLVED, [], None),
    "queued first call cancelled; never placed, so no resolved call": Resolve(
        A, [("alice", Q, False)], True, PageState.RESOLVED, [X], None),
    "queued retry cancelled; resolved call to the last one called": Resolve(
        A, [("alice", NA, True), ("bob", Q, False)], True, PageState.RESOLVED, [NA, X], "alice"),
    "ringing call left alone; resolved call to its callee": Resolve(
        A, [("alice", NA, True), ("bob", ACC, True)], True, PageState.RESOLVED, [NA, ACC], "bob"),
    "without send_resolved: nobody hears of it": Resolve(
        A, [("alice", NA, True), ("bob", Q, False)], False, PageState.RESOLVED, [NA, X], None),
    "a call that failed without a messageId is not the last one called": Resolve(
        A, [("alice", NA, True), ("bob", F, False)], True, PageState.RESOLVED, [NA, F], "alice"),
    "answered page stays answered; the one who answered hears of it": Resolve(
        PageState.ANSWERED, [("bob", NA, True), ("alice", ANS, True)], True, PageState.ANSWERED, [NA, ANS], "alice"),
    "the one who answered wins over a later call": Resolve(
        PageState.ANSWERED, [("alice", ANS, True), ("bob", NA, True)], True, PageState.ANSWERED, [ANS, NA], "alice"),
    "acknowledged page stays acknowledged": Resolve(
        PageState.ACKNOWLEDGED, [("bob", ACK, True)], True, PageState.ACKNOWLEDGED, [ACK], "bob"),
    "answered page without send_resolved: untouched but resolved_at": Resolve(
        PageState.ANSWERED, [("bob", ANS, True)], False, PageState.ANSWERED, [ANS], None),
    "exhausted page stays exhausted; the last one called hears of it": Resolve(
        PageState.EXHAUSTED, [("alice", NA, True), ("bob", NA, True)], True, PageState.EXHAUSTED, [NA, NA], "bob"),
}


@pytest.mark.parametrize("case", RESOLVES.values(), ids=RESOLVES.keys())
def test_resolve(case: Resolve) -> None:
    due = DAY if case.state is A else None
    page = make_page(state=case.state, at=(1, 0, 1), due_at=due)
    for contact, state, placed in case.calls:
        add_call(page, contact, state, step=STEP_OF[contact], message_id=placed)
    was_queued = [c for c in page.calls if c.state is Q]
    now = DAY + 2 * MIN
    cancelled = resolve(page, now, send_resolved=case.send_resolved)
    assert cancelled == was_queued and all(a is b for a, b in zip(cancelled, was_queued, strict=True))
    assert all((c.ended_at, c.error) == (now, None) for c in cancelled)
    assert [c.state for c in page.calls[:len(case.calls)]] == case.states
    assert (page.resolved_at, page.updated_at) == (now, now)
    if case.notice is None:
        assert len(page.calls) == len(case.calls)
        assert position(page) == (case.after, 1, 0, 1, None)
    else:
        queued(page, page.calls[-1], case.notice, STEP_OF[case.notice], now, kind="resolved")
        assert position(page) == (case.after, 1, 0, 1, now)


# --------------------------------------------------------------------------------------- cancel_queued


@pytest.mark.parametrize("why", [None, "route removed by a config reload"], ids=["no reason", "with a reason"])
def test_cancel_queued_cancels_only_calls_not_knowingly_sent(why: str | None) -> None:
    page = make_page()
    for n, state in enumerate([CallState.QUEUED, *CallState]):
        add_call(page, "bob", state, kind="page" if n % 2 else "resolved")
    before = copy.deepcopy(page.calls)
    cancelled = cancel_queued(page, DAY, why)
    assert [c.attempt for c in cancelled] == [c.attempt for c in before if c.state in UNSENT_CALL_STATES]
    for call, was in zip(page.calls, before, strict=True):
        if was.state in UNSENT_CALL_STATES:
            assert (call.state, call.ended_at, call.error) == (X, DAY, why)
            assert call in cancelled
        else:
            assert call == was
    assert position(page) == (A, 0, 0, 0, DAY)


# -------------------------------------------------------------------------------------------- new_page


def test_new_page_is_due_at_once_with_its_own_nonce() -> None:
    alerts = [alert({"alertname": "HighCPU", "severity": sev}) for sev in ("warning", "critical")]
    planned = plan(CONFIG, parse_payload(payload(*alerts, group_key="{}:{}"))).pages[0]
    group = {"receiver": "voice"}
    page, again = new_page(planned, group, DAY), new_page(planned, group, DAY)
    assert (page.key, page.route, page.group_key, page.group) == (planned.key, "chain", "{}:{}", group)
    assert (page.severities, page.identities, page.claims) == (
        ["critical", "warning"], list(planned.identities), list(planned.claims))
    assert [a["labels"]["severity"] for a in page.alerts] == ["warning", "critical"]
    assert (page.received_at, page.updated_at, page.resolved_at) == (DAY, DAY, None)
    assert position(page) == (A, 0, 0, 0, DAY)
    assert page.calls == []
    assert re.fullmatch(r"[0-9a-f]{8}", page.nonce)
    assert page.nonce != again.nonce
