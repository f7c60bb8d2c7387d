"""create_app(): wiring, HTTP routes and the cleanup contexts that own sessions, store and dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import callbacks
from .alertmanager import Payload, PayloadError, parse_payload
from .auth import authorized, challenge, is_loopback
from .clock import Clock
from .config import Config, ConfigError, WebhookAuth, load_config, secrets_of
from .dispatch import Dispatcher
from .interactive import HANGUP, Answer
from .keys import RUNTIME
from .logs import SCRUBBER, mask_number
from .metrics import Metrics
from .pages import PageState, new_nonce, new_page, next_call, resolve
from .provider import Provider
from .provider.base import MAX_BODY_BYTES, read_at_most
from .provider.webex import WebexProvider
from .routing import Plan, PlanCache, correlation_id, first_callable, plan
from .silences import Silencer, silences_for
from .speech import Speech, SpeechContext
from .store import Store, StoreUnavailable, open_store
from .supervisor import Supervisor
from .units import format_duration

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything the handlers share; one object under one AppKey so a reload swaps config and speech together."""

    config: Config
    config_path: Path | None
    metrics: Metrics
    clock: Clock
    store: Store
    provider: Provider | None = None
    dispatcher: Dispatcher | None = None
    silencer: Silencer | None = None
    http: aiohttp.ClientSession | None = None
    speech: Speech = field(init=False)
    plans: PlanCache = field(default_factory=PlanCache)
    shutting_down: bool = False
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dispatcher_task: asyncio.Task[None] | None = None
    supervisor: Supervisor | None = None

    async def drain(self) -> None:
        """SIGTERM: answer 503 to new webhooks, let in-flight calls finish within shutdown_grace."""
        self.shutting_down = True
        if self.dispatcher is not None and self.dispatcher_task is not None and not self.dispatcher_task.done():
            await self.dispatcher.drain(self.dispatcher_task, self.config.server.shutdown_grace.total_seconds())

    def __post_init__(self) -> None:
        self.speech = make_speech(self.config)

    def apply(self, config: Config) -> None:
        """Swap in a validated config (pending pages keep going on the new one)."""
        self.config = config
        self.speech = make_speech(config)
        self.plans.clear()  # entries of the old config would miss anyway; this frees them
        SCRUBBER.set_secrets(secrets_of(config))
        self.metrics.precreate([r.name for r in config.routes])

    async def reload(self) -> None:
        """Re-read the config file and its secret files; on error the last good config stays."""
        if self.config_path is None:
            raise ConfigError([])
        async with self.reload_lock:
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                self.metrics.reload_ok.set(0)
                log.error("config reload rejected; the last good config stays",
                          extra={"problems": [str(p) for p in exc.problems]})
                raise
            self.apply(config)
            self.metrics.reload_ok.set(1)
            self.metrics.reload_time.set(time.time())
            log.info("config reloaded", extra={"routes": len(config.routes)})
            for warning in config.warnings:
                log.warning(warning)


def make_speech(config: Config) -> Speech:
    """The SSML renderer the config describes: the one that checked its templates when there is one."""
    if isinstance(config._speech, Speech):
        return config._speech
    return Speech(config.templates.directory, max_alerts_spoken=config.speech.max_alerts_spoken,
                  max_chars=config.speech.max_chars)


# -------------------------------------------------------------------------------------------- webhook


def _unauthorized(auth: WebhookAuth) -> web.Response:
    return _error(401, "missing or wrong credentials", **{"WWW-Authenticate": challenge(auth)})


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"status": "error", "error": message}, status=status, headers=headers or None)


async def _read_body(request: web.Request, rt: Runtime, result: list[str]) -> bytes | web.Response:
    """Authenticate against webhook_auth, then _read_json(); a Response is the error to send."""
    auth = rt.config.webhook_auth
    if auth is not None and not authorized(auth, request.headers.get("Authorization", "")):
        result.append("unauthorized")
        return _unauthorized(auth)
    return await _read_json(request, rt.config, result)


