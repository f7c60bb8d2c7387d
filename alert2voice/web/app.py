"""create_app(): the wiring, the routes, and the cleanup contexts that own the store, sessions and dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from ..admission import Admission
from ..clock import Clock
from ..config import Config
from ..dispatch import Dispatcher
from ..heartbeats import Heartbeats
from ..live import LiveConfig
from ..logs import Refusals
from ..metrics import Metrics
from ..preview import Previews
from ..provider import Provider
from ..provider.health import ProviderHealth
from ..provider.webex import WebexProvider
from ..silences import Silencer
from ..store import Store, StoreUnavailable, open_store
from ..store.clock import StoreClock
from ..supervisor import Supervisor
from ..suppression import Suppression
from . import callbacks, heartbeats, ops, page_actions, status, webhook
from .keys import (
    ADMISSION,
    CLOCK,
    DISPATCHER,
    DISPATCHER_TASK,
    HEALTH,
    HEARTBEATS,
    LIVE,
    METRICS,
    OUTCOMES,
    PREVIEWS,
    PROVIDER,
    REFUSALS,
    SHUTDOWN,
    SILENCER,
    SPEAKER,
    STORE,
    SUPERVISOR,
    SUPPRESSION,
    WORK,
)


def create_app(config: Config, *, config_path: Path | None = None, provider: Provider | None = None,
               store: Store | None = None, clock: Clock | None = None,
               registry: CollectorRegistry | None = None) -> web.Application:
    """The whole service as an aiohttp app; the CLI and the tests call this same factory."""
    # aiohttp stops reading a body past this (our handlers turn that into a JSON 413). Fixed at start: a
    # reload that changes server.max_body_bytes takes effect for the Content-Length check only.
    app = web.Application(client_max_size=config.server.max_body_bytes)
    metrics = Metrics(registry)
    app[METRICS] = metrics
    app[LIVE] = LiveConfig(config, metrics, config_path)
    app[STORE] = store = store or open_store(config)
    metrics.checkpoint_failures.read = lambda: getattr(store, "checkpoint_failures", 0)  # SQLite's alone
    metrics.store_operations.read = lambda: getattr(store, "operations", 0)
    metrics.store_commits.read = lambda: getattr(store, "commits", 0)
    # `clock` is this process's; what replicas compare is read from the store's (a replica's wall clock may be off).
    app[CLOCK] = StoreClock(clock or Clock(), store.time, skew=metrics.clock_skew.set)
    app[SHUTDOWN] = asyncio.Event()
    live, process_clock = app[LIVE], app[CLOCK]
    app[HEALTH] = health = ProviderHealth(metrics, target=lambda: live.config.provider.url, now=process_clock.now,
                                          sleep=process_clock.sleep)
    app[REFUSALS] = Refusals(process_clock.monotonic)
    app[PREVIEWS] = Previews()
    live.on_reload.append(lambda _: health.recheck())  # a new key or address is known at once, fixed or broken
    if provider is not None:
        app[PROVIDER] = provider
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_clock_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_probe_ctx)
    app.cleanup_ctx.append(_dispatcher_ctx)
    app.cleanup_ctx.append(_heartbeats_ctx)
    app.router.add_post("/alerts", webhook.handle_alerts)
    app.router.add_post("/callbacks/webex", callbacks.handle_callback)
    app.router.add_post("/heartbeats/{name}", heartbeats.handle_heartbeat)
    app.router.add_get("/metrics", ops.handle_metrics)
    app.router.add_get("/-/healthy", ops.handle_healthy)
    app.router.add_get("/-/ready", ops.handle_ready)
    app.router.add_post("/-/reload", ops.handle_reload)
    app.router.add_post("/-/render", ops.handle_render)
    app.router.add_get("/api/v1/pages", ops.handle_pages)
    app.router.add_get("/api/v1/pages/{key}", ops.handle_page)
    app.router.add_post("/api/v1/pages/{key}/ack", page_actions.handle_ack)
    app.router.add_post("/api/v1/pages/{key}/escalate", page_actions.handle_escalate)
    app.router.add_get("/", status.handle_status)
    app.router.add_get("/pages/{key}", status.handle_page)
    app.router.add_post("/pages/{key}/{action:ack|escalate}", page_actions.handle_form)
    app.router.add_get("/pages/{key}/calls/{attempt:[0-9]+}.wav", status.handle_call_wav)
    return app


async def drain(app: web.Application) -> None:
    """SIGTERM: answer 503 to new webhooks, let in-flight calls finish within server.shutdown_grace."""
    app[SHUTDOWN].set()
    task = app.get(DISPATCHER_TASK)
    if task is not None and not task.done():
        await app[DISPATCHER].drain(task, app[LIVE].config.server.shutdown_grace.total_seconds())


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    try:
        yield
    finally:
        await store.close()


async def _clock_ctx(app: web.Application) -> AsyncIterator[None]:
    """Measure the store's clock before anything is written, then again and again while the app runs."""
    clock = app[CLOCK]
    with contextlib.suppress(StoreUnavailable):  # not answering yet: /-/ready is false until it is measured
        await clock.measure()
    task = asyncio.create_task(clock.run(), name="store-clock")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's one HTTP client session: provider requests, Alertmanager silences and checks."""
    async with aiohttp.ClientSession() as session:
        if PROVIDER not in app:
            live, metrics = app[LIVE], app[METRICS]
            # WebexProvider reads the provider section at every request: a reload reaches the next one.
            app[PROVIDER] = WebexProvider(session, lambda: live.config.provider, observe=metrics.observe_provider)
        app[SILENCER] = silencer = Silencer(session, app[METRICS].silence_requests)
        live = app[LIVE]
        # Reads the alertmanager section at every check: a reload reaches the next one.
        app[SUPPRESSION] = Suppression(session, lambda: live.config.alertmanager, app[CLOCK].monotonic)
        try:
            yield
        finally:
            await silencer.close(grace=5.0)


