"""People act on a page without its phone: POST /api/v1/pages/{key}/ack and /api/v1/pages/{key}/escalate.

Guarded like the other admin endpoints. Each goes through the page's unit of work (dispatch/work.py), so it
holds on any replica, and is idempotent: a second acknowledgement changes nothing, and an escalation that
names the step it saw (`step`) does nothing once the page is past that step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from ..dispatch.work import Effects
from ..pages import Call, Page, PageEnded, acknowledge, escalate
from ..silences import silences_for
from ..store import StoreUnavailable
from .http import error
from .keys import CLOCK, DISPATCHER, LIVE, METRICS, SILENCER
from .ops import admin, page_json

log = logging.getLogger("alert2voice.pages")

MAX_BODY = 4096
MAX_TEXT = 200  # characters of `by` and `comment`

# decide(page, now, by, body) -> the calls it gave up (None: nothing changed); PageEnded when the page ended.
Act = Callable[[Page, datetime, str, dict[str, Any]], list[Call] | None]


class BadBody(Exception):
    """What is wrong with the request's body (400)."""


async def _body(request: web.Request) -> dict[str, Any]:
    """The optional JSON body: {"by": "...", "comment": "...", "step": N}."""
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadBody(f"body over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadBody(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadBody("body must be a JSON object such as {\"by\": \"dana\", \"comment\": \"on it\"}")
    for name in ("by", "comment"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            raise BadBody(f"{name} must be a string of at most {MAX_TEXT} characters")
    step = body.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 1):
        raise BadBody("step must be the step number the page was at (1 for the first)")
    return body


async def _act(request: web.Request, name: str, act: Act) -> tuple[web.Response, Page | None]:
    """Apply `act` to the page in one unit of work; the answer, and the page when `act` changed it."""
    app, key = request.app, request.match_info["key"]
    try:
        body = await _body(request)
    except BadBody as exc:
        return error(400, str(exc)), None
    by = body.get("by") or "api"
    metrics, now = app[METRICS], app[CLOCK].now()

    async def decide(page: Page | None, fx: Effects) -> tuple[Page | None, bool]:
        if page is None:
            return None, False
        given_up = act(page, now, by, body)  # PageEnded: nothing written
        if given_up is None:
            return page, False
        fx(lambda: metrics.calls.labels(page.route, "cancelled").inc(len(given_up)))
        fx(lambda: log.info(f"page {name}", extra={"page_key": page.key, "route": page.route, "by": by,
                                                    "comment": body.get("comment"), "calls_given_up": len(given_up)}))
        fx.save()
        return page, True

    try:
        page, changed = await app[DISPATCHER].ctx.work.change(key, decide)
    except PageEnded as exc:
        return error(409, str(exc)), None
    except StoreUnavailable as exc:
        return error(503, f"store unavailable: {exc}"), None
    if page is None:
        return error(404, "no such page"), None
    if changed:
        app[DISPATCHER].poke()  # an escalation is due now
    return web.json_response({"status": "ok", "changed": changed, "page": page_json(page)}), page if changed else None


def _acknowledge(page: Page, now: datetime, by: str, body: dict[str, Any]) -> list[Call] | None:
    return acknowledge(page, now, by=by, via="api", comment=body.get("comment"))


def _escalate(page: Page, now: datetime, by: str, body: dict[str, Any]) -> list[Call] | None:
    step = body.get("step")
    return escalate(page, now, by=by, step=step - 1 if step is not None else None)


@admin
async def handle_ack(request: web.Request) -> web.Response:
    """POST /api/v1/pages/{key}/ack: no further call for the page; the Alertmanager silence, if configured."""
    response, page = await _act(request, "acknowledged", _acknowledge)
    if page is not None:
        request.app[METRICS].pages_acknowledged.labels("api").inc()
        _silence(request.app, page)
    return response


@admin
async def handle_escalate(request: web.Request) -> web.Response:
    """POST /api/v1/pages/{key}/escalate: give up the current call and call the next step now."""
    response, _ = await _act(request, "escalated", _escalate)
    return response


def _silence(app: web.Application, page: Page) -> None:
    """Silence the page's alerts in Alertmanager (acknowledgement.silence), as the acknowledgement digit does."""
    config = app[LIVE].config
    silence = config.acknowledgement.silence
    if silence is None or page.resolved_at is not None:  # a resolved alert needs no silence
        return
    app[SILENCER].create(silence, silences_for([page], page.acknowledged_by or "api", app[CLOCK].now(), silence,
                                               config.dedup.ignore_labels, how="through the API",
                                               note=page.acknowledged_comment), page.key)