async def _read_json(request: web.Request, config: Config, result: list[str]) -> bytes | web.Response:
    """Check type and size, read within server.read_timeout; a Response is the error to send."""
    if request.content_type != "application/json":
        result.append("unsupported_media_type")
        return _error(415, f"Content-Type must be application/json, got {request.content_type or 'none'!r}")
    limit = config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        result.append("too_large")
        return _error(413, f"body of {request.content_length} bytes is over server.max_body_bytes ({limit})")
    try:
        if request.content.is_eof():
            body = await request.read()  # all here already: nothing to time out
        else:
            async with asyncio.timeout(config.server.read_timeout.total_seconds()):
                # aiohttp enforces client_max_size (set from max_body_bytes) while reading, chunked bodies too.
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        result.append("too_large")
        return _error(413, f"body is over server.max_body_bytes ({limit})")
    except TimeoutError:
        result.append("bad_request")
        return _read_timeout(config)
    return body


def _read_timeout(config: Config) -> web.Response:
    return _error(408, f"body not received within server.read_timeout ({format_duration(config.server.read_timeout)})")


def _parse(body: bytes, result: list[str]) -> Payload | web.Response:
    try:
        return parse_payload(body)
    except PayloadError as exc:
        result.append("bad_request")
        return _error(400, str(exc))


async def _read_payload(request: web.Request, rt: Runtime, result: list[str]) -> Payload | web.Response:
    """Check type and size, read and parse (no webhook_auth: for /-/render); a Response is the error to send."""
    body = await _read_json(request, rt.config, result)
    return body if isinstance(body, web.Response) else _parse(body, result)


async def _read_plan(request: web.Request, rt: Runtime, result: list[str]) -> tuple[Payload, Plan] | web.Response:
    """_read_payload() and plan(); a resent body's plan comes from rt.plans without parsing or routing."""
    body = await _read_body(request, rt, result)
    if isinstance(body, web.Response):
        return body
    config = rt.config
    key = rt.plans.key(body)
    known = rt.plans.get(config, key)
    if known is not None:
        return known
    payload = _parse(body, result)
    if isinstance(payload, web.Response):
        return payload
    the_plan = plan(config, payload)
    rt.plans.put(config, key, payload, the_plan)
    return payload, the_plan


def _group(payload: Payload) -> dict[str, Any]:
    return {"receiver": payload.receiver, "groupLabels": payload.groupLabels, "commonLabels": payload.commonLabels,
            "commonAnnotations": payload.commonAnnotations, "externalURL": payload.externalURL,
            "truncatedAlerts": payload.truncatedAlerts}


async def accept(rt: Runtime, payload: Payload, the_plan: Plan, now: datetime) -> dict[str, Any]:
    """Durably queue, dedup or resolve every page of a planned payload; returns the summary sent back."""
    config, metrics = rt.config, rt.metrics
    summary: dict[str, Any] = {"status": "ok", "pages": []}
    firing_ids = {i for p in the_plan.pages for i in p.identities}
    for planned in the_plan.pages:
        route = planned.route
        # Pages of this group whose alerts all stopped firing are resolved (unless the group was truncated,
        # when absence proves nothing).
        if payload.truncatedAlerts == 0:
            for page in await rt.store.by_group(route.name, payload.groupKey):
                if not set(page.identities) & firing_ids and await _resolve(rt, page, route.send_resolved, now):
                    summary["pages"].append({"route": route.name, "page_key": page.key, "result": "resolved"})
        if not planned.firing:
            continue
        entry = {"route": route.name, "page_key": planned.key, "alerts": len(planned.firing)}
        if not route.escalation:
            entry["result"] = "no_contacts"
            metrics.page(route.name, "no_contacts").inc()
            summary["pages"].append(entry)
            continue
        claims = planned.claims
        # The common case, a resend of a paged group, is answered before any page is built.
        if await rt.store.seen(planned.key, claims, now):
            entry["result"] = "duplicate"
        else:
            page = new_page(planned, _group(payload), now)
            # The first attempt is committed with the page: the dispatcher can send it without another write.
            call = next_call(page, config, now)
            if not await rt.store.admit(page, claims, config.dedup.window, now):
                entry["result"] = "duplicate"
            else:
                entry["result"] = ("called" if call is not None else
                                   "quiet_hours" if page.state is PageState.ACTIVE else "no_contacts")
                if call is not None and rt.dispatcher is not None:
                    rt.dispatcher.submit(page)
        metrics.page(route.name, entry["result"]).inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("page " + entry["result"], extra={"page_key": planned.key, "route": route.name,
                                                         "alerts": len(planned.firing), "group_key": payload.groupKey})
        summary["pages"].append(entry)
    if the_plan.unrouted:
        metrics.page("", "no_route").inc()
        labels = [dict(a.labels) for a in the_plan.unrouted[:3]]
        log.warning("no route matched", extra={"labels_tried": labels, "routes": [r.name for r in config.routes],
                                               "group_key": payload.groupKey})
        summary["unrouted"] = len(the_plan.unrouted)
    return summary


