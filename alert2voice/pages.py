"""Pages and calls: the records the store keeps, and the escalation state machine that moves them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from . import entropy
from .config import Config, RouteConfig
from .routing import PlannedPage, Target, correlation_id, resolve_step


class PageState(StrEnum):
    ACTIVE = "active"              # escalating: a call is queued, in progress, or the next one is due
    ANSWERED = "answered"          # someone heard it
    ACKNOWLEDGED = "acknowledged"  # someone pressed the acknowledgement digit
    EXHAUSTED = "exhausted"        # the whole chain (and its repeats) ran without reaching anyone
    RESOLVED = "resolved"          # every alert resolved before anyone was reached
    CANCELLED = "cancelled"        # its route disappeared in a reload
    SILENCED = "silenced"          # Alertmanager silenced or inhibited every firing alert of it before a call


FINAL_PAGE_STATES = frozenset(s for s in PageState if s is not PageState.ACTIVE)


class CallState(StrEnum):
    QUEUED = "queued"              # to be sent to the provider (also while retrying provider errors)
    ACCEPTED = "accepted"          # provider answered 202; waiting for the outcome
    UNKNOWN = "unknown"            # a try was sent and its answer lost (timeout, reset, 5xx): repeated byte for
                                   # byte, or settled by its receipts; never a new attempt by itself
    ANSWERED = "answered"
    ACKNOWLEDGED = "acknowledged"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"
    FAILED = "failed"              # provider rejected it, or retries gave up
    CANCELLED = "cancelled"
    THROTTLED = "throttled"        # a tier held it past throttle.max_hold: never sent (held_too_long)


OPEN_CALL_STATES = frozenset({CallState.QUEUED, CallState.UNKNOWN, CallState.ACCEPTED})
# Open calls the provider has not (knowingly) taken: their frozen request is (re)sent when the page is due.
UNSENT_CALL_STATES = frozenset({CallState.QUEUED, CallState.UNKNOWN})
REACHED = frozenset({CallState.ANSWERED, CallState.ACKNOWLEDGED})
# Not reached, and nothing to wait for: the page's next call is due at once, not after the step's interval.
MOVE_ON_AT_ONCE = frozenset({CallState.FAILED, CallState.THROTTLED})
CALL_OUTCOMES = tuple(s.value for s in CallState if s not in OPEN_CALL_STATES)


@dataclass
class Call:
    """One attempt to reach one contact; retries of the attempt reuse its correlationId and idempotency key."""

    attempt: int
    correlation_id: str
    idempotency_key: str
    contact: str
    number: str
    step: int
    round: int
    created_at: datetime
    kind: str = "page"             # page | resolved | test
    state: CallState = CallState.QUEUED
    message_id: str | None = None
    tries: int = 0
    accepted_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    polls: int = 0
    storm: list[str] = field(default_factory=list)  # pages sharing this call (a storm summary), this one included
    interactive: bool = False      # placed through /v1/voice/calls: only a keypress acknowledges it
    prompts: int = 0               # interactive: how often the message and its prompt were played
    misses: int = 0                # interactive: answers with no key, or a key not in the menu
    # The attempt's whole request, built once when the attempt was created (provider.CallRequest.to_dict(), and
    # for an interactive call what it says when answered): every try sends these bytes. None until frozen.
    request: dict[str, Any] | None = None
    # An unknown attempt no longer sent again (a repeat was refused, or retries gave up): until then its receipts
    # may still say what became of it; past it, it counts as not reached.
    settle_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN_CALL_STATES


# Why a queued call waits, as its Call.error says while it is held: the dispatcher writes these, and the API and
# the status page read them back (upcoming.py).
HELD_THROTTLED = "throttled"
HELD_STORM = "storm: held for a summary call"


@dataclass
class Page:
    """A route's page for a set of firing alerts, and every call made for it."""

    key: str
    route: str
    group_key: str
    received_at: datetime
    alerts: list[dict[str, Any]]
    group: dict[str, Any]
    identities: list[str]
    claims: list[str]
    severities: list[str]
    state: PageState = PageState.ACTIVE
    step: int = 0
    round: int = 0
    attempts_in_step: int = 0
    calls: list[Call] = field(default_factory=list)
    due_at: datetime | None = None
    resolved_at: datetime | None = None
    updated_at: datetime | None = None
    nonce: str = ""                # this admission's part of every correlationId (empty on pages stored before)
    route_missing_since: datetime | None = None  # when a replica first found its route missing from its config
    # Who acknowledged the page without answering a call of it (the API, the status page), when, how and why.
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_via: str | None = None  # api | web | phone
    acknowledged_comment: str | None = None
    reopened_at: datetime | None = None  # when routes[].ack_timeout last re-opened it (acknowledged, still firing)
    # The store's version when read: put() writes only over this one (0: new). Not part of what a page says.
    version: int = field(default=0, compare=False)
    # The store's epoch when read (Redis; "" elsewhere): a version read before the store lost its data never
    # matches again. Not part of what a page says either.
    epoch: str = field(default="", compare=False)

    @property
    def open_call(self) -> Call | None:
        return next((c for c in reversed(self.calls) if c.open), None)

    def call(self, correlation: str | None = None, message_id: str | None = None) -> Call | None:
        """The call with this correlationId or messageId."""
        for c in self.calls:
            if (correlation and c.correlation_id == correlation) or (message_id and c.message_id == message_id):
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Page:
        d = dict(d)
        d["calls"] = [Call(**c) for c in d.get("calls", [])]
        return cls(**d)


