"""Provider callbacks: authenticate them, and turn delivery receipts and call events into outcomes."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .auth import bearer, token_matches
from .config import CallbackConfig
from .pages import CallState
from .provider import statuses


@dataclass(frozen=True)
class Event:
    """One callback, reduced to what moves a call: which call, what happened, and the final outcome if any."""

    event: str                      # metric label: the delivery status or call event, lower-case
    correlation_id: str | None
    message_id: str | None
    outcome: CallState | None       # None: not final (offered, ringing, dropped pending its receipt...)
    grace: timedelta | None = None  # for a drop without its final receipt: poll after this long
    digits: str | None = None
    call_event: bool = False        # interactive mode: the response body carries the next action
    code: str | None = None         # a call event's error.code (a logbook code for DROPPED)


class CallbackError(ValueError):
    """A callback body that is not a receipt or event we understand; answered 400."""


def verify_headers(config: CallbackConfig, headers: Any) -> bool:
    """Whether a callback carries the bearer token and header `provider.callback` asks for (constant time)."""
    ok = True
    tokens = config.tokens
    if tokens:
        token = bearer(headers.get("Authorization", ""))
        ok &= token is not None and token_matches(token, tokens)
    if config.header is not None and config.header.value is not None:
        ok &= hmac.compare_digest(headers.get(config.header.name, "").encode(),
                                  config.header.value.get_secret_value().encode())
    return ok


def verify_body(config: CallbackConfig, headers: Any, body: bytes) -> bool:
    """Whether the body's x-hub-signature matches `provider.callback.hub_secret` (True when none is set)."""
    if config.hub_secret is None:
        return True
    return _hub_signature_ok(config.hub_secret.get_secret_value(), headers.get("x-hub-signature", ""), body)


def _hub_signature_ok(secret: str, header: str, body: bytes) -> bool:
    # The tenant's outbound webhook signs the raw body: hex HMAC-SHA256 or SHA512, possibly "sha256=" prefixed.
    algo, _, sig = header.partition("=") if "=" in header else ("", "", header)
    algos = [algo.lower()] if algo.lower() in ("sha256", "sha512") else ["sha256", "sha512"]
    for name in algos:
        digest = hmac.new(secret.encode(), body, getattr(hashlib, name)).hexdigest()
        if hmac.compare_digest(digest.encode(), sig.strip().lower().encode()):
            return True
    return False


def parse(body: bytes) -> Event:
    """Parse a delivery receipt (message mode) or a call event (interactive mode)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CallbackError(f"callback body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CallbackError("callback body must be a JSON object")
    if "deliveryInfoNotification" in data:
        return _receipt(data["deliveryInfoNotification"])
    if "event" in data:
        return _call_event(data)
    raise CallbackError("callback has neither deliveryInfoNotification (receipt) nor event (call event)")


def _str(d: dict[str, Any], *keys: str) -> str | None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, str) and v:
            return v
    return None


def _receipt(note: Any) -> Event:
    if not isinstance(note, dict) or not isinstance(note.get("deliveryInfo"), dict):
        raise CallbackError("deliveryInfoNotification.deliveryInfo is missing or not an object")
    info = note["deliveryInfo"]
    status = _str(info, "deliveryStatus")
    if status is None:
        raise CallbackError("deliveryInfoNotification.deliveryInfo.deliveryStatus is missing")
    # Lower-case `correlationid` as documented; Trombone and Disconnected receipts may lack it (a known
    # platform bug), so `transid` (= our messageId) identifies the call too.
    correlation = _str(note, "correlationid", "correlationId")
    message_id = _str(note, "transid")
    if correlation is None and message_id is None:
        raise CallbackError("receipt has neither correlationid nor transid")
    said = statuses.receipt(status, str(info.get("code")))
    return Event(said.label, correlation, message_id, said.outcome, grace=said.grace)


def _call_event(data: dict[str, Any]) -> Event:
    name = statuses.normalize_status(str(data.get("event", "")))
    # Call events carry sessionId (= the id our POST /calls got back) and, except VMDETECTED, no correlationId.
    session = _str(data, "sessionId")
    correlation = _str(data, "correlationId", "correlationid")
    if session is None and correlation is None:
        raise CallbackError("call event has neither sessionId nor correlationId")
    error = data.get("error")
    raw_code = error.get("code") if isinstance(error, dict) else None
    code = str(raw_code) if isinstance(raw_code, str | int) and not isinstance(raw_code, bool) else None
    label, outcome = statuses.call_event(name, code)
    digits = (_str(data, "digitsReceived") or "") if name == statuses.COLLECTED_DIGITS else None
    return Event(label, correlation, session, outcome, digits=digits, call_event=True, code=code)
