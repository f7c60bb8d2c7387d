"""Webex Connect's words for how a call goes: its spellings made one, and what each means in receipts, events, polls.

The three tables below are the only place the platform's status names meet our call states (§ numbers: the Webex
Connect voice v1 reference the client was built from). They differ where the platform means different things by
the same word in different places; each difference is commented where it is made, and tests/test_statuses.py
pins them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from ..pages import CallState


def normalize_status(value: str) -> str:
    """A provider status or event name in one spelling, whatever its case: 'Message Expired' -> 'MESSAGE_EXPIRED'."""
    return "_".join(value.strip().upper().split())


# ---- Delivery receipts of POST /v1/voice/messages (reference §4): deliveryStatus -> outcome; None: not final.

RECEIPTS: dict[str, CallState | None] = {
    "OFFERED": None,
    "ACCEPTED": None,
    "ANSWERED": CallState.ANSWERED,
    "TROMBONE_CONNECTED": None,
    # Not the end, unlike in a poll: only the patched leg ended; the call's own drop receipts follow it.
    "TROMBONE_RELEASED": None,
    # Documented as `Failed` 7005 (request expired, a destination without "+"): a poll says MESSAGE_EXPIRED.
    "FAILED": CallState.FAILED,
}
# A drop: final only with what comes next. Unanswered, REJECTED follows at the same timestamp and carries the
# verdict; answered, the ANSWERED receipt already gave it. If the REJECTED never comes, poll after DROP_GRACE.
RECEIPT_DROPS = frozenset({"DROPPED", "RELEASED", "DISCONNECTED"})
DROP_GRACE = timedelta(seconds=10)
# REJECTED is the only receipt whose `code` decides: 7402 busy, 7401 no answer (a poll's REJECTED has no code).
REJECTED = "REJECTED"
REJECTED_CODES: dict[str, CallState] = {"7402": CallState.BUSY, "7401": CallState.NO_ANSWER}


class Receipt(NamedTuple):
    """What a receipt's deliveryStatus says: its metric label, the final outcome (None: not yet), the drop grace."""

    label: str
    outcome: CallState | None
    grace: timedelta | None = None


def receipt(status: str, code: str | None) -> Receipt:
    """What a delivery receipt's deliveryStatus (any spelling) and code mean for its call."""
    key = normalize_status(status)
    if key == REJECTED:
        return Receipt("rejected", REJECTED_CODES.get(code or "", CallState.NO_ANSWER))
    if key in RECEIPT_DROPS:
        return Receipt(key.lower(), None, DROP_GRACE)
    if key not in RECEIPTS:
        return Receipt("unknown", None)
    return Receipt(key.lower(), RECEIPTS[key])


# ---- Call events of POST /v1/voice/calls (reference §5): event -> outcome; None: the call goes on.

COLLECTED_DIGITS = "COLLECTED_DIGITS"
CALL_EVENTS: dict[str, CallState | None] = {
    "OFFERED": None,
    "RINGING": None,
    # Not reached yet, unlike a receipt's or a poll's ANSWERED: a programmable call is reached by a keypress.
    "ANSWERED": None,
    COLLECTED_DIGITS: None,  # the digits decide (interactive.py)
    "PLAYED": None,
    "VMDETECTED": CallState.VOICEMAIL,
    # The call is over: whatever came before (an answer, a prompt) was no acknowledgement. Busy by its logbook
    # code (BUSY_CODES), else no answer; unlike a receipt's drop, nothing follows it.
    "DROPPED": CallState.NO_ANSWER,
}
DROPPED = "DROPPED"
# Logbook codes of a DROPPED event's error.code that mean busy: 1002 rejected/busy, 2003 subscriber busy.
BUSY_CODES = frozenset({"1002", "2003"})


def call_event(name: str, code: str | None) -> tuple[str, CallState | None]:
    """A call event's name (normalised) and error.code: its metric label and the final outcome (None: not yet)."""
    if name not in CALL_EVENTS:
        return "unknown", None
    if name == DROPPED and code in BUSY_CODES:
        return name.lower(), CallState.BUSY
    return name.lower(), CALL_EVENTS[name]


# ---- Polls: GET /v1/voice/calls/{id}'s status (reference §6), normalised once by classify_status_response().

POLLS: dict[str, CallState | None] = {
    "ANSWERED": CallState.ANSWERED,
    # No code in a poll: busy cannot be told from no answer.
    "REJECTED": CallState.NO_ANSWER,
    "MESSAGE_EXPIRED": CallState.FAILED,
    "FAILED": CallState.FAILED,  # not a documented poll status; the receipts' word for the same failure
    "TROMBONE_CONNECTED": None,  # still going on
}
# Final, unlike a receipt's drop: a poll sees only the last status, and nothing more will follow. Whether anyone
# answered is told by answeredTime. TROMBONE_RELEASED is one too here: no Released receipt will come after it.
POLL_DROPS = frozenset({"DROPPED", "RELEASED", "DISCONNECTED", "TROMBONE_RELEASED"})
# What a poll says while a call is connected: for a programmable call, still going on (see CALL_EVENTS).
CONNECTED = "ANSWERED"


def poll(status: str | None, answered: bool) -> CallState | None:
    """A polled status (as CallStatus.status holds it) as a final outcome; None while the call may still be going on."""
    if status is None:
        return None
    if status in POLL_DROPS:
        return CallState.ANSWERED if answered else CallState.NO_ANSWER
    return POLLS.get(status)
