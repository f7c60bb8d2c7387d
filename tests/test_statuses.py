"""The one Webex status vocabulary (provider/statuses.py): every documented status maps, and the tables differ only
where their comments say they do."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from alert2voice.pages import CallState
from alert2voice.provider import statuses
from alert2voice.simulator import rules

# The Webex Connect voice v1 reference, in its own spellings.
# §4: deliveryStatus of the delivery receipts of POST /v1/voice/messages.
DOCUMENTED_RECEIPTS = ["OFFERED", "ACCEPTED", "ANSWERED", "DROPPED", "REJECTED", "Released", "DISCONNECTED",
                       "TROMBONE_CONNECTED", "TROMBONE_RELEASED", "Failed"]
# §5: the events of a programmable call (POST /v1/voice/calls).
DOCUMENTED_CALL_EVENTS = ["ANSWERED", "COLLECTED_DIGITS", "PLAYED", "VMDETECTED", "DROPPED"]
# §6: the status of GET /v1/voice/calls/{sessionId}.
DOCUMENTED_POLLS = ["Answered", "Dropped", "Rejected", "Released", "Disconnected", "Trombone Connected",
                    "Trombone Released", "Message Expired"]
EVERY_NAME = {statuses.normalize_status(s) for s in DOCUMENTED_RECEIPTS + DOCUMENTED_CALL_EVENTS + DOCUMENTED_POLLS}


@pytest.mark.parametrize("status", DOCUMENTED_RECEIPTS)
def test_every_documented_receipt_maps(status):
    assert statuses.receipt(status, None).label == statuses.normalize_status(status).lower()


def test_every_receipt_the_simulator_sends_maps():
    sent = {status for sequence in rules.SEQUENCES.values() for instant in sequence for status, _, _ in instant}
    assert sent and all(statuses.receipt(s, None).label != "unknown" for s in sent)


@pytest.mark.parametrize("name", DOCUMENTED_CALL_EVENTS)
def test_every_documented_call_event_maps(name):
    assert statuses.call_event(statuses.normalize_status(name), None)[0] == name.lower()


@pytest.mark.parametrize("status", DOCUMENTED_POLLS)
def test_every_documented_poll_status_maps(status):
    key = statuses.normalize_status(status)
    assert key in statuses.POLLS or key in statuses.POLL_DROPS


@pytest.mark.parametrize("table", [statuses.RECEIPTS, statuses.RECEIPT_DROPS, statuses.CALL_EVENTS, statuses.POLLS,
                                   statuses.POLL_DROPS, {statuses.REJECTED, statuses.CONNECTED}])
def test_the_tables_hold_one_spelling(table):
    assert all(statuses.normalize_status(k) == k for k in table)


def test_unknown_words_are_not_final():
    assert statuses.receipt("Call Exploded", None) == statuses.Receipt("unknown", None)
    assert statuses.call_event("CALL_EXPLODED", None) == ("unknown", None)
    assert statuses.poll("CALL_EXPLODED", True) is None


# The deliberate differences, as the comments in provider/statuses.py give them:
# (status, what a receipt says, what a call event says, what a poll says with answeredTime, and without).
DIFFERENCES = [
    # A receipt's drop waits for its REJECTED (grace, then poll); a poll's drop is final, answeredTime decides;
    # a call event's DROPPED is final and nothing follows it.
    ("DROPPED", ("dropped", None, True), CallState.NO_ANSWER, CallState.ANSWERED, CallState.NO_ANSWER),
    ("Released", ("released", None, True), "unknown", CallState.ANSWERED, CallState.NO_ANSWER),
    ("DISCONNECTED", ("disconnected", None, True), "unknown", CallState.ANSWERED, CallState.NO_ANSWER),
    # TROMBONE_RELEASED: only the patched leg ended in a receipt; the end in a poll.
    ("TROMBONE_RELEASED", ("trombone_released", None, False), "unknown", CallState.ANSWERED, CallState.NO_ANSWER),
    ("TROMBONE_CONNECTED", ("trombone_connected", None, False), "unknown", None, None),
    # ANSWERED: reached in a receipt and a poll; not yet in a call event (a keypress reaches a programmable call).
    ("ANSWERED", ("answered", CallState.ANSWERED, False), None, CallState.ANSWERED, CallState.ANSWERED),
    # REJECTED without a code: no answer everywhere (a poll has no code; a receipt's code decides, below).
    ("REJECTED", ("rejected", CallState.NO_ANSWER, False), "unknown", CallState.NO_ANSWER, CallState.NO_ANSWER),
    # The expired request: `Failed` in a receipt, MESSAGE_EXPIRED in a poll.
    ("Failed", ("failed", CallState.FAILED, False), "unknown", CallState.FAILED, CallState.FAILED),
    ("Message Expired", ("unknown", None, False), "unknown", CallState.FAILED, CallState.FAILED),
    ("VMDETECTED", ("unknown", None, False), CallState.VOICEMAIL, None, None),
]


@pytest.mark.parametrize(("status", "in_receipt", "in_event", "polled_answered", "polled"), DIFFERENCES)
def test_deliberate_differences(status, in_receipt, in_event, polled_answered, polled):
    key = statuses.normalize_status(status)
    said = statuses.receipt(status, None)
    assert (said.label, said.outcome, said.grace is not None) == in_receipt
    label, outcome = statuses.call_event(key, None)
    assert (label if label == "unknown" else outcome) == in_event
    assert (statuses.poll(key, True), statuses.poll(key, False)) == (polled_answered, polled)


@pytest.mark.parametrize(("code", "outcome"), [("7402", CallState.BUSY), ("7401", CallState.NO_ANSWER),
                                               ("7999", CallState.NO_ANSWER)])
def test_a_rejected_receipt_is_told_by_its_code(code, outcome):
    assert statuses.receipt("REJECTED", code).outcome is outcome


@pytest.mark.parametrize(("code", "outcome"), [("1002", CallState.BUSY), ("2003", CallState.BUSY),
                                               ("2002", CallState.NO_ANSWER), ("2008", CallState.NO_ANSWER),
                                               (None, CallState.NO_ANSWER)])
def test_a_dropped_call_event_is_told_by_its_logbook_code(code, outcome):
    assert statuses.call_event("DROPPED", code) == ("dropped", outcome)


def test_a_connected_poll_is_an_answer():
    # The poll's word for a call still connected: an answer for a message, still going on for a programmable call.
    assert statuses.poll(statuses.CONNECTED, True) is CallState.ANSWERED


@pytest.mark.parametrize("room", ["dispatch", "web"])
def test_no_webex_status_is_spelled_outside_the_vocabulary(room):
    root = Path(__file__).resolve().parent.parent / "alert2voice" / room
    spelled = [(path.name, node.value) for path in sorted(root.glob("*.py"))
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and node.value != node.value.lower()  # lower case: our metric labels ("accepted", "answered")
               and statuses.normalize_status(node.value) in EVERY_NAME]
    assert spelled == []