async def _resolve(rt: Runtime, page, send_resolved: bool, now: datetime) -> bool:
    """Resolve a page whose alerts all stopped firing; False when it was already resolved."""
    disp = rt.dispatcher
    lock = disp.locks[page.key] if disp else contextlib.nullcontext()
    async with lock:
        fresh = await rt.store.get(page.key)
        if fresh is None or fresh.resolved_at is not None:
            return False
        cancelled = resolve(fresh, now, send_resolved=send_resolved)
        rt.metrics.calls.labels(fresh.route, "cancelled").inc(len(cancelled))
        await rt.store.put(fresh)
        await rt.store.release(fresh.claims)
    log.debug("page resolved", extra={"page_key": fresh.key, "route": fresh.route})
    return True


async def handle_alerts(request: web.Request) -> web.Response:
    """POST /alerts: the Alertmanager webhook; 200 only once every implied call is durably queued."""
    rt = request.app[RUNTIME]
    result: list[str] = []
    if rt.shutting_down:
        rt.metrics.webhook["unavailable"].inc()
        return _error(503, "shutting down")
    read = await _read_plan(request, rt, result)
    if isinstance(read, web.Response):
        rt.metrics.webhook[result[0]].inc()
        log.warning("webhook refused", extra={"status": read.status, "result": result[0],
                                              "remote": request.remote})
        return read
    parsed, the_plan = read
    firing = sum(1 for a in parsed.alerts if a.firing)
    rt.metrics.alerts_firing.inc(firing)
    rt.metrics.alerts_resolved.inc(len(parsed.alerts) - firing)
    try:
        summary = await accept(rt, parsed, the_plan, rt.clock.now())
    except StoreUnavailable as exc:
        rt.metrics.webhook["unavailable"].inc()
        log.error("store unavailable; answering 503 so Alertmanager retries", extra={"error": str(exc)})
        return _error(503, "store unavailable, retry later")
    rt.metrics.webhook["accepted"].inc()
    if rt.dispatcher is not None and any(e["result"] in ("called", "quiet_hours", "resolved")
                                         for e in summary["pages"]):
        rt.dispatcher.poke()  # only new work wakes the dispatcher; a duplicate costs it nothing
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


# ------------------------------------------------------------------------------------------ callbacks


async def handle_callback(request: web.Request) -> web.Response:
    """POST /callbacks/webex: delivery receipts and call events from the provider."""
    rt = request.app[RUNTIME]
    cb = rt.config.provider.callback
    # The credentials in the headers are checked before a byte of the body is read.
    if not callbacks.verify_headers(cb, request.headers):
        return _callback_refused(rt, request)
    body = await _read_callback(request, rt)
    if isinstance(body, web.Response):
        return body
    if not callbacks.verify_body(cb, request.headers, body):
        return _callback_refused(rt, request)
    try:
        event = callbacks.parse(body)
    except callbacks.CallbackError as exc:
        rt.metrics.callbacks.labels("unknown", "bad_request").inc()
        return _error(400, str(exc))
    key = await rt.store.find_call(correlation_id=event.correlation_id, message_id=event.message_id)
    if event.call_event:
        # Keyed on the event, not on provider.mode: calls placed before a reload still get their answers.
        return await _call_event(rt, key, event)
    result = "unknown"
    if key is not None and rt.dispatcher is not None:
        result = await rt.dispatcher.outcomes.receipt(key, correlation=event.correlation_id,
                                                      message_id=event.message_id, outcome=event.outcome,
                                                      grace=event.grace)
    rt.metrics.callbacks.labels(event.event, result).inc()
    if result == "unknown":
        log.warning("callback for an unknown call", extra={"event": event.event,
                                                          "correlation_id": event.correlation_id})
    # Receipts need only a 200.
    return web.json_response({"status": "ok"})


