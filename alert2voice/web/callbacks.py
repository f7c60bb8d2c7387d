"""POST /callbacks/webex: the provider's delivery receipts and call events, authenticated before they are read."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .. import callbacks
from ..interactive import HANGUP, Answer
from ..provider.base import MAX_BODY_BYTES, read_at_most
from ..provider.health import TEST_CALL_PREFIX
from ..silences import silences_for
from ..store import StoreUnavailable
from ..store.base import Conflict
from .http import Refusal, error, read_timeout
from .keys import CLOCK, HEALTH, LIVE, METRICS, OUTCOMES, REFUSALS, SILENCER, STORE

log = logging.getLogger("alert2voice.callbacks")


async def handle_callback(request: web.Request) -> web.Response:
    """POST /callbacks/webex: delivery receipts and call events from the provider."""
    app = request.app
    metrics = app[METRICS]
    try:
        event = await _authenticated(request)
    except Refusal as refusal:
        metrics.callbacks.labels("unknown", refusal.result).inc()
        return refusal.response()
    try:
        return await _apply(app, event)
    except (StoreUnavailable, Conflict) as exc:
        # Nothing was applied: the provider sends the callback again (receipts), or the call event's caller
        # hears silence and the deadline poll finds the call's outcome later.
        metrics.callbacks.labels(event.event, "unavailable").inc()
        log.warning("store unavailable; callback answered 503", extra={"event": event.event, "error": str(exc)})
        return error(503, "store unavailable, retry later")


async def _authenticated(request: web.Request) -> callbacks.Event:
    """The callback, authenticated and parsed; raises the Refusal (401, 408, 413, 400) otherwise."""
    cb = request.app[LIVE].config.provider.callback
    # The credentials in the headers are checked before a byte of the body is read.
    if not callbacks.verify_headers(cb, request.headers):
        raise _refused(request)
    body = await _read(request)
    if not callbacks.verify_body(cb, request.headers, body):
        raise _refused(request)
    try:
        return callbacks.parse(body)
    except callbacks.CallbackError as exc:
        raise Refusal(400, "bad_request", str(exc)) from None


async def _apply(app: web.Application, event: callbacks.Event) -> web.Response:
    """Apply a parsed, authenticated callback through the store."""
    metrics = app[METRICS]
    key = await app[STORE].find_call(correlation_id=event.correlation_id, message_id=event.message_id)
    if event.call_event:
        # Keyed on the event, not on provider.mode: calls placed before a reload still get their answers.
        return await _call_event(app, key, event)
    result = "unknown"
    if key is not None:
        result = await app[OUTCOMES].receipt(key, correlation=event.correlation_id, message_id=event.message_id,
                                             outcome=event.outcome, grace=event.grace)
    elif (event.correlation_id or "").startswith(TEST_CALL_PREFIX):
        # `alert2voice test-call` placed it (no page): the status page shows how it went.
        said = event.outcome.value.replace("_", " ") if event.outcome else event.event
        app[HEALTH].test_call_event(event.correlation_id or "", said, app[CLOCK].now())
        result = "test_call"
    metrics.callbacks.labels(event.event, result).inc()
    if result == "unknown":
        log.warning("callback for an unknown call", extra={"event": event.event,
                                                          "correlation_id": event.correlation_id})
    # Receipts need only a 200.
    return web.json_response({"status": "ok"})


def _refused(request: web.Request) -> Refusal:
    # Anyone can send these as fast as they like: each is counted, the line comes once a minute with how many.
    request.app[REFUSALS](log, "callback refused: wrong or missing credentials", "unauthorized",
                          remote=request.remote)
    return Refusal(401, "unauthorized", "missing or wrong callback credentials",
                   **{"WWW-Authenticate": 'Bearer realm="callbacks"'})


async def _read(request: web.Request) -> bytes:
    """A callback's body: at most 64 KiB, within server.read_timeout; raises the Refusal (408, 413) otherwise."""
    # Separate from server.max_body_bytes (the app's client_max_size, sized for 5,000-alert webhooks).
    config = request.app[LIVE].config
    limit, body = MAX_BODY_BYTES, None
    if request.content_length is None or request.content_length <= limit:
        try:
            async with asyncio.timeout(config.server.read_timeout.total_seconds()):
                body = await read_at_most(request.content, limit)
        except TimeoutError:
            raise read_timeout(config, "timeout") from None
    if body is None:
        raise Refusal(413, "too_large", f"callback body over {limit} bytes")
    return body


async def _call_event(app: web.Application, key: str | None, event: callbacks.Event) -> web.Response:
    """A programmable call's event (interactive mode): the platform reads the next action from the body."""
    answer = Answer("unknown", HANGUP)
    if key is not None:
        answer = await app[OUTCOMES].call_event(key, event)
    app[METRICS].callbacks.labels(event.event, answer.result).inc()
    if answer.result == "unknown":
        log.warning("call event for an unknown call", extra={"event": event.event, "session_id": event.message_id,
                                                            "correlation_id": event.correlation_id})
    config = app[LIVE].config
    silence = config.acknowledgement.silence
    pages = [p for p in answer.acknowledged if p.resolved_at is None]  # a resolved alert needs no silence
    if pages and silence is not None:
        # In the background: the callee is waiting for the thank-you, not for Alertmanager.
        app[SILENCER].create(silence, silences_for(pages, answer.contact, app[CLOCK].now(), silence,
                                                   config.dedup.ignore_labels), pages[0].key, config.alertmanager)
    return web.json_response(answer.action)
