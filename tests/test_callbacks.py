"""The provider's words for how a call went, in every spelling it uses: receipts, call events, polled statuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alert2voice.callbacks import parse
from alert2voice.pages import CallState
from alert2voice.provider import classify_status_response, statuses
from tests.harness import receipt as webex_receipt


def receipt(status: str, code: str = "7519") -> bytes:
    return json.dumps(webex_receipt(status, correlation="p-1", transid="m-1", code=code)).encode()


def call_event(name: Any, **fields: Any) -> bytes:
    return json.dumps({"event": name, "sessionId": "s-1", **fields}).encode()


@pytest.mark.parametrize(
    ("status", "event", "outcome"),
    [
        ("ANSWERED", "answered", CallState.ANSWERED),
        ("Answered", "answered", CallState.ANSWERED),
        ("Released", "released", None),           # mixed case, as the reference documents it
        (" Released ", "released", None),
        ("Trombone Connected", "trombone_connected", None),
        ("TROMBONE  RELEASED", "trombone_released", None),
        ("Failed", "failed", CallState.FAILED),
        ("Call Exploded", "unknown", None),
    ],
)
def test_receipt_status_in_any_spelling(status, event, outcome):
    parsed = parse(receipt(status))
    assert (parsed.event, parsed.outcome) == (event, outcome)


@pytest.mark.parametrize("status", ["DROPPED", "Released", "disconnected", " Disconnected"])
def test_a_drop_receipt_waits_for_its_verdict(status):
    parsed = parse(receipt(status))
    assert parsed.outcome is None and parsed.grace is not None


@pytest.mark.parametrize(("code", "outcome"), [("7402", CallState.BUSY), ("7401", CallState.NO_ANSWER)])
def test_rejected_receipt_in_any_case(code, outcome):
    assert parse(receipt("Rejected", code)).outcome is outcome


@pytest.mark.parametrize(("name", "label"), [("VMDETECTED", "vmdetected"), ("vmdetected", "vmdetected"),
                                             ("Collected Digits", "collected_digits"), (7, "unknown")])
def test_call_event_names_in_any_spelling(name, label):
    assert parse(call_event(name)).event == label


@pytest.mark.parametrize(
    ("status", "answered", "outcome"),
    [
        ("ANSWERED", True, CallState.ANSWERED),
        ("Rejected", False, CallState.NO_ANSWER),
        ("Message Expired", False, CallState.FAILED),
        ("message  expired", False, CallState.FAILED),
        ("MESSAGE_EXPIRED", False, CallState.FAILED),
        ("Released", True, CallState.ANSWERED),
        ("Trombone Released", False, CallState.NO_ANSWER),
        (" Disconnected ", True, CallState.ANSWERED),
        ("Trombone Connected", True, None),       # still going on
        (None, False, None),
    ],
)
def test_polled_status_in_any_spelling(status, answered, outcome):
    # Normalised once, where the poll's answer is read; the table reads that spelling.
    polled = None
    if status is not None:
        polled = classify_status_response(200, json.dumps({"status": status}).encode(), {})
        assert polled is not None
    assert statuses.poll(polled.status if polled else None, answered) is outcome