def _callback_refused(rt: Runtime, request: web.Request) -> web.Response:
    rt.metrics.callbacks.labels("unknown", "unauthorized").inc()
    log.warning("callback refused: wrong or missing credentials", extra={"remote": request.remote})
    return _error(401, "missing or wrong callback credentials", **{"WWW-Authenticate": 'Bearer realm="callbacks"'})


async def _read_callback(request: web.Request, rt: Runtime) -> bytes | web.Response:
    """A callback's body: at most 64 KiB, within server.read_timeout; a Response is the error to send."""
    # Separate from server.max_body_bytes (the app's client_max_size, sized for 5,000-alert webhooks).
    config, limit, body = rt.config, MAX_BODY_BYTES, None
    if request.content_length is None or request.content_length <= limit:
        try:
            async with asyncio.timeout(config.server.read_timeout.total_seconds()):
                body = await read_at_most(request.content, limit)
        except TimeoutError:
            rt.metrics.callbacks.labels("unknown", "timeout").inc()
            return _read_timeout(config)
    if body is None:
        rt.metrics.callbacks.labels("unknown", "too_large").inc()
        return _error(413, f"callback body over {limit} bytes")
    return body


async def _call_event(rt: Runtime, key: str | None, event: callbacks.Event) -> web.Response:
    """A programmable call's event (interactive mode): the platform reads the next action from the body."""
    answer = Answer("unknown", HANGUP)
    if key is not None and rt.dispatcher is not None:
        answer = await rt.dispatcher.outcomes.call_event(key, event)
    rt.metrics.callbacks.labels(event.event, answer.result).inc()
    if answer.result == "unknown":
        log.warning("call event for an unknown call", extra={"event": event.event, "session_id": event.message_id,
                                                            "correlation_id": event.correlation_id})
    config = rt.config
    silence = config.acknowledgement.silence
    pages = [p for p in answer.acknowledged if p.resolved_at is None]  # a resolved alert needs no silence
    if pages and silence is not None and rt.silencer is not None:
        # In the background: the callee is waiting for the thank-you, not for Alertmanager.
        rt.silencer.create(silence, silences_for(pages, answer.contact, rt.clock.now(), silence,
                                                 config.dedup.ignore_labels), pages[0].key)
    return web.json_response(answer.action)


# ---------------------------------------------------------------------------------------- operations


