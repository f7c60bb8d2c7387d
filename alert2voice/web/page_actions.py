"""People act on a page without its phone: POST /api/v1/pages/{key}/ack and /api/v1/pages/{key}/escalate.

Guarded like the other admin endpoints. Each goes through the page's unit of work (dispatch/work.py), so it
holds on any replica, and is idempotent: a second acknowledgement changes nothing, and an escalation that
names the step it saw (`step`) does nothing once the page is past that step.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from yarl import URL

from ..config import Config
from ..dispatch.work import Effects
from ..pages import Call, Page, PageEnded, acknowledge, escalate
from ..silences import silences_for
from ..store import StoreUnavailable
from .http import Refusal, browser_page, error
from .keys import CLOCK, LIVE, METRICS, SILENCER, WORK
from .ops import admin, page_json

log = logging.getLogger("alert2voice.pages")

MAX_BODY = 4096
MAX_TEXT = 200  # characters of `by` and `comment`

@dataclass(frozen=True)
class Ask:
    """What a person asks of a page, from the API's JSON body or the status page's form."""

    by: str
    via: str  # api | web
    config: Config
    comment: str | None = None
    step: int | None = None  # the step (from 1) the person saw


# act(page, now, ask) -> the calls it gave up (None: nothing changed); PageEnded when the page ended.
Act = Callable[[Page, datetime, Ask], list[Call] | None]


def _bad(message: str) -> Refusal:
    """What is wrong with the request's body (400)."""
    return Refusal(400, "bad_request", message)


async def _body(request: web.Request) -> dict[str, Any]:
    """The optional JSON body: {"by": "...", "comment": "...", "step": N}."""
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise _bad(f"body over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _bad(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object such as {\"by\": \"dana\", \"comment\": \"on it\"}")
    for name in ("by", "comment"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            raise _bad(f"{name} must be a string of at most {MAX_TEXT} characters")
    step = body.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 1):
        raise _bad("step must be the step number the page was at (1 for the first)")
    return body


async def change(app: web.Application, key: str, name: str, act: Act, body: dict[str, Any],
                 via: str) -> tuple[Page | None, bool]:
    """Apply `act` to the page in one unit of work: the page (None: no such page) and whether it changed.

    Raises PageEnded (409) and StoreUnavailable (503). An acknowledgement that changed the page is counted and
    silenced (acknowledgement.silence) here, whichever way it came.
    """
    ask = Ask(by=body.get("by") or via, via=via, config=app[LIVE].config, comment=body.get("comment"),
              step=body.get("step"))
    metrics, now = app[METRICS], app[CLOCK].now()

    async def decide(page: Page | None, fx: Effects) -> tuple[Page | None, bool]:
        if page is None:
            return None, False
        given_up = act(page, now, ask)  # PageEnded: nothing written
        if given_up is None:
            return page, False
        fx(lambda: metrics.calls.labels(page.route, "cancelled").inc(len(given_up)))
        fx(lambda: log.info(f"page {name}", extra={"page_key": page.key, "route": page.route, "by": ask.by,
                                                    "via": via, "comment": ask.comment,
                                                    "calls_given_up": len(given_up)}))
        fx.save()
        return page, True

    page, changed = await app[WORK].change(key, decide)
    # (An escalation due now has woken the dispatcher's loop already: Work.change tells it when a page is due.)
    if page is not None and changed and page.acknowledged_at == now and page.acknowledged_via == via:
        metrics.pages_acknowledged.labels(via).inc()
        _silence(app, page)
    return page, changed


async def _apply(request: web.Request, name: str, act: Act, body: dict[str, Any], via: str) -> tuple[Page, bool]:
    """change() on the page named in the path: the page and whether it changed; raises the Refusal (409, 503, 404)."""
    try:
        page, changed = await change(request.app, request.match_info["key"], name, act, body, via)
    except PageEnded as exc:
        raise Refusal(409, "ended", str(exc)) from None
    except StoreUnavailable as exc:
        raise Refusal(503, "unavailable", f"store unavailable: {exc}") from None
    if page is None:
        raise Refusal(404, "unknown", "no such page")
    return page, changed


