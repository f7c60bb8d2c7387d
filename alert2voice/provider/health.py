"""ProviderHealth: the one place that knows whether the provider takes our calls, from probes and from real calls.

A probe is one cheap authenticated request, `GET /v1/voice/calls/a2v-probe-<random>` (WebexProvider.probe): the
reference documents no "whoami" endpoint, and this is the cheapest authenticated read it does document. The
platform answers an id it does not know with 404 and an empty body (reference §3), after checking the key:
a wrong key gets 401/403 (7001), a missing one 403 (7002). The random id can never name a real call, and its
`a2v-probe-` prefix lets a request log tell probes from status polls.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from ..logs import SCRUBBER
from ..metrics import PROVIDER_STATUSES, Metrics
from .base import AuthFailed, NetworkError, ProviderError, RateLimited, Rejected

log = logging.getLogger("alert2voice.provider")

# A probe about every minute while the provider is healthy, every 15 seconds after a failure (so that a fixed key
# or a provider back is seen soon), each ±10 % so that replicas started together do not probe together.
PROBE_INTERVAL = 60.0
PROBE_INTERVAL_AFTER_FAILURE = 15.0
JITTER = 0.1

# The correlationId prefix of `alert2voice test-call`: its receipts come to /callbacks/webex, and find no page.
TEST_CALL_PREFIX = "a2v-test-"

Probe = Callable[[], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Health:
    """What the last probe or call said: a status of PROVIDER_STATUSES (or "unknown" before any), in words."""

    status: str
    words: str
    at: datetime | None = None
    via: str = ""  # "probe" or "call"

    @property
    def healthy(self) -> bool:
        """Whether calls can go out, as far as is known (not known yet counts as yes)."""
        return self.status in ("ok", "unknown")


@dataclass
class ReceivedTestCall:
    """What the receipts of the last `alert2voice test-call` said, in order, as this replica received them."""

    correlation_id: str
    events: list[str]
    at: datetime


def status_of(exc: ProviderError | None) -> str:
    """A probe's answer as a status: ok (404, or any answer that took the key), auth, unreachable or error."""
    if exc is None or isinstance(exc, RateLimited):
        return "ok"  # 7020 is the tenant's own limit: the platform knew whose key it was
    if isinstance(exc, AuthFailed):
        return "auth"
    if isinstance(exc, NetworkError):
        return "unreachable"
    return "error"  # 5xx, a 3xx (a wrong base_url) or a 4xx nobody expects of a GET


# What anyone may read (the unauthenticated /-/ready): the status, without the provider's address or its answers.
TERSE = {"ok": "healthy", "auth": "service key refused", "unreachable": "unreachable",
         "error": "answers with an error"}


def describe(status: str, url: str, detail: str = "") -> str:
    """The status page's words for a status: what is wrong, and where to look."""
    if status == "ok":
        return "healthy: the service key is accepted"
    if status == "auth":
        return f"service key refused ({detail}): check provider.service_key and the tenant's IP allow-list"
    if status == "unreachable":
        return f"cannot connect to {url} ({detail})"
    if status == "error":
        return f"{url} answers with an error ({detail})"
    return "not checked yet"


