"""POST /alerts: the Alertmanager webhook, answered 200 only once every implied call is durably queued."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

from aiohttp import web

from ..alertmanager import Payload, PayloadError, parse_payload
from ..auth import authorized, peer_certificate
from ..config import Config
from ..live import LiveConfig
from ..routing import Plan, plan
from ..store import NotReplicated, StoreUnavailable
from ..store.base import Conflict
from .http import Refusal, error, read_json, unauthorized
from .keys import ADMISSION, CLOCK, HEARTBEATS, LIVE, METRICS, SHUTDOWN, STORE

log = logging.getLogger("alert2voice.webhook")


def parse(body: bytes) -> Payload:
    """The version-4 payload; raises a 400 Refusal naming what was wrong."""
    try:
        return parse_payload(body)
    except PayloadError as exc:
        raise Refusal(400, "bad_request", str(exc)) from None


def require_credentials(request: web.Request, config: Config) -> None:
    """Refuse (401) a client of /alerts or /heartbeats without credentials: webhook_auth's or a verified certificate.

    A certificate is checked again at every request (expiry, CA loaded now); one that no longer counts is refused
    even with webhook_auth's credentials, as a new connection bringing it is refused at the handshake.
    """
    tls = config.server.tls
    mutual = tls is not None and tls.mutual
    connection = peer_certificate(request.transport) if mutual else None
    server_tls = request.app[LIVE].tls
    if connection is not None and server_tls is not None:
        why = server_tls.refusal(connection, request.app[CLOCK].now())
        if why is None:
            return
        log.warning("client certificate refused", extra={"reason": why, "remote": request.remote})
        # Connection: close: the client's next request makes a new handshake, which verifies against the CA now.
        raise Refusal(401, "unauthorized", f"{why}: a verified client certificate is required",
                      **{"WWW-Authenticate": 'Certificate realm="alert2voice"', "Connection": "close"})
    auth = config.webhook_auth
    if auth is not None:
        if not authorized(auth, request.headers.get("Authorization", "")):
            raise unauthorized(auth)
        return
    if mutual:
        raise Refusal(401, "unauthorized", "a verified client certificate is required (server.tls.client_ca_file is"
                      " set, webhook_auth is not)", **{"WWW-Authenticate": 'Certificate realm="alert2voice"'})


async def _read_plan(request: web.Request, live: LiveConfig) -> tuple[Payload, Plan]:
    """Authenticate, read, parse and plan (or raise the Refusal); a resent body's plan comes from the cache without
    parsing or routing."""
    config = live.config
    require_credentials(request, config)
    body = await read_json(request, config)
    key = live.plans.key(body)
    known = live.plans.get(config, key)
    if known is not None:
        return known
    payload = parse(body)
    the_plan = plan(config, payload)
    live.plans.put(config, key, payload, the_plan)
    return payload, the_plan


async def _refresh(app: web.Application, names: list[str], now: datetime) -> None:
    """Refresh the heartbeats the webhook's firing alerts matched (durably, before the 200)."""
    for name in names:
        with contextlib.suppress(KeyError):  # a reload removed it since the body was planned
            await app[HEARTBEATS].refresh(name, now)


async def handle_alerts(request: web.Request) -> web.Response:
    """POST /alerts: the Alertmanager webhook; 200 only once every implied call is durably queued."""
    app = request.app
    metrics = app[METRICS]
    if app[SHUTDOWN].is_set():
        metrics.webhook["unavailable"].inc()
        return error(503, "shutting down")
    try:
        parsed, the_plan = await _read_plan(request, app[LIVE])
    except Refusal as refusal:
        metrics.webhook[refusal.result].inc()
        log.warning("webhook refused", extra={"status": refusal.status, "result": refusal.result,
                                              "remote": request.remote})
        return refusal.response()
    firing = sum(1 for a in parsed.alerts if a.firing)
    metrics.alerts_firing.inc(firing)
    metrics.alerts_resolved.inc(len(parsed.alerts) - firing)
    now = app[CLOCK].now()
    try:
        await _refresh(app, the_plan.beats, now)
        summary = await app[ADMISSION].accept(parsed, the_plan, now)
        # Everything the 200 promises (pages admitted, resends answered "duplicate" from an admit not yet
        # replicated, resolutions, heartbeats) on store.replicas_ack Redis replicas, which survive a failover.
        await app[STORE].replicated()
    except (StoreUnavailable, Conflict) as exc:  # Conflict: a page kept changing under us (CAS_ATTEMPTS times)
        metrics.webhook["unavailable"].inc()
        log.error("store unavailable; answering 503 so Alertmanager retries", extra={"error": str(exc)})
        if isinstance(exc, NotReplicated):  # stored on the master: the resend is a duplicate, called once
            metrics.replication_timeouts.inc()
            return error(503, f"store unavailable, retry later ({exc})")
        return error(503, "store unavailable, retry later")
    if the_plan.beats:
        summary["heartbeats"] = the_plan.beats
    metrics.webhook["accepted"].inc()
    # One line per webhook, naming every page it touched (key, route, result): at info when it changed
    # something, at debug when it changed nothing. Alertmanager resends every group each repeat_interval
    # (twice with an HA pair); those resends are counted in alert2voice_pages_total{result="duplicate"}.
    level = logging.INFO if any(e["result"] != "duplicate" for e in summary["pages"]) else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(level, "webhook accepted", extra={
            "group_key": parsed.groupKey, "receiver": parsed.receiver, "firing": firing,
            "resolved": len(parsed.alerts) - firing,
            "pages": [{k: e[k] for k in ("route", "page_key", "result")} for e in summary["pages"]]})
    return web.json_response(summary)