def new_nonce() -> str:
    """Eight random hex digits: what makes one admission's correlationIds its own."""
    return entropy.token_hex(4)


def new_page(planned: PlannedPage, group: dict[str, Any], now: datetime) -> Page:
    """A fresh page for a planned page, due at once, with its own correlationId nonce."""
    return Page(
        key=planned.key,
        route=planned.route.name,
        group_key=planned.group_key,
        received_at=now,
        alerts=[a.model_dump(mode="json") for a in planned.firing],
        group=group,
        identities=list(planned.identities),
        claims=list(planned.claims),
        severities=sorted(planned.severities),
        due_at=now,
        updated_at=now,
        nonce=new_nonce(),
    )


def _queue_call(page: Page, target: Target, now: datetime, kind: str = "page") -> Call:
    attempt = len(page.calls) + 1
    call = Call(
        attempt=attempt,
        correlation_id=correlation_id(page.key, page.nonce, attempt, kind="r" if kind == "resolved" else ""),
        idempotency_key=str(entropy.uuid4()),
        contact=target.contact or "",
        number=target.number or "",
        step=target.step,
        round=page.round,
        created_at=now,
        kind=kind,
    )
    page.calls.append(call)
    page.due_at = now
    return call


# Where a page is in its chain: (round, step, attempts made in the step).
Position = tuple[int, int, int]


def _walk(route: RouteConfig, config: Config, page: Page, at: Position,
          now: datetime) -> tuple[Position, Target | None, list[datetime]]:
    """From `at`, the next callable target past quiet or empty steps (None: the chain is exhausted), the
    position once it is called, and the ends of the quiet windows skipped on the way."""
    rnd, index, attempts = at
    quiet_until: list[datetime] = []
    while rnd <= route.repeat:
        while index < len(route.escalation):
            step = route.escalation[index]
            if attempts < step.attempts:
                target = resolve_step(config, index, step, now, page.severities)
                attempts += 1
                if target.contact is not None and not target.quiet:
                    return (rnd, index, attempts), target, quiet_until
                if target.quiet and target.contact in config.contacts:
                    hours = config.contacts[target.contact].quiet()
                    end = hours.ends_after(now) if hours else None
                    if end is not None:
                        quiet_until.append(end)
                # Quiet or nobody on call: this step is skipped, as if nobody answered.
                attempts = step.attempts
            index += 1
            attempts = 0
        rnd += 1
        index = 0
    return (rnd, index, attempts), None, quiet_until