class ProviderHealth:
    """The provider's health from periodic probes and from what real calls meet; feeds the metrics and the pages.

    `target` names the provider now (its base URL, for the words); `sleep` waits between probes (a test's own
    sleep drives the loop); `now` stamps each result.
    """

    def __init__(self, metrics: Metrics, *, target: Callable[[], str], now: Callable[[], datetime],
                 sleep: Sleep = asyncio.sleep, rng: random.Random | None = None,
                 interval: float = PROBE_INTERVAL, after_failure: float = PROBE_INTERVAL_AFTER_FAILURE) -> None:
        self.metrics, self.target, self.now, self.sleep = metrics, target, now, sleep
        self.rng = rng or random.Random()
        self.interval, self.after_failure = interval, after_failure
        self.current = Health("unknown", describe("unknown", ""))
        self.test_call: ReceivedTestCall | None = None
        self.probes = 0
        self.checked = asyncio.Event()  # set after each probe (tests wait on it)
        self._sooner = asyncio.Event()  # a call failed: probe after `after_failure`, not at the planned time
        self._recheck = asyncio.Event()  # probe now
        self._show()

    @property
    def healthy(self) -> bool:
        return self.current.healthy

    def record(self, exc: ProviderError | None, via: str) -> Health:
        """Take one result (None: the provider took the request); log a change of status."""
        status = status_of(exc)
        # The provider's text may echo what was sent: no secret reaches the status page, /-/ready or a log line.
        detail = "" if exc is None else SCRUBBER.scrub(str(exc))
        before = self.current
        self.current = Health(status, describe(status, self.target(), detail), self.now(), via)
        if status != before.status:
            level = logging.INFO if status == "ok" else logging.ERROR
            log.log(level, f"provider {self.current.words}", extra={"provider_status": status, "via": via,
                                                                     "previous": before.status})
            self._show()
        return self.current

    def call_succeeded(self) -> None:
        """A real call was accepted."""
        if self.current.status != "ok":
            self.record(None, "call")

    def call_failed(self, exc: ProviderError) -> None:
        """A real call met this error; what says nothing about the provider (a refused number, 429) is ignored."""
        if isinstance(exc, Rejected | RateLimited):
            return
        self.record(exc, "call")
        self._sooner.set()

    def test_call_event(self, correlation_id: str, event: str, at: datetime) -> None:
        """A receipt of a test call (TEST_CALL_PREFIX): kept for the status page, the last test call's only."""
        if self.test_call is None or self.test_call.correlation_id != correlation_id:
            self.test_call = ReceivedTestCall(correlation_id, [], at)
        self.test_call.events.append(event)
        self.test_call.at = at

    async def check(self, probe: Probe) -> Health:
        """Probe once and record the result."""
        try:
            await probe()
        except ProviderError as exc:
            health = self.record(exc, "probe")
        else:
            health = self.record(None, "probe")
        self.probes += 1
        self.metrics.provider_probes.labels(health.status).inc()
        self.checked.set()
        return health

    def next_delay(self) -> float:
        """Seconds to the next probe: `interval` while healthy, `after_failure` after a failure, jittered."""
        base = self.interval if self.current.status == "ok" else self.after_failure
        return base * self.rng.uniform(1 - JITTER, 1 + JITTER)

    def recheck(self) -> None:
        """Probe now, not at the planned time: a reload may have changed the key or the address."""
        self._recheck.set()

    async def run(self, probe: Probe) -> None:
        """Probe now, then about every `interval` (sooner after a failure, at once after recheck()) until cancelled."""
        while True:
            self._sooner.clear()
            self._recheck.clear()
            try:
                await self.check(probe)
            except Exception:  # a bug, not the provider's answer (check() takes those): logged, and probed again
                log.exception("provider probe failed")
            await self._wait(self.next_delay())

    async def _wait(self, seconds: float) -> None:
        """Sleep `seconds`; a call failing meanwhile brings the end to at most `after_failure` from then, once per
        wait, so that failing calls never make probes more frequent than that; recheck() ends it."""
        start = self.now()
        if await self._sleep(seconds, self._sooner, self._recheck) is not self._sooner:
            return  # the time has come, or a recheck
        left = seconds - (self.now() - start).total_seconds()
        rest = min(left, self.after_failure * self.rng.uniform(1 - JITTER, 1 + JITTER))
        if rest > 0:
            await self._sleep(rest, self._recheck)

    async def _sleep(self, seconds: float, *events: asyncio.Event) -> asyncio.Event | None:
        """Sleep `seconds` or until one of `events` is set: which one (None when the time passed)."""
        sleeping = asyncio.ensure_future(self.sleep(seconds))
        waits = {asyncio.ensure_future(event.wait()): event for event in events}
        try:
            done, _ = await asyncio.wait({sleeping, *waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, *waits):
                task.cancel()
        if sleeping in done:
            return None
        return next(event for task, event in waits.items() if task in done)

    def _show(self) -> None:
        self.metrics.provider_up.set(1 if self.current.healthy else 0)
        for status in PROVIDER_STATUSES:
            self.metrics.provider_status.labels(status).set(1 if status == self.current.status else 0)
