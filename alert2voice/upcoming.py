"""What happens next to a page: who its next call goes to, when, and why it waits, read from the page as stored."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .config import Config
from .logs import mask_number
from .pages import HELD_STORM, HELD_THROTTLED, Call, CallState, Page, PageState, next_call, route_of
from .routing import resolve_step
from .units import format_instant


@dataclass(frozen=True)
class Upcoming:
    """A page's next call: its open call, or the one its escalation would queue next (`state` "planned").

    `contact` is None when nobody is left to call; `held` says why the call waits past now, if it does.
    """

    state: str                  # queued | unknown | accepted (the open call) | planned (not queued yet)
    contact: str | None
    number: str | None
    at: datetime | None         # when it goes out (an accepted call: when its outcome is due, else polled)
    held: str | None = None
    attempt: int | None = None  # the open call's attempt; None while planned
    kind: str = "page"
    step: int | None = None     # 0-based, as on a call
    reason: str | None = None   # a planned call: why this contact (named in the step, on call in a rotation)

    def to_json(self) -> dict[str, Any]:
        """As GET /api/v1/pages/{key} gives it: the number masked, `step` counted from 1."""
        return {"state": self.state, "attempt": self.attempt, "kind": self.kind, "contact": self.contact,
                "number": mask_number(self.number) if self.number else None,
                "step": self.step + 1 if self.step is not None else None, "reason": self.reason,
                "at": self.at.isoformat() if self.at else None, "held": self.held}


def upcoming(page: Page, config: Config, now: datetime) -> Upcoming | None:
    """The page's next call and why it waits, or None when nothing more will be called for it.

    Read from the page alone (its open call's state and error, settle_at, the page's due_at): nothing is
    changed, so any replica shows the same thing whichever of them holds the page.
    """
    call = page.open_call
    if call is not None:
        nxt = _open(page, call, now)
    elif page.state is not PageState.ACTIVE or page.due_at is None:
        return None
    else:
        nxt = _planned(page, config, now, page.due_at)
    if page.route_missing_since is not None and page.due_at is not None and page.due_at > now:
        # A replica without the page's route leaves it for one that has it (dispatch/loop.py, _route_gone).
        nxt = replace(nxt, held=f"route {page.route} missing from a replica's config since "
                                f"{format_instant(page.route_missing_since)}: looked at again at "
                                f"{format_instant(page.due_at)}")
    return nxt


def _open(page: Page, call: Call, now: datetime) -> Upcoming:
    """The open call: sent at page.due_at, unless it is waiting on a limit, a lost answer or its outcome."""
    due = page.due_at
    until = format_instant(due)
    held: str | None = None
    if call.state is CallState.ACCEPTED:
        held = f"waiting for the outcome until {until}"
    elif call.state is CallState.UNKNOWN:
        held = (f"outcome unknown: waiting for receipts until {format_instant(call.settle_at)}"
                if call.settle_at is not None else f"outcome unknown: the same request is sent again at {until}")
    elif due is not None and due > now:
        if call.error == HELD_THROTTLED:
            held = f"throttled until {until}"
        elif call.error == HELD_STORM:
            held = f"storm: held for a summary until {until}"
        elif call.error:
            held = f"provider error ({call.error}): tried again at {until}"
    return Upcoming(call.state.value, call.contact, call.number, due, held, call.attempt, call.kind, call.step)


def _planned(page: Page, config: Config, now: datetime, due: datetime) -> Upcoming:
    """No call open: whom the escalation would queue when the page is due, and why it waits until then."""
    at = max(due, now)
    call, after = preview(page, config, at)
    if call is None:
        if after.state is PageState.CANCELLED:
            return Upcoming("planned", None, None, due, f"route {page.route} is not in this replica's config")
        if after.state is PageState.ACTIVE and after.due_at is not None:
            return Upcoming("planned", None, None, after.due_at, f"quiet hours until {format_instant(after.due_at)}")
        return Upcoming("planned", None, None, None, reason="nobody left to call: the page ends exhausted")
    held = None
    if due > now:
        # A page is due later with no call open for one of two reasons: an unanswered call's interval, or
        # quiet hours before its first call (pages.next_call waits for the first window to end).
        held = (f"next attempt after the interval at {format_instant(due)}" if any(c.kind == "page" for c in page.calls)
                else f"quiet hours until {format_instant(due)}")
    route = route_of(config, page)
    reason = resolve_step(config, call.step, route.escalation[call.step], at, page.severities).reason if route else None
    return Upcoming("planned", call.contact, call.number, at, held, step=call.step, reason=reason)


def preview(page: Page, config: Config, at: datetime) -> tuple[Call | None, Page]:
    """What pages.next_call would do at `at` (the one rule for whom a page calls next), done to a copy: the call it
    would queue, and the page after it. `page` itself is not changed."""
    trial = copy.deepcopy(page)
    return next_call(trial, config, at), trial