def next_call(page: Page, config: Config, now: datetime) -> Call | None:
    """Queue the page's next attempt, walking the chain past quiet or empty steps; None when it is exhausted."""
    route = route_of(config, page)
    if route is None:
        page.state, page.due_at = PageState.CANCELLED, None
        return None
    (page.round, page.step, page.attempts_in_step), target, quiet_until = _walk(
        route, config, page, (page.round, page.step, page.attempts_in_step), now)
    if target is not None:
        return _queue_call(page, target, now)
    if quiet_until and not any(c.kind == "page" for c in page.calls):
        # Nobody was callable only because of quiet hours: wait for the first window to end, then start over.
        page.round = page.step = page.attempts_in_step = 0
        page.due_at = min(quiet_until)
        return None
    page.state, page.due_at = PageState.EXHAUSTED, None
    return None


def route_of(config: Config, page: Page) -> RouteConfig | None:
    """The page's route in the current config, or None when a reload removed it."""
    return config.route(page.route)


def interval_after(config: Config, page: Page, call: Call) -> timedelta:
    """How long to wait after `call` went unanswered before the next attempt (its step's interval)."""
    route = route_of(config, page)
    if route is None or call.step >= len(route.escalation):
        return timedelta(0)
    return route.escalation[call.step].interval


def record_outcome(page: Page, call: Call, outcome: CallState, config: Config, now: datetime) -> bool:
    """Record a call's final outcome and move the page on; False when the call had already ended."""
    if not call.open:
        return False
    call.state, call.ended_at = outcome, now
    page.updated_at = now
    if call.kind != "page":
        return True
    if outcome in REACHED:
        if page.state is not PageState.ACKNOWLEDGED:  # acknowledged (from the API, say) while it rang: it stays so
            page.state = PageState.ACKNOWLEDGED if outcome is CallState.ACKNOWLEDGED else PageState.ANSWERED
            if outcome is CallState.ACKNOWLEDGED:
                page.acknowledged_by, page.acknowledged_at, page.acknowledged_via = call.contact, now, "phone"
        if not any(c.open for c in page.calls):
            page.due_at = idle_until(page, config)  # (a resolved call queued meanwhile keeps the page due)
    elif page.state is PageState.ACTIVE:
        if outcome is CallState.THROTTLED:
            _end_step(page, call, config)
        wait = timedelta(0) if outcome in MOVE_ON_AT_ONCE else interval_after(config, page, call)
        page.due_at = now + wait
    return True


def _end_step(page: Page, call: Call, config: Config) -> None:
    """A throttled call ends its step: the step's other attempts would be held by the same limit."""
    route = route_of(config, page)
    if route is not None and (page.round, page.step) == (call.round, call.step) and call.step < len(route.escalation):
        page.attempts_in_step = route.escalation[call.step].attempts


def held_too_long(page: Page, call: Call, until: datetime, config: Config, now: datetime) -> bool:
    """Whether a call a throttle tier holds until `until` gives way now (recorded THROTTLED) rather than wait.

    It waits while `until` is within throttle.max_hold of the call's creation. Past that, a "resolved" call is
    dropped (it is information); a page call moves the page on, as if unanswered but at once, when the chain
    has someone else to call next (another number: the same one is held by the same limit). With nobody else,
    it waits for the limit: a page is never ended by a throttle without anyone called.
    """
    if until <= call.created_at + config.throttle.max_hold:
        return False
    if call.kind != "page":
        return True
    route = route_of(config, page)
    if route is None or call.step >= len(route.escalation):
        return False
    at: Position = (call.round, call.step, route.escalation[call.step].attempts)
    while True:
        at, target, _ = _walk(route, config, page, at, now)
        if target is None:
            return False
        if target.number != call.number:
            return True


def cancel_queued(page: Page, now: datetime, why: str | None = None) -> list[Call]:
    """Cancel the page's calls that were not sent yet, or not knowingly (unknown: a try's answer was lost, and a
    receipt for it is stale from now on); returns them (for the cancelled-calls metric)."""
    cancelled = [c for c in page.calls if c.state in UNSENT_CALL_STATES]
    for c in cancelled:
        c.state, c.ended_at = CallState.CANCELLED, now
        if why is not None:
            c.error = why
    return cancelled


