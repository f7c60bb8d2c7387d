"""A Webex Connect Voice API v1 simulator: the provider's contract on loopback, scriptable per number.

Its rooms: models.py (scripts, calls, logged requests), api.py (the provider API), calls.py (a call's life and
its callbacks), admin.py (/_sim), and this assembly. The bench tunes the process's allocator itself
(bench/simulator.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from .admin import add_admin_routes
from .api import SIMULATOR, Simulator
from .calls import CALLBACK_RETRY_DELAYS
from .models import Endpoint, Sleep

log = logging.getLogger(__name__)

DEFAULT_SERVICE_KEY = "simulator-service-key"
MAX_BODY_BYTES = 64 * 1024

def create_simulator_app(
    *,
    service_key: str = DEFAULT_SERVICE_KEY,
    callback_auth: Mapping[str, Mapping[str, str]] | None = None,
    hub_secret: str | None = None,
    callback_delay: float = 0.05,
    step_delay: float = 0.0,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.time,
    callback_retry_delays: Sequence[float] = CALLBACK_RETRY_DELAYS,
) -> web.Application:
    """Return the simulator as an aiohttp application."""
    sim = Simulator(
        service_key=service_key,
        callback_auth=callback_auth or {},
        hub_secret=hub_secret,
        callback_delay=callback_delay,
        step_delay=step_delay,
        sleep=sleep,
        clock=clock,
        callback_retry_delays=callback_retry_delays,
    )
    # Bodies over the limit must get the provider's 7022, so aiohttp's own limit sits exactly there.
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SIMULATOR] = sim

    async def callbacks_session(app: web.Application) -> Any:
        async with aiohttp.ClientSession() as session:
            sim.flows.session = session
            yield
            await sim.cancel_tasks()
            sim.flows.session = None

    app.cleanup_ctx.append(callbacks_session)

    def provider(inner: Endpoint) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return await sim.handle(request, inner)

        return handler

    app.router.add_post("/v1/voice/messages", provider(sim.post_messages))
    app.router.add_post("/v1/voice/calls", provider(sim.post_calls))
    app.router.add_get("/v1/voice/calls/{id}", provider(sim.get_call))
    add_admin_routes(app)
    return app


async def run_simulator(
    host: str, port: int, *, on_listening: Callable[[str], None] | None = None, **kwargs: Any
) -> None:
    """Serve the simulator on host:port until cancelled; log (and pass to on_listening) its base URL."""
    app = create_simulator_app(**kwargs)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        # Everything loaded so far lives as long as the process: keep it out of the collector's generations
        # (as `alert2voice serve` does), or every collection that the growing request log causes walks it again.
        gc.freeze()
        bound_host, bound_port = runner.addresses[0][:2]
        url = f"http://{bound_host}:{bound_port}" if ":" not in bound_host else f"http://[{bound_host}]:{bound_port}"
        log.info(
            "Webex Connect simulator listening on %s (service key %s)",
            url,
            _mask_key(app[SIMULATOR].service_key),
        )
        if on_listening is not None:
            on_listening(url)
        await asyncio.Event().wait()
    finally:
        gc.unfreeze()
        await runner.cleanup()


def _mask_key(key: str) -> str:
    # The default key is public test data and worth showing; a configured one is a secret.
    return key if key == DEFAULT_SERVICE_KEY else "<configured>"
