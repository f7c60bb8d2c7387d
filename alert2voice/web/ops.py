"""The operator endpoints: metrics, health, readiness, reload, render and the pages API."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..auth import authorized, is_loopback
from ..config import WebhookAuth
from ..config_file import ConfigError
from ..heartbeats import heartbeat_of, is_up
from ..logs import mask_number
from ..pages import Page
from ..preview import render_calls
from ..provider.health import TERSE
from ..store import StoreUnavailable
from ..upcoming import upcoming
from .http import Handler, Refusal, error, read_json, refusals, unauthorized
from .keys import CLOCK, DISPATCHER, HEALTH, LIVE, METRICS, REFUSALS, SHUTDOWN, STORE, SUPERVISOR
from .webhook import parse

log = logging.getLogger("alert2voice.web")

# /api/v1/pages lists at most this many pages, and this many alerts of each (alerts_total counts them all).
PAGES_LIMIT = 500
ALERTS_LISTED = 20


def admin_refusal(auth: WebhookAuth | None, remote: str | None, authorization: str) -> int | None:
    """The status refusing an admin request (401, 403), or None: admin_auth if set, else loopback clients only."""
    if auth is None:
        return None if is_loopback(remote) else 403
    return None if authorized(auth, authorization) else 401


def admin(handler: Handler) -> Handler:
    """Guard an operator endpoint (/-/reload, /-/render, /api/v1/pages) with admin_refusal()."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        return admin_refused(request) or await handler(request)

    return guarded


def admin_refused(request: web.Request) -> web.Response | None:
    """The answer refusing an admin request (logged), or None when it may go on."""
    server = request.app[LIVE].config.server
    auth = server.admin_auth
    status = admin_refusal(auth, request.remote, request.headers.get("Authorization", ""))
    if status is None and auth is None and not server.host_allowed(request.host):
        # Loopback alone is no proof against DNS rebinding: a browser on evil.example behind a port-forward.
        status = 421
    if status is None:
        return None
    request.app[REFUSALS](log, "admin request refused", str(status), path=request.path, remote=request.remote)
    if status == 421:
        return error(421, "without server.admin_auth, this host name must be one of server.allowed_hosts "
                          "or server.public_url's")
    if auth is None:
        return error(403, "this endpoint answers loopback clients only; set server.admin_auth to allow others")
    return unauthorized(auth).response()