async def _probe_ctx(app: web.Application) -> AsyncIterator[None]:
    """Probe the provider at start and then periodically (provider/health.py), without holding the start up: until
    the first answer the health is "not checked yet". A provider without probe() (a test's fake) is not probed."""
    probe = getattr(app[PROVIDER], "probe", None)
    task = asyncio.create_task(app[HEALTH].run(probe), name="provider-probe") if probe is not None else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _make_dispatcher(app: web.Application) -> Dispatcher:
    """The dispatcher, and the services made of its rooms that the handlers use (OUTCOMES, SPEAKER, WORK, ADMISSION).

    Made at startup, not in create_app(): the dispatcher needs the provider, which the HTTP context makes from
    the app's one ClientSession; and the handlers' outcomes must share the dispatcher's page locks.
    """
    live = app[LIVE]
    dispatcher = Dispatcher(config=lambda: live.config, store=app[STORE], provider=app[PROVIDER],
                            speech=lambda: live.speech, metrics=app[METRICS], clock=app[CLOCK], health=app[HEALTH],
                            suppression=app[SUPPRESSION])
    app[DISPATCHER] = dispatcher
    app[OUTCOMES], app[SPEAKER], app[WORK] = dispatcher.outcomes, dispatcher.speaker, dispatcher.ctx.work
    app[ADMISSION] = Admission(live, app[STORE], app[METRICS], dispatcher)
    return dispatcher


async def _dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    dispatcher = _make_dispatcher(app)
    clock = app[CLOCK]
    # Whatever escapes the loop (a bug, not only an unavailable store) is logged and the loop restarts.
    clock.on_measured(dispatcher.poke)
    supervisor = app[SUPERVISOR] = Supervisor("dispatcher", lambda: _when_measured(clock, dispatcher),
                                              monotonic=clock.monotonic, sleep=clock.sleep,
                                              stopping=lambda: dispatcher.stopping)
    app[DISPATCHER_TASK] = asyncio.create_task(supervisor.run(), name="dispatcher")
    # Let the loop start so /-/ready is true as soon as the server listens.
    await asyncio.sleep(0)
    try:
        yield
    finally:
        await drain(app)


async def _when_measured(clock: StoreClock, loop: Dispatcher | Heartbeats) -> None:
    """Run the loop once `now()` is the store's time: a loop that compares shared times (leases, due times, last-seen
    times) must not run on this process's clock. It waits only when the store did not answer at start."""
    while not clock.measured and not loop.stopping:
        loop.wakeup.clear()
        await loop.wakeup.wait()  # poked when the clock is measured (on_measured), or to stop
    if not loop.stopping:
        await loop.run()


async def _heartbeats_ctx(app: web.Application) -> AsyncIterator[None]:
    """The heartbeat watcher of this replica, kept alive like the dispatcher; stopped before the dispatcher."""
    live, clock = app[LIVE], app[CLOCK]
    watcher = app[HEARTBEATS] = Heartbeats(config=lambda: live.config, store=app[STORE], dispatcher=app[DISPATCHER],
                                           metrics=app[METRICS], resolve=app[ADMISSION].resolve, clock=clock)
    clock.on_measured(watcher.poke)
    supervisor = Supervisor("heartbeat watcher", lambda: _when_measured(clock, watcher), monotonic=clock.monotonic,
                            sleep=clock.sleep, stopping=lambda: watcher.stopping)
    task = asyncio.create_task(supervisor.run(), name="heartbeats")
    try:
        yield
    finally:
        watcher.stopping = True
        watcher.poke()
        await task
