"""POST /heartbeats/{name}: a heartbeat refreshed by anything that can run curl (a cron job, a batch pipeline)."""

from __future__ import annotations

import logging

from aiohttp import web

from ..store import StoreUnavailable
from .http import Refusal, error
from .keys import CLOCK, HEARTBEATS, LIVE, SHUTDOWN
from .webhook import require_credentials

log = logging.getLogger("alert2voice.webhook")


async def handle_heartbeat(request: web.Request) -> web.Response:
    """Record the heartbeat (authenticated as /alerts is) and resolve its page; 404 for a name not configured."""
    app = request.app
    if app[SHUTDOWN].is_set():
        return error(503, "shutting down")
    config = app[LIVE].config
    # Credentials first: without them, nobody learns which heartbeat names exist.
    try:
        require_credentials(request, config)
    except Refusal as refusal:
        log.warning("heartbeat refused", extra={"status": refusal.status, "remote": request.remote})
        return refusal.response()
    name = request.match_info["name"]
    try:
        resolved = await app[HEARTBEATS].refresh(name, app[CLOCK].now())
    except KeyError:
        return error(404, f"no heartbeat named {name!r} (heartbeats: "
                          f"{', '.join(hb.name for hb in config.heartbeats) or 'none configured'})")
    except StoreUnavailable as exc:
        log.error("store unavailable; heartbeat not recorded (503)", extra={"heartbeat": name, "error": str(exc)})
        return error(503, "store unavailable, retry later")
    log.debug("heartbeat refreshed", extra={"heartbeat": name, "pages_resolved": resolved})
    return web.json_response({"status": "ok", "heartbeat": name, "pages_resolved": resolved})