def resolve(page: Page, now: datetime, *, send_resolved: bool) -> list[Call]:
    """Every alert of the page resolved: cancel what is pending (returned); queue the resolved call when due."""
    page.resolved_at = now
    page.updated_at = now
    was_active = page.state is PageState.ACTIVE
    cancelled = cancel_queued(page, now)
    if was_active:
        page.state = PageState.RESOLVED
        page.due_at = None
    page_calls = [c for c in page.calls if c.kind == "page" and c.message_id]
    if send_resolved and page_calls:
        answered = [c for c in page_calls if c.state in REACHED]
        who = (answered or page_calls)[-1]
        _queue_call(page, Target(who.step, who.contact, who.number, "resolved notice"), now, kind="resolved")
    return cancelled


class PageEnded(Exception):
    """A person's action on a page that has ended already (answered, resolved, exhausted, cancelled)."""

    def __init__(self, page: Page) -> None:
        self.state = page.state
        super().__init__(f"page {page.key[:12]} has ended already ({page.state.value})")


def acknowledge(page: Page, config: Config, now: datetime, *, by: str, via: str,
                comment: str | None = None) -> list[Call] | None:
    """Someone acknowledged the page without its phone: no further call, queued ones cancelled (returned), one in
    flight left to finish. None when it was acknowledged already (nothing changes); PageEnded when it ended."""
    if page.state is PageState.ACKNOWLEDGED:
        return None
    if page.state is not PageState.ACTIVE:
        raise PageEnded(page)
    cancelled = cancel_queued(page, now, f"acknowledged by {by}")
    page.state, page.updated_at = PageState.ACKNOWLEDGED, now
    page.acknowledged_by, page.acknowledged_at, page.acknowledged_via = by, now, via
    page.acknowledged_comment = comment
    if not any(c.open for c in page.calls):  # a call still ringing keeps the page due for its outcome (its poll)
        page.due_at = idle_until(page, config)
    return cancelled


def idle_until(page: Page, config: Config) -> datetime | None:
    """When a page with nothing to place or poll is due again: an acknowledged page whose route has an
    `ack_timeout` is looked at once it runs out (re-opened if its alerts still fire); else never."""
    route = route_of(config, page)
    if (page.state is PageState.ACKNOWLEDGED and page.resolved_at is None and page.acknowledged_at is not None
            and route is not None and route.ack_timeout is not None):
        return page.acknowledged_at + route.ack_timeout
    return None


def reopen(page: Page, config: Config, now: datetime) -> bool:
    """An acknowledged page whose alerts still fire `ack_timeout` after: active again, from its first step, with
    new correlationIds (a new nonce) — once per acknowledgement. False when it is not due for that."""
    due = idle_until(page, config)
    if due is None or now < due or any(c.open for c in page.calls):
        return False
    page.state, page.round, page.step, page.attempts_in_step = PageState.ACTIVE, 0, 0, 0
    page.nonce, page.due_at, page.updated_at = new_nonce(), now, now
    page.reopened_at = now
    page.acknowledged_by = page.acknowledged_at = page.acknowledged_via = page.acknowledged_comment = None
    return True


def end(page: Page, state: PageState, now: datetime, why: str) -> list[Call]:
    """End an active page without anyone reached (its route removed, its alerts silenced): queued calls cancelled
    (returned), nothing due any more."""
    cancelled = cancel_queued(page, now, why)
    page.state, page.due_at, page.updated_at = state, None, now
    return cancelled


def current_step(page: Page) -> tuple[int, int]:
    """The (round, step) the page is at: its open call's, else where its escalation stands (0-based)."""
    call = page.open_call
    return (call.round, call.step) if call is not None else (page.round, page.step)


def escalate(page: Page, now: datetime, *, by: str, step: int | None = None) -> list[Call] | None:
    """Skip to the next escalation step now: the open call is given up (cancelled, returned), the next is due at
    once. `step` (0-based), when given, is the step the person saw: already past it, nothing changes (None).
    PageEnded when the page ended."""
    if page.state is not PageState.ACTIVE:
        raise PageEnded(page)
    rnd, at = current_step(page)
    if step is not None and step != at:
        return None
    given_up = [c for c in page.calls if c.open]
    for c in given_up:
        c.state, c.ended_at, c.error = CallState.CANCELLED, now, f"escalated by {by}"
    # Past the last step, next_call's walk goes on to the next round (or finds the chain exhausted).
    page.round, page.step, page.attempts_in_step = rnd, at + 1, 0
    page.due_at, page.updated_at = now, now
    return given_up
