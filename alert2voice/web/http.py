"""What every handler answers with: JSON errors, and bodies read within their size and time limits."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..auth import challenge
from ..config import Config, WebhookAuth
from ..units import format_duration
from .keys import LIVE, REFUSALS

log = logging.getLogger("alert2voice.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The status page's HTML needs inline <style>, its own forms and its own <audio>; nothing else, and no frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; media-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error(status: int, message: str, **headers: str) -> web.Response:
    """A JSON error: {"status": "error", "error": message}."""
    return web.json_response({"status": "error", "error": message}, status=status, headers=headers or None)


class Refusal(Exception):
    """A request refused before any work is done: its HTTP status, the result its handler counts, what was wrong.

    Raised where the refusal is found (read_json, parse, require_credentials, a callback's checks) and caught
    once by the handler, which counts `result` in its own metric and answers `response()` — gidgethub's
    BadRequest is the model; no out-parameter, no `X | web.Response` to test at every step.
    """

    def __init__(self, status: int, result: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.result, self.message, self.headers = status, result, message, headers

    def response(self) -> web.Response:
        """The JSON error that answers it (closing the connection when it says `Connection: close`)."""
        response = error(self.status, self.message, **self.headers)
        if self.headers.get("Connection") == "close":
            response.force_close()
        return response


def refusals(handler: Handler) -> Handler:
    """Answer a Refusal the handler raises with its JSON error: for handlers that count no refusals of their own."""

    @functools.wraps(handler)
    async def answering(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refusal as refusal:
            return refusal.response()

    return answering


def unauthorized(auth: WebhookAuth) -> Refusal:
    """401 with the WWW-Authenticate challenge of the credentials configured."""
    return Refusal(401, "unauthorized", "missing or wrong credentials", **{"WWW-Authenticate": challenge(auth)})


def read_timeout(config: Config, result: str) -> Refusal:
    """408: the body did not arrive within server.read_timeout (counted as `result`)."""
    return Refusal(408, result,
                   f"body not received within server.read_timeout ({format_duration(config.server.read_timeout)})")


async def read_json(request: web.Request, config: Config) -> bytes:
    """Check type and size, read within server.read_timeout; raises the Refusal (415, 413, 408) otherwise."""
    if request.content_type != "application/json":
        raise Refusal(415, "unsupported_media_type",
                      f"Content-Type must be application/json, got {request.content_type or 'none'!r}")
    limit = config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, "too_large",
                      f"body of {request.content_length} bytes is over server.max_body_bytes ({limit})")
    try:
        if request.content.is_eof():
            return await request.read()  # all here already: nothing to time out
        async with asyncio.timeout(config.server.read_timeout.total_seconds()):
            # aiohttp enforces client_max_size (set from max_body_bytes) while reading, chunked bodies too.
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refusal(413, "too_large", f"body is over server.max_body_bytes ({limit})") from None
    except TimeoutError:
        raise read_timeout(config, "bad_request") from None


def browser_page(handler: Handler) -> Handler:
    """Guard what a browser reads or posts (the status page, its forms, its previews): a Host that is not one of
    ours (server.allowed_hosts, public_url's host) is refused with 421 before anything is read, which defeats
    DNS rebinding; every answer carries SECURITY_HEADERS (no script, no framing, no sniffing, no referrer)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not request.app[LIVE].config.server.host_allowed(request.host):
            request.app[REFUSALS](log, "request for a foreign host refused", "misdirected", path=request.path,
                                  host=request.host, remote=request.remote)
            response: web.StreamResponse = error(
                421, "this host name is not one of server.allowed_hosts or server.public_url's")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # a redirect after a form's POST
                exc.headers.update(SECURITY_HEADERS)
                raise
        response.headers.update(SECURITY_HEADERS)
        return response

    return guarded