async def _act(request: web.Request, name: str, act: Act) -> web.Response:
    """The JSON API's answer to `act` on the page named in the path."""
    try:
        page, changed = await _apply(request, name, act, await _body(request), "api")
    except Refusal as refusal:
        return refusal.response()
    return web.json_response({"status": "ok", "changed": changed, "page": page_json(page)})


def _acknowledge(page: Page, now: datetime, ask: Ask) -> list[Call] | None:
    return acknowledge(page, ask.config, now, by=ask.by, via=ask.via, comment=ask.comment)


def _escalate(page: Page, now: datetime, ask: Ask) -> list[Call] | None:
    return escalate(page, now, by=ask.by, step=ask.step - 1 if ask.step is not None else None)


ACTIONS: dict[str, tuple[str, Act]] = {"ack": ("acknowledged", _acknowledge), "escalate": ("escalated", _escalate)}


@admin
async def handle_ack(request: web.Request) -> web.Response:
    """POST /api/v1/pages/{key}/ack: no further call for the page; the Alertmanager silence, if configured."""
    return await _act(request, *ACTIONS["ack"])


@admin
async def handle_escalate(request: web.Request) -> web.Response:
    """POST /api/v1/pages/{key}/escalate: give up the current call and call the next step now."""
    return await _act(request, *ACTIONS["escalate"])


def _silence(app: web.Application, page: Page) -> None:
    """Silence the page's alerts in Alertmanager (acknowledgement.silence), as the acknowledgement digit does."""
    config = app[LIVE].config
    silence = config.acknowledgement.silence
    if silence is None or page.resolved_at is not None:  # a resolved alert needs no silence
        return
    how = {"api": "through the API", "web": "on the status page"}.get(page.acknowledged_via or "", "")
    app[SILENCER].create(silence, silences_for([page], page.acknowledged_by or "", app[CLOCK].now(), silence,
                                               config.dedup.ignore_labels, how=how,
                                               note=page.acknowledged_comment), page.key, config.alertmanager)


def same_origin(request: web.Request) -> bool:
    """Whether a browser's POST comes from our own pages (Fetch Metadata, else the Origin header): a form on
    another site cannot make a logged-in operator's browser acknowledge or escalate a page."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    return origin is not None and origin != "null" and URL(origin).raw_authority == request.host


def _back(value: object) -> str:
    """Where to send the browser afterwards: a path of ours, never another site."""
    path = value if isinstance(value, str) else "/"
    return path if path.startswith("/") and not path.startswith(("//", "/\\")) and "\n" not in path else "/"


def _who(request: web.Request) -> str:
    """Who clicked: the admin user name when basic auth is configured, else "status page"."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Basic "):
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            user = base64.b64decode(auth[6:], validate=True).decode().partition(":")[0]
            if user:
                return user[:MAX_TEXT]
    return "status page"


@browser_page
@admin
async def handle_form(request: web.Request) -> web.StreamResponse:
    """POST /pages/{key}/ack or /escalate: the status page's buttons (plain forms), then back where they were."""
    if not same_origin(request):
        log.warning("cross-site request refused", extra={"path": request.path, "remote": request.remote,
                                                         "origin": request.headers.get("Origin")})
        return error(403, "cross-site request refused: these buttons work from alert2voice's own status page")
    name, act = ACTIONS[request.match_info["action"]]
    form = await request.post()
    step = form.get("step")
    body: dict[str, Any] = {"by": _who(request),
                            "step": int(step) if isinstance(step, str) and step.isdigit() and int(step) > 0 else None}
    try:
        await _apply(request, name, act, body, "web")
    except Refusal as refusal:
        return refusal.response()
    raise web.HTTPSeeOther(location=_back(form.get("back")))
