"""What the dispatcher's rooms share: their dependencies, and what happens to a call's record."""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..clock import Clock
from ..config import Config
from ..logs import mask_number
from ..metrics import Metrics
from ..pages import Call, CallState, Page, record_outcome
from ..provider import Accepted, Provider
from ..provider.health import ProviderHealth
from ..speech import Speech
from ..store import Store
from ..store.base import Conflict, Lease
from ..suppression import Suppression
from .locks import KeyedLocks
from .work import Effects, Work

log = logging.getLogger("alert2voice.dispatch")


def lease_span(cfg: Config) -> timedelta:
    """How long a replica holds a page it works on: one provider request and its bookkeeping, with room.

    Renewed just before each provider request, so a request (bounded by provider.timeout) never outlives
    it; after a crash, another replica takes the page once it ends.
    """
    return cfg.provider.timeout * 2 + timedelta(seconds=5)


def _nothing() -> None:
    return None


# What a lease must still cover beyond a provider request for hold() not to renew it: the page's write after it.
LEASE_SLACK = timedelta(seconds=5)


def new_owner() -> str:
    """Who holds a lease in the store: this process (several replicas share one store)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Context:
    """The dispatcher's dependencies; `config` and `speech` return what is in force now (a reload swaps them)."""

    config: Callable[[], Config]
    store: Store
    provider: Provider
    speech: Callable[[], Speech]
    metrics: Metrics
    clock: Clock
    health: ProviderHealth  # what calls meet feeds the same health the probes do
    rng: random.Random = field(default_factory=random.Random)
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    owner: str = field(default_factory=new_owner)
    suppression: Suppression | None = None  # asks Alertmanager before a call (alertmanager.urls); None: never
    # Until when this process holds the leases it took on the pages it works on now (admitted, taken, renewed,
    # kept by a write): what hold() need not renew. Dropped when the page's step ends.
    leases: dict[str, datetime] = field(default_factory=dict)
    # Told when a change wrote a page with work due then: the dispatcher's poke(at) (Dispatcher sets it).
    due: Callable[[datetime], None] = lambda at: None

    def lease(self, cfg: Config) -> Lease:
        """A lease for this process from now, as long as lease_span()."""
        return Lease(self.owner, self.clock.now() + lease_span(cfg))

    def held(self, key: str, cfg: Config) -> Lease:
        """A lease for this process from now, recorded as held on the page once the store has it (see hold())."""
        lease = self.lease(cfg)
        self.leases[key] = lease.until
        return lease

    async def hold(self, page: Page, cfg: Config) -> None:
        """Make sure this process holds the page for a whole provider request and its bookkeeping from now:
        renewed unless the lease it holds still covers that; Conflict when another replica took it over."""
        until = self.leases.get(page.key)
        if until is not None and until - self.clock.now() >= cfg.provider.timeout + LEASE_SLACK:
            return  # taken a moment ago (admitted, taken due): nobody else can have it before it ends
        lease = self.lease(cfg)
        # With the epoch the page was read under: a page read before the store lost its data is not held.
        if not await self.store.renew(page.key, lease._replace(epoch=page.epoch)):
            raise Conflict(f"lease on page {page.key[:12]} lost: another replica took it over")
        self.leases[page.key] = lease.until

    @property
    def work(self) -> Work:
        """The one way a page changes (see work.py)."""
        return Work(self.store, self.locks, self.due)

    def log(self, page: Page, call: Call, msg: str, level: int = logging.INFO, **fields) -> None:
        """One log line about a call, with the page key, route, correlationId and masked number."""
        self.line(page, call, msg, level, **fields)()

    @staticmethod
    def line(page: Page, call: Call, msg: str, level: int = logging.INFO, **fields) -> Callable[[], None]:
        """log(), as an effect to run once the change it reports is written: `fx(ctx.line(...))`."""
        if not log.isEnabledFor(level):
            return _nothing  # a debug line on the hot path costs nothing at info
        extra = {"page_key": page.key, "route": page.route, "correlation_id": call.correlation_id,
                 "contact": call.contact, "number": mask_number(call.number), "attempt": call.attempt, **fields}
        return lambda: log.log(level, msg, extra=extra)

    def accepted(self, page: Page, call: Call, cfg: Config, accepted: Accepted, now: datetime, fx: Effects) -> None:
        """The provider took the call: record its messageId and wait for its outcome until the deadline."""
        call.state, call.message_id, call.accepted_at, call.error = CallState.ACCEPTED, accepted.message_id, now, None
        call.settle_at = None
        page.due_at = now + cfg.provider.callback.deadline
        self.health.call_succeeded()
        if call.kind == "page" and call.attempt == 1:
            seconds = max(0.0, (now - page.received_at).total_seconds())
            fx(lambda: self.metrics.time_to_call.observe(seconds))
        # Debug only: the info line for an attempt is its outcome (one line per attempt at info level).
        fx(self.line(page, call, "call accepted by provider", logging.DEBUG, message_id=accepted.message_id,
                     tries=call.tries, seconds_since_webhook=round((now - page.received_at).total_seconds(), 3)))

    def ended(self, page: Page, call: Call, outcome: CallState, cfg: Config, now: datetime, fx: Effects,
              **fields) -> None:
        """Record a call's final outcome (once), count it and log it."""
        if record_outcome(page, call, outcome, cfg, now):
            fx(self.metrics.calls.labels(page.route, outcome.value).inc)
            level = {CallState.FAILED: logging.ERROR, CallState.THROTTLED: logging.WARNING}.get(outcome, logging.INFO)
            fx(self.line(page, call, f"call {outcome.value}", level, message_id=call.message_id, tries=call.tries,
                         kind=call.kind, step=call.step + 1, error=call.error, **fields))
