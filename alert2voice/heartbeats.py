"""The dead-man's switch: heartbeats refreshed by matching alerts or POST /heartbeats/{name}, and the watcher
that opens a page when one stops arriving.

Last-seen times live in the store, so every replica watches the same heartbeats. A page's key and its one
dedup claim derive from the heartbeat and the last-seen time it is missing since: every replica that sees
the same silence (and a restarted one) builds the same page, and store.admit() lets one of them open it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from .alertmanager import Alert
from .clock import Clock
from .config import HEARTBEAT_ROUTE_PREFIX, Config, HeartbeatConfig
from .dispatch import Dispatcher
from .logs import Repeated
from .metrics import Metrics
from .pages import Page, PageState, new_page
from .routing import PlannedPage, alert_identity, claim_key, page_key
from .speech import span
from .store import Store, StoreUnavailable
from .store.base import OpenPage

log = logging.getLogger("alert2voice.heartbeats")

# The watcher looks at the store at least this often: another replica's refresh may have armed a heartbeat
# this one has not seen, and a missing heartbeat's dedup claim may have ended.
RECHECK = timedelta(seconds=5)
ALERTNAME = "HeartbeatMissing"

Resolve = Callable[[OpenPage, bool, datetime], Awaitable[bool]]


def outage_page(hb: HeartbeatConfig, last_seen: datetime, now: datetime) -> Page:
    """The page for `hb` missing since `last_seen`: the same key and claim on every replica, for this outage only.

    Its alert starts at `last_seen`, so the templates say how long the heartbeat has been silent ("firing for 5
    minutes"), and the resolved call, queued when a refresh resolves the page, how long it was out.
    """
    route = hb.route
    since = last_seen.astimezone(UTC).isoformat()
    labels = {"alertname": ALERTNAME, "heartbeat": hb.name}
    annotations = {"summary": f"No heartbeat from {hb.name} within {span(hb.timeout.total_seconds(), exact=True)}"}
    alert = Alert(status="firing", labels=labels, annotations=annotations, startsAt=last_seen)
    planned = PlannedPage(route=route, group_key=route.name, key=page_key(route.name, route.name, [since]),
                          firing=(alert,), resolved=(), identities=(alert_identity(labels, ()),),
                          resolved_identities=(), claims=(claim_key(route.name, route.name, since),))
    group = {"receiver": route.name, "groupLabels": labels, "commonLabels": labels,
             "commonAnnotations": annotations, "externalURL": "", "truncatedAlerts": 0}
    return new_page(planned, group, now)


def is_up(hb: HeartbeatConfig, last_seen: datetime | None, now: datetime) -> bool:
    """Whether a heartbeat is fine now: refreshed within its timeout (never seen is not fine)."""
    return last_seen is not None and now < last_seen + hb.timeout


class Heartbeats:
    """One replica's heartbeats: refreshes, and the watcher loop that pages for the missing ones."""

    def __init__(self, *, config: Callable[[], Config], store: Store, dispatcher: Dispatcher, metrics: Metrics,
                 resolve: Resolve, clock: Clock | None = None) -> None:
        self.config, self.store, self.dispatcher, self.metrics = config, store, dispatcher, metrics
        self.resolve = resolve  # Admission.resolve: cancels pending calls, queues the resolved call
        self.clock = clock or Clock()
        self.wakeup = asyncio.Event()
        self._settled = asyncio.Event()  # set while the loop waits with nothing missing left unopened
        self.running = False
        self.stopping = False
        self._store_away = Repeated(log, "store unavailable; heartbeats are checked again every second",
                                    monotonic=self.clock.monotonic)

    # ------------------------------------------------------------------------------------- refresh

    async def refresh(self, name: str, now: datetime) -> int:
        """A heartbeat arrived: record it and resolve its open pages; returns how many were resolved.

        Raises KeyError for a name the config does not have, StoreUnavailable when it cannot be recorded.
        """
        hb = self.config().heartbeat(name)
        if hb is None:
            raise KeyError(name)
        await self.store.beat(name, now)
        route = hb.route
        resolved = 0
        for page in await self.store.by_group(route.name, route.name):
            if await self.resolve(page, hb.send_resolved, now):
                resolved += 1
                log.info("heartbeat back; its page resolved", extra={"heartbeat": name, "page_key": page.key,
                                                                      "route": route.name})
        self.poke()  # re-armed: the next deadline may be earlier than the one the watcher waits for
        return resolved

    # ------------------------------------------------------------------------------------- watcher

    def poke(self) -> None:
        """Look at the heartbeats now rather than at the next deadline."""
        self.wakeup.set()

    async def settled(self) -> None:
        """Look now, and return once every heartbeat missing now has its page (tests move the clock first)."""
        self._settled.clear()
        self.poke()
        await self._settled.wait()

    async def run(self) -> None:
        """Wake at the earliest deadline of the armed heartbeats (at least every RECHECK) until stopped."""
        self.running = True
        try:
            while not self.stopping:
                self.wakeup.clear()
                now = self.clock.now()
                try:
                    nxt = await self.check(now)
                except StoreUnavailable as exc:
                    self._store_away(str(exc))
                    nxt = now + timedelta(seconds=1)
                else:
                    self._store_away.over()
                wait = min(RECHECK, max(timedelta(0), nxt - now) if nxt is not None else RECHECK)
                if not self.wakeup.is_set():
                    self._settled.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=wait.total_seconds() or 0.001)
        finally:
            self.running = False
            self._settled.set()

    async def check(self, now: datetime) -> datetime | None:
        """Open the page of every armed heartbeat missing now; return the next deadline of the others."""
        cfg = self.config()
        if not cfg.heartbeats:
            return None
        beats = await self.store.beats()
        nxt: datetime | None = None
        for hb in cfg.heartbeats:
            last_seen = beats.get(hb.name)
            if last_seen is None:
                continue  # never seen: not armed
            deadline = last_seen + hb.timeout
            if deadline > now:
                nxt = deadline if nxt is None else min(nxt, deadline)
            else:
                await self._open(cfg, hb, last_seen, now)
        return nxt

    async def _open(self, cfg: Config, hb: HeartbeatConfig, last_seen: datetime, now: datetime) -> None:
        """Open the outage's page unless it is open already (here, on another replica, or before a restart)."""
        page = outage_page(hb, last_seen, now)
        if await self.store.seen(page.key, page.claims, now):
            return
        dispatcher = self.dispatcher

        async def still_missing() -> bool:
            return (await self.store.beats()).get(hb.name, last_seen) <= last_seen

        if not await dispatcher.open(page, page.claims, now, wanted=still_missing):
            self.metrics.page(page.route, "duplicate").inc()  # another replica opened it between seen() and admit()
            return
        if not await still_missing():
            # A refresh reached another replica while this one opened the page (and found nothing to resolve
            # yet): the heartbeat is back, so the page is resolved before anyone is called.
            await self.resolve(OpenPage(page.key, tuple(page.identities)), False, now)
            log.info("heartbeat came back as its page opened; resolved", extra={"heartbeat": hb.name,
                                                                                   "page_key": page.key})
            return
        result = "called" if page.calls else "quiet_hours" if page.state is PageState.ACTIVE else "no_contacts"
        log.warning("heartbeat missing; page opened", extra={
            "heartbeat": hb.name, "page_key": page.key, "route": page.route, "result": result,
            "last_seen": last_seen.isoformat(), "timeout": hb.timeout.total_seconds()})
        self.metrics.page(page.route, result).inc()


def heartbeat_of(page: Page) -> str | None:
    """The name of the heartbeat a page is for, None for a page of a route."""
    return page.route.removeprefix(HEARTBEAT_ROUTE_PREFIX) if page.route.startswith(HEARTBEAT_ROUTE_PREFIX) else None
