"""The listener's edges: a header-read deadline, an idle keep-alive timeout, a cap on open connections,
the file-descriptor limit, and one log line per burst of failed accepts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..logs import Repeated

log = logging.getLogger(__name__)

# File descriptors kept back from the connection cap: the store, the provider's sessions, the log, the config.
FD_RESERVE = 128


@dataclass(frozen=True)
class Limits:
    """What a connection may do: `header_timeout` to send a request's header once its first byte came,
    `idle_timeout` between requests (aiohttp's keep-alive), at most `max_connections` open at once."""

    header_timeout: float
    idle_timeout: float
    max_connections: int


class GuardedHandler(RequestHandler):
    """aiohttp's protocol, plus a header deadline and a place in the server's least-recently-used order.

    aiohttp (3.14) has no header-read timeout: its keep-alive timer (3630 s by default) is all that bounds a
    client that sends half a header and stops.
    """

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard_server = manager
        # When the first byte of a header came (loop time), while it is still being read; None otherwise.
        self.header_since: float | None = None
        self._busy = False  # a request's header was read and its handler has not finished

    @property
    def idle(self) -> bool:
        """No request being handled or queued: waiting for the next request's header (or its first byte)."""
        return not self._busy and not self._messages

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard_server.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.header_since = None
        self._guard_server.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.header_since is None and self.idle:
            self.header_since = self._loop.time()
            self._guard_server.watch()
        self._guard_server.touched(self)
        super().data_received(data)
        if self._messages:  # a whole header parsed: the request is the handler's now
            self._busy = True
            self.header_since = None

    async def _handle_request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._handle_request(*args, **kwargs)
        finally:
            self._busy = False

    def header_timed_out(self, now: float) -> bool:
        """Close the connection if its header has taken longer than server.header_timeout (GuardedServer.sweep)."""
        if self.header_since is None or now - self.header_since < self._guard_server.limits.header_timeout:
            return False
        self.header_since = None
        if self.idle:
            log.debug("request header not received within server.header_timeout; connection closed")
            self.drop()
        return True

    def drop(self) -> None:
        """Close now, without a response (what Go's ReadHeaderTimeout and a full server do)."""
        # Out of the count at once: accepts arriving together run before this connection_lost does.
        self._guard_server.closed(self)
        self.force_close()
        if self.transport is not None:
            self.transport.close()


class GuardedServer(web.Server):
    """aiohttp's low-level server making GuardedHandlers; past the cap a new connection takes the place of the
    connection idle the longest, and is closed itself only when every other one is handling a request."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, keepalive_timeout=limits.idle_timeout, **kwargs)
        self.limits = limits
        self._open: OrderedDict[GuardedHandler, None] = OrderedDict()  # least recently active first
        # One timer for every connection's header deadline, not one per request: it looks every quarter of
        # header_timeout while a header is being read, so a slow header is cut off within 1.25 x header_timeout.
        self._sweep: asyncio.TimerHandle | None = None
        self._full = Repeated(log, "server.max_connections reached; the connections idle the longest are closed",
                              every=60.0)

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def opened(self, handler: GuardedHandler) -> None:
        self._open[handler] = None
        if len(self._open) <= self.limits.max_connections:
            return
        oldest = next((h for h in self._open if h is not handler and h.idle), None)
        self._full("a new connection refused: every other one is handling a request" if oldest is None
                   else "an idle connection closed", max_connections=self.limits.max_connections)
        (oldest or handler).drop()

    def watch(self) -> None:
        """A header is being read: make sure a sweep will look at it."""
        if self._sweep is None:
            self._sweep = self._loop.call_later(self.limits.header_timeout / 4, self._swept)

    def _swept(self) -> None:
        self._sweep = None
        now = self._loop.time()
        reading = False
        for handler in list(self._open):
            if not handler.header_timed_out(now) and handler.header_since is not None:
                reading = True
        if reading:
            self.watch()

    def touched(self, handler: GuardedHandler) -> None:
        if handler in self._open:
            self._open.move_to_end(handler)

    def closed(self, handler: GuardedHandler) -> None:
        self._open.pop(handler, None)

    @property
    def open_connections(self) -> int:
        return len(self._open)


class GuardedRunner(web.AppRunner):
    """An AppRunner serving through a GuardedServer (aiohttp has no public hook for its protocol factory)."""

    def __init__(self, app: web.Application, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, limits=self.limits,
                             loop=asyncio.get_running_loop(), **self._kwargs)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (Go's runtime does the same at start); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # macOS reports unlimited but refuses more than its kern.maxfilesperproc
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_limits(header_timeout: float, idle_timeout: float, max_connections: int, fd_limit: int) -> Limits:
    """The limits to serve with: server.max_connections, lowered to leave FD_RESERVE descriptors free."""
    room = max(fd_limit - FD_RESERVE, 1) if fd_limit != resource.RLIM_INFINITY else max_connections
    if max_connections > room:
        log.warning("server.max_connections lowered to what the file-descriptor limit leaves room for",
                    extra={"max_connections": max_connections, "fd_limit": fd_limit, "serving_at_most": room})
    return Limits(header_timeout, idle_timeout, min(max_connections, room))


class AcceptFailures(logging.Filter):
    """asyncio logs "socket.accept() out of system resource" once per failed accept (EMFILE: the descriptors
    ran out), thousands a second; this filter lets the first of a burst through and counts the rest, said
    in one line when the burst ends (`every` seconds after it began)."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, every: float = 10.0) -> None:
        super().__init__()
        self.every = every
        self.suppressed = 0
        self._burst: asyncio.TimerHandle | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        if self._burst is not None:
            self.suppressed += 1
            return False
        try:
            self._burst = asyncio.get_running_loop().call_later(self.every, self._summary)
        except RuntimeError:  # no loop: nothing to end the burst with, so every line passes
            return True
        return True

    def _summary(self) -> None:
        self._burst = None
        if self.suppressed:
            log.error(f"{self.MESSAGE}: {self.suppressed} more in {self.every:g} s",
                      extra={"suppressed": self.suppressed})
            self.suppressed = 0


def install_accept_filter(every: float = 10.0) -> AcceptFailures:
    """Put an AcceptFailures filter on the 'asyncio' logger (once); returns it."""
    logger = logging.getLogger("asyncio")
    for existing in logger.filters:
        if isinstance(existing, AcceptFailures):
            return existing
    accept = AcceptFailures(every)
    logger.addFilter(accept)
    return accept
