"""The status page at / and a page's detail view: server-rendered HTML for people asking "did the phone ring?"."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from typing import Any

import jinja2
from aiohttp import web

from ..config import Config
from ..heartbeats import heartbeat_of, is_up
from ..logs import mask_number
from ..pages import REACHED, Call, CallState, Page, current_step
from ..provider import TtsAudio
from ..store import StoreUnavailable
from ..units import format_duration, format_instant
from ..upcoming import upcoming
from .http import browser_page, error, refusals
from .keys import CLOCK, DISPATCHER, HEALTH, LIVE, METRICS, PREVIEWS, SPEAKER, STORE
from .ops import admin, readiness, stored_page

# The status page lists this many pages, newest first (/api/v1/pages?limit= shows more).
PAGES_SHOWN = 50

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("alert2voice.web", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


_ENV.filters["time"] = format_instant
_ENV.filters["masked"] = mask_number
_ENV.filters["duration"] = format_duration
_ENV.filters["step"] = lambda page: current_step(page)[1] + 1  # the step a button acts on, from 1


def espeak() -> str | None:
    """The espeak-ng binary the play button needs, if installed."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def _html(template: str, **context: Any) -> web.Response:
    return web.Response(text=_ENV.get_template(template).render(**context), content_type="text/html",
                        charset="utf-8", headers={"Cache-Control": "no-store"})


def on_call(config: Config, now: datetime) -> list[dict[str, Any]]:
    """Who every rotation pages now, until when, and why."""
    rows = []
    for name in sorted(config.rotations):
        now_on = config.rotation(name).on_call(now)
        contact = config.contacts.get(now_on.contact or "")
        rows.append({"rotation": name, "contact": now_on.contact, "number": contact.number if contact else None,
                     "until": now_on.until, "reason": now_on.reason})
    return rows


async def heartbeat_rows(app: web.Application, config: Config, now: datetime) -> list[dict[str, Any]]:
    """Every heartbeat with its last-seen time (from the store, as every replica sees it) and state."""
    beats = await app[STORE].beats() if config.heartbeats else {}
    rows = []
    for hb in config.heartbeats:
        seen = beats.get(hb.name)
        state = "not armed" if seen is None else "up" if is_up(hb, seen, now) else "missing"
        rows.append({"name": hb.name, "last_seen": seen, "timeout": hb.timeout, "state": state})
    return rows


def last_reload(app: web.Application) -> dict[str, Any]:
    """The last reload's result and the time of the last successful one, from the reload gauges."""
    metrics = app[METRICS]
    ok = metrics.registry.get_sample_value("alert2voice_config_last_reload_successful")
    at = metrics.registry.get_sample_value("alert2voice_config_last_reload_success_timestamp_seconds")
    return {"ok": ok == 1, "at": datetime.fromtimestamp(at, UTC) if at else None}


@browser_page
@admin
async def handle_status(request: web.Request) -> web.Response:
    """GET /: recent pages and their calls, who is on call, heartbeats, provider health, last reload."""
    app = request.app
    config, now = app[LIVE].config, app[CLOCK].now()
    problems = await readiness(app)
    try:
        pages, store_error = await app[STORE].recent(PAGES_SHOWN), None
        heartbeats = await heartbeat_rows(app, config, now)
    except StoreUnavailable as exc:
        # Shown as such: an unreadable store is not "no pages yet" (nor "no heartbeats").
        pages, store_error = [], str(exc)
        heartbeats = None if config.heartbeats else []
    return _html("status.html.j2", now=now, replica=replica(app), pages=pages, heartbeat_of=heartbeat_of,
                 upcoming={p.key: upcoming(p, config, now) for p in pages}, on_call=on_call(config, now),
                 heartbeats=heartbeats, store_error=store_error, problems=problems,
                 provider=app[HEALTH].current, test_call=app[HEALTH].test_call, reload=last_reload(app))


def replica(app: web.Application) -> str:
    """This replica's name as its leases carry it (host, process id and a random part): which one answered."""
    return app[DISPATCHER].owner


def said_heading(call: Call) -> str:
    """How the detail page introduces what a call said: "heard" only when someone answered it."""
    who = call.contact or "the callee"
    if call.state in REACHED:
        return f"what {who} heard"
    if call.state is CallState.QUEUED:
        return f"what will be said to {who}"
    if call.state is CallState.ACCEPTED:
        return f"what {who} hears on answering (the call is under way)"
    if call.state is CallState.UNKNOWN:
        return f"what was sent for {who} (outcome unknown: it may have rung)"
    # Ended without reaching anyone: placed and not answered, or never placed (no messageId: cancelled, refused).
    placed = "not reached" if call.message_id else "not placed"
    return f"what {who} would have heard ({placed}: {call.state.value.replace('_', ' ')})"


def said(app: web.Application, page: Page, call: Call) -> list[dict[str, str]]:
    """What a call said, as its request was frozen: each part's format and text (or recording)."""
    audio = app[SPEAKER].said(page, call, app[LIVE].config)
    return [{"format": a.text_format, "text": a.text} if isinstance(a, TtsAudio)
            else {"format": "recording", "text": getattr(a, "location", None) or getattr(a, "media_id", "")}
            for a in audio]


@browser_page
@admin
@refusals
async def handle_page(request: web.Request) -> web.Response:
    """GET /pages/{key}: one page, its alerts, and what each of its calls said."""
    page = await stored_page(request)
    app, now = request.app, request.app[CLOCK].now()
    calls = [(call, said_heading(call), said(app, page, call)) for call in page.calls]
    return _html("status_page.html.j2", now=now, replica=replica(app), page=page, calls=calls,
                 heartbeat=heartbeat_of(page), next_call=upcoming(page, app[LIVE].config, now),
                 playable=espeak() is not None)


@browser_page
@admin
@refusals
async def handle_call_wav(request: web.Request) -> web.Response:
    """GET /pages/{key}/calls/{attempt}.wav: the call's speech, spoken locally by espeak-ng."""
    page = await stored_page(request)
    call = next((c for c in page.calls if str(c.attempt) == request.match_info["attempt"]), None)
    if call is None:
        return error(404, "no such call")
    binary = espeak()
    if binary is None:
        return error(404, "espeak-ng is not installed: no preview to play")
    text = next((p["text"] for p in said(request.app, page, call) if p["format"] in ("SSML", "TEXT")), None)
    if not text:
        return error(404, "this call plays a recording: nothing to speak")
    previews = request.app[PREVIEWS]
    try:
        wav = await previews.wav(binary, page.key, call.attempt, text)
    except TimeoutError:
        return error(504, f"espeak-ng did not speak it within {previews.timeout:g} s (or too many previews at once)")
    except RuntimeError as exc:
        return error(500, str(exc))
    return web.Response(body=wav, content_type="audio/wav", headers={"Cache-Control": "no-store"})