async def handle_metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    with contextlib.suppress(StoreUnavailable):
        rt.metrics.queue_depth.set(await rt.store.depth())
    resp = web.Response(body=generate_latest(rt.metrics.registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


async def handle_healthy(request: web.Request) -> web.Response:
    """GET /-/healthy: the process is alive, and its dispatcher is not stuck crashing (then restart the pod)."""
    supervisor = request.app[RUNTIME].supervisor
    if supervisor is not None and not supervisor.healthy:
        return web.Response(status=503, text=f"not healthy: the dispatcher crashed {supervisor.crashes} times in a "
                                             "row (see the log)\n")
    return web.Response(text="alert2voice is healthy.\n")


async def readiness(rt: Runtime) -> list[str]:
    """What keeps the service from being ready (empty when ready)."""
    problems = []
    if rt.shutting_down:
        problems.append("shutting down")
    try:
        await rt.store.ping()
    except StoreUnavailable as exc:
        problems.append(f"store unavailable: {exc}")
    if rt.dispatcher is None or not rt.dispatcher.running:
        problems.append("dispatcher not running")
    if rt.dispatcher is not None and not rt.dispatcher.provider_healthy:
        problems.append("provider refuses our credentials (401/403): check provider.service_key")
    return problems


async def handle_ready(request: web.Request) -> web.Response:
    problems = await readiness(request.app[RUNTIME])
    if problems:
        return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
    return web.Response(text="alert2voice is ready.\n")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_refusal(auth: WebhookAuth | None, remote: str | None, authorization: str) -> int | None:
    """The status refusing an admin request (401, 403), or None: admin_auth if set, else loopback clients only."""
    if auth is None:
        return None if is_loopback(remote) else 403
    return None if authorized(auth, authorization) else 401


def admin(handler: Handler) -> Handler:
    """Guard an operator endpoint (/-/reload, /-/render, /api/v1/pages) with admin_refusal()."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        auth = request.app[RUNTIME].config.server.admin_auth
        status = admin_refusal(auth, request.remote, request.headers.get("Authorization", ""))
        if status is None:
            return await handler(request)
        log.warning("admin request refused", extra={"path": request.path, "status": status,
                                                    "remote": request.remote})
        if auth is None:
            return _error(403, "this endpoint answers loopback clients only; set server.admin_auth to allow others")
        return _unauthorized(auth)

    return guarded


@admin
async def handle_reload(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        await rt.reload()
    except ConfigError as exc:
        return _error(400 if exc.problems else 409, str(exc) or "started without a config file: nothing to reload")
    return web.json_response({"status": "ok"})


def render_calls(rt: Runtime, payload: Payload, now: datetime) -> list[dict[str, Any]]:
    """For each call the payload would cause now: route, contact, correlationId and SSML (render and /-/render)."""
    config = rt.config
    out = []
    for planned in plan(config, payload).pages:
        if not planned.firing:
            continue
        target = first_callable(config, planned.route, now, planned.severities)
        entry: dict[str, Any] = {"route": planned.route.name, "page_key": planned.key,
                                 "correlation_id": correlation_id(planned.key, new_nonce(), 1)}
        if target is None:
            entry.update(contact=None, reason="nobody callable now (no escalation, quiet hours or nobody on call)")
            out.append(entry)
            continue
        name = planned.route.template_for(config.templates, "firing")
        contact = config.contacts[target.contact] if target.contact else None
        voice = config.speech.for_contact(contact.speech if contact else None)
        digit = config.acknowledgement.digit if config.provider.mode == "interactive" else None
        ssml = rt.speech.render(name, SpeechContext(payload=payload, alerts=list(planned.firing),
                                                    route=planned.route.name, contact=target.contact or "", now=now,
                                                    language=voice.language, ack_digit=digit))
        entry.update(contact=target.contact, number=mask_number(target.number), reason=target.reason,
                     text_format=rt.speech.text_format(name), ssml=ssml)
        out.append(entry)
    return out


@admin
async def handle_render(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    result: list[str] = []
    parsed = await _read_payload(request, rt, result)
    if isinstance(parsed, web.Response):
        return parsed
    return web.json_response({"calls": render_calls(rt, parsed, rt.clock.now())})


# /api/v1/pages lists at most this many pages, and this many alerts of each (alerts_total counts them all).
PAGES_LIMIT = 500
ALERTS_LISTED = 20


def page_json(page) -> dict[str, Any]:
    """A page for /api/v1/pages: no secrets, numbers masked, the first ALERTS_LISTED alerts."""
    return {
        "key": page.key, "route": page.route, "group_key": page.group_key, "state": page.state.value,
        "received_at": page.received_at.isoformat(), "updated_at": page.updated_at.isoformat() if page.updated_at
        else None, "due_at": page.due_at.isoformat() if page.due_at else None,
        "alerts": [{"labels": a["labels"], "status": a["status"]} for a in page.alerts[:ALERTS_LISTED]],
        "alerts_total": len(page.alerts),
        "calls": [{"attempt": c.attempt, "kind": c.kind, "contact": c.contact, "number": mask_number(c.number),
                   "correlation_id": c.correlation_id, "state": c.state.value, "tries": c.tries,
                   "created_at": c.created_at.isoformat(),
                   "accepted_at": c.accepted_at.isoformat() if c.accepted_at else None,
                   "ended_at": c.ended_at.isoformat() if c.ended_at else None, "error": c.error}
                  for c in page.calls],
    }


@admin
async def handle_pages(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        limit = max(1, min(PAGES_LIMIT, int(request.query.get("limit", "50"))))
    except ValueError:
        return _error(400, "limit must be an integer")
    try:
        pages = await rt.store.recent(limit)
    except StoreUnavailable as exc:
        return _error(503, f"store unavailable: {exc}")
    return web.json_response({"pages": [page_json(p) for p in pages]})


# -------------------------------------------------------------------------------------------- factory


def create_app(config: Config, *, config_path: Path | None = None, provider: Provider | None = None,
               store: Store | None = None, clock: Clock | None = None,
               registry: CollectorRegistry | None = None, run_dispatcher: bool = True) -> web.Application:
    """The whole service as an aiohttp app; the CLI and the tests call this same factory."""
    # aiohttp stops reading a body past this (our handlers turn that into a JSON 413). Fixed at start: a
    # reload that changes server.max_body_bytes takes effect for the Content-Length check only.
    app = web.Application(client_max_size=config.server.max_body_bytes)
    metrics = Metrics(registry)
    rt = Runtime(config=config, config_path=config_path, metrics=metrics, clock=clock or Clock(),
                 store=store or open_store(config), provider=provider)
    rt.apply(config)
    metrics.reload_ok.set(1)
    metrics.reload_time.set(time.time())
    app[RUNTIME] = rt
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_provider_ctx)
    if run_dispatcher:
        app.cleanup_ctx.append(_dispatcher_ctx)
    else:
        app.on_startup.append(_make_dispatcher)
    app.router.add_post("/alerts", handle_alerts)
    app.router.add_post("/callbacks/webex", handle_callback)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/-/healthy", handle_healthy)
    app.router.add_get("/-/ready", handle_ready)
    app.router.add_post("/-/reload", handle_reload)
    app.router.add_post("/-/render", handle_render)
    app.router.add_get("/api/v1/pages", handle_pages)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    await rt.store.open()
    try:
        yield
    finally:
        await rt.store.close()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's one HTTP client session: provider requests and Alertmanager silences."""
    rt = app[RUNTIME]
    async with aiohttp.ClientSession() as session:
        rt.http = session
        rt.silencer = Silencer(session, rt.metrics.silence_requests)
        try:
            yield
        finally:
            await rt.silencer.close(grace=5.0)


async def _provider_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    if rt.provider is None:
        cfg = rt.config.provider
        assert cfg.service_key is not None and rt.http is not None  # resolved by config validation; _http_ctx
        # WebexProvider sets its own timeout on every request.
        rt.provider = WebexProvider(rt.http, base_url=cfg.url, service_key=cfg.service_key.get_secret_value(),
                                    timeout=cfg.timeout.total_seconds(), observe=rt.metrics.observe_provider)
    yield


async def _make_dispatcher(app: web.Application) -> None:
    rt = app[RUNTIME]
    assert rt.provider is not None
    rt.dispatcher = Dispatcher(config=lambda: rt.config, store=rt.store, provider=rt.provider,
                               speech=lambda: rt.speech, metrics=rt.metrics, clock=rt.clock)


async def _dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    await _make_dispatcher(app)
    dispatcher = rt.dispatcher
    assert dispatcher is not None
    # Whatever escapes the loop (a bug, not only an unavailable store) is logged and the loop restarts.
    rt.supervisor = Supervisor("dispatcher", dispatcher.run, monotonic=rt.clock.monotonic,
                               sleep=getattr(rt.clock, "sleep", asyncio.sleep), stopping=lambda: dispatcher.stopping)
    task = asyncio.create_task(rt.supervisor.run(), name="dispatcher")
    rt.dispatcher_task = task
    # Let the loop start so /-/ready is true as soon as the server listens.
    await asyncio.sleep(0)
    try:
        yield
    finally:
        await rt.drain()