async def handle_metrics(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus exposition (queue_depth read from the store now)."""
    metrics = request.app[METRICS]
    with contextlib.suppress(StoreUnavailable):
        metrics.queue_depth.set(await request.app[STORE].depth())
    with contextlib.suppress(StoreUnavailable):
        await _heartbeat_metrics(request.app)
    with contextlib.suppress(StoreUnavailable):
        headroom = await request.app[STORE].memory_headroom()
        metrics.store_headroom.set(math.nan if headroom is None else headroom)
    resp = web.Response(body=generate_latest(metrics.registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


async def _heartbeat_metrics(app: web.Application) -> None:
    """The heartbeat gauges from the store's last-seen times, so that every replica shows the same."""
    heartbeats = app[LIVE].config.heartbeats
    beats = await app[STORE].beats() if heartbeats else {}
    now = app[CLOCK].now()
    app[METRICS].heartbeats((hb.name, seen.timestamp() if (seen := beats.get(hb.name)) else 0.0,
                             is_up(hb, seen, now)) for hb in heartbeats)


async def handle_healthy(request: web.Request) -> web.Response:
    """GET /-/healthy: the process is alive, and its dispatcher is not stuck crashing (then restart the pod)."""
    supervisor = request.app.get(SUPERVISOR)
    if supervisor is not None and not supervisor.healthy:
        return web.Response(status=503, text=f"not healthy: the dispatcher crashed {supervisor.crashes} times in a "
                                             "row (see the log)\n")
    return web.Response(text="alert2voice is healthy.\n")


async def readiness(app: web.Application, *, detail: bool = True) -> list[str]:
    """What keeps the service from being ready (empty when ready); without `detail`, no word of where the store is
    (its host and port, its path) or what it said: fit for anyone to read."""
    problems = []
    if app[SHUTDOWN].is_set():
        problems.append("shutting down")
    try:
        await app[STORE].ping()
    except StoreUnavailable as exc:
        problems.append(f"store unavailable: {exc}" if detail else "store unavailable")
    else:
        if not app[CLOCK].measured:  # measured within a second of the store answering
            problems.append("the store's clock not measured yet")
    if not app[DISPATCHER].running:
        problems.append("dispatcher not running")
    # Not the provider's health: a refused key or a provider away must not take every replica out of the Service,
    # which would refuse the webhooks and callbacks that should be stored while the provider is fixed.
    return problems


async def handle_ready(request: web.Request) -> web.Response:
    """GET /-/ready: config loaded, store reachable, dispatcher running; the provider's health is told, not required.
    Anyone may ask, so the store's errors (naming its host and port) are told only to an admin: `?verbose`."""
    verbose = "verbose" in request.query
    if verbose and (refused := admin_refused(request)) is not None:
        return refused
    problems = await readiness(request.app, detail=verbose)
    health = request.app[HEALTH].current
    provider = f"provider: {health.words if verbose else TERSE.get(health.status, 'not checked yet')}\n"
    if problems:
        return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n" + provider)
    return web.Response(text="alert2voice is ready.\n" + provider)


@admin
async def handle_reload(request: web.Request) -> web.Response:
    """POST /-/reload: re-read the config and its secret files; a bad one is refused and the last good one stays."""
    try:
        await request.app[LIVE].reload()
    except ConfigError as exc:
        return error(400 if exc.problems else 409, str(exc) or "started without a config file: nothing to reload")
    return web.json_response({"status": "ok"})


@admin
@refusals
async def handle_render(request: web.Request) -> web.Response:
    """POST /-/render: a webhook payload in, the calls it would cause now (with their SSML) out."""
    live = request.app[LIVE]
    parsed = parse(await read_json(request, live.config))
    return web.json_response({"calls": render_calls(live.config, live.speech, parsed, request.app[CLOCK].now())})


def page_json(page: Page) -> dict[str, Any]:
    """A page for /api/v1/pages: no secrets, numbers masked, the first ALERTS_LISTED alerts."""
    return {
        "key": page.key, "route": page.route, "heartbeat": heartbeat_of(page), "group_key": page.group_key,
        "state": page.state.value,
        "received_at": page.received_at.isoformat(), "updated_at": page.updated_at.isoformat() if page.updated_at
        else None, "due_at": page.due_at.isoformat() if page.due_at else None,
        "resolved_at": page.resolved_at.isoformat() if page.resolved_at else None,
        "acknowledged": {"by": page.acknowledged_by, "via": page.acknowledged_via,
                         "at": page.acknowledged_at.isoformat() if page.acknowledged_at else None,
                         "comment": page.acknowledged_comment} if page.acknowledged_at else None,
        "alerts": [{"labels": a["labels"], "status": a["status"]} for a in page.alerts[:ALERTS_LISTED]],
        "alerts_total": len(page.alerts),
        "calls": [{"attempt": c.attempt, "kind": c.kind, "contact": c.contact, "number": mask_number(c.number),
                   "correlation_id": c.correlation_id, "state": c.state.value, "tries": c.tries,
                   "created_at": c.created_at.isoformat(),
                   "accepted_at": c.accepted_at.isoformat() if c.accepted_at else None,
                   "ended_at": c.ended_at.isoformat() if c.ended_at else None, "error": c.error}
                  for c in page.calls],
    }


async def stored_page(request: web.Request) -> Page:
    """The page named in the path ({key}); raises the Refusal: 404 unknown, 503 store unavailable."""
    try:
        page = await request.app[STORE].get(request.match_info["key"])
    except StoreUnavailable as exc:
        raise Refusal(503, "unavailable", f"store unavailable: {exc}") from None
    if page is None:
        raise Refusal(404, "unknown", "no such page")
    return page


@admin
@refusals
async def handle_page(request: web.Request) -> web.Response:
    """GET /api/v1/pages/{key}: one page as /api/v1/pages gives it, and its next call (who, when, why held)."""
    page = await stored_page(request)
    nxt = upcoming(page, request.app[LIVE].config, request.app[CLOCK].now())
    return web.json_response({**page_json(page), "next_call": nxt.to_json() if nxt else None})


@admin
async def handle_pages(request: web.Request) -> web.Response:
    """GET /api/v1/pages?limit=N: recent pages and their calls, newest first."""
    try:
        limit = max(1, min(PAGES_LIMIT, int(request.query.get("limit", "50"))))
    except ValueError:
        return error(400, "limit must be an integer")
    try:
        pages = await request.app[STORE].recent(limit)
    except StoreUnavailable as exc:
        return error(503, f"store unavailable: {exc}")
    return web.json_response({"pages": [page_json(p) for p in pages]})
