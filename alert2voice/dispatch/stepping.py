"""One page moved on, one step at a time: its next call started, a queued call placed, an overdue one polled."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from ..config import HEARTBEAT_ROUTE_PREFIX
from ..pages import (
    UNSENT_CALL_STATES,
    Call,
    CallState,
    Page,
    PageState,
    end,
    idle_until,
    next_call,
    reopen,
    route_of,
)
from ..store import StoreUnavailable
from ..store.base import Conflict
from ..suppression import Checked, Verdict
from .context import Context
from .limits import Cleared
from .outcomes import Outcomes
from .placing import Placer
from .speaking import Speaker
from .work import Effects

log = logging.getLogger("alert2voice.dispatch")

# A page whose route is missing from this replica's config is cancelled only once it has been missing for this long
# (longer than a rolling reload takes), and looked at again this often meanwhile.
ROUTE_GRACE = timedelta(minutes=5)
ROUTE_RECHECK = timedelta(seconds=30)


class Stepper:
    """Moves one page on under its lock (Work.step): what the dispatcher's loop runs for each page it takes."""

    def __init__(self, ctx: Context, placer: Placer, outcomes: Outcomes, speaker: Speaker, *,
                 stopping: Callable[[], bool], sleep: Callable[[float], Awaitable[None]]) -> None:
        self.ctx, self.placer, self.outcomes, self.speaker = ctx, placer, outcomes, speaker
        self.stopping, self.sleep = stopping, sleep

    async def release(self, key: str, cleared: Cleared | None = None) -> None:
        """Give up a leased page untouched (shutting down), so the next start takes it at once (and the throttle
        slot its admit counted, if `cleared`)."""
        await self._give_back(cleared)
        async with self.ctx.locks[key]:
            page = await self.ctx.store.get(key)
            if page is not None:
                with contextlib.suppress(Conflict):  # written by another since: its lease is released already
                    await self.ctx.store.put(page)

    async def process(self, key: str, fresh: Page | None = None, cleared: Cleared | None = None) -> datetime | None:
        """Move one page on: start its next call, place a queued call, or poll an overdue one; returns when the
        page is due next (None: nothing due).

        `fresh` is the page as this process has just written or leased it (a new page, admitted; a due one, taken
        by the loop): used as it is, not read again. Without it, the page is read from the store. `cleared`: its
        first call, as its admit cleared it (its throttle slot is given back unless that call is placed now).
        """
        try:
            return await self.ctx.work.step(key, lambda fx: self._process(key, fresh, fx, cleared))
        except Conflict:
            # Another replica wrote the page since we read it (a callback it took, say): whatever we did
            # is in the page it wrote or will be redone, and the page is due again for whoever takes it.
            log.info("page changed by another writer while it was processed; it is taken again",
                     extra={"page_key": key})
            return self.ctx.clock.now()
        finally:
            await self._give_back(cleared)

    async def _give_back(self, cleared: Cleared | None) -> None:
        """The throttle slot an admit counted for a first call that was not placed (nor deferred) after all."""
        if cleared is not None and cleared.counted and not cleared.spent:
            cleared.spent = True
            await self.ctx.store.unreserve_call(cleared.number, cleared.at)

    async def _process(self, key: str, fresh: Page | None, fx: Effects, cleared: Cleared | None) -> datetime | None:
        page = fresh if fresh is not None else await self.ctx.store.get(key)
        now = self.ctx.clock.now()
        if page is None or page.due_at is None or page.due_at > now:
            if page is not None:
                await self.ctx.store.put(page)  # releases the lease
            return page.due_at if page is not None else None
        cfg = self.ctx.config()
        if page.state is PageState.ACTIVE and route_of(cfg, page) is None:
            if not self._route_gone(page, now):
                await self.ctx.store.put(page)
                return page.due_at
            # A reload removed the route everywhere: stop its escalation cleanly rather than call on a stale plan.
            self._end(page, PageState.CANCELLED, now, "route removed by a config reload", fx)
        page.route_missing_since = None
        if reopen(page, cfg, now):
            fx(lambda: log.warning("acknowledged page re-opened: its alerts still fire after ack_timeout",
                                   extra={"page_key": page.key, "route": page.route}))
        call = page.open_call
        checked: Checked | None = None
        if page.state is PageState.ACTIVE and (call is None or call.state is CallState.QUEUED):
            # Before anyone is called (again): Alertmanager tells no receiver that an alert became silenced.
            # A network request, asked here, outside any write's retry; the decision below takes its answer.
            checked = await self._ask_alertmanager(page, fx)
            now = self.ctx.clock.now()
            if checked is not None and checked.verdict is Verdict.SILENCED:
                self._end(page, PageState.SILENCED, now, "silenced in Alertmanager", fx)
                fx(self.ctx.metrics.pages_silenced.labels(page.route).inc)
                call = None
        if call is None and page.state is PageState.ACTIVE:
            had_calls = any(c.kind == "page" for c in page.calls)
            call = next_call(page, cfg, now)
            if call is not None:
                # Some alerts silenced or inhibited: the new attempt speaks of the others only. (An attempt made
                # earlier keeps what it was frozen with: its request may have gone out already.)
                partly = checked is not None and checked.verdict is Verdict.PARTLY
                said = dataclasses.replace(page, alerts=checked.active(page.alerts)) if partly else page
                self.speaker.freeze(said, call, cfg)
                if had_calls:
                    fx(self.ctx.metrics.escalations.labels(page.route).inc)
                # Commit the new attempt before sending it: a receipt can arrive before the 202 does, and
                # after a crash the same correlationId and Idempotency-Key are reused, not new ones. The page
                # stays held by this process: nobody else may send the attempt meanwhile.
                await self.ctx.store.put(page, lease=self.ctx.held(page.key, cfg))
        placed = False
        if call is None:
            if page.state is not PageState.ACTIVE or page.due_at is None or page.due_at <= now:
                page.due_at = idle_until(page, cfg)
        elif call.state in UNSENT_CALL_STATES:
            first = cleared is not None and call.attempt == 1 and call.state is CallState.QUEUED
            await self.placer.place(page, call, cfg, now, fx, cleared if first else None)
            placed = call.state is CallState.ACCEPTED
        elif call.state is CallState.ACCEPTED:
            await self.outcomes.poll(page, call, cfg, now, fx)
        page.updated_at = now
        try:
            await self.ctx.store.put(page)
        except (Conflict, StoreUnavailable):
            if not placed or call is None:
                raise
            # The provider took the call, and the page could not be written as read (another writer changed it,
            # or the store is away): that the call went out must not be lost, or its retry would ring again.
            await self._keep_record(key, call, page.due_at, now)
        return page.due_at

    async def _keep_record(self, key: str, call: Call, due_at: datetime | None, now: datetime) -> None:
        """Write that `call` was accepted onto the page as stored, retrying until the store takes it.

        Meanwhile the key stays in `active`: this process does not take the page again, and a replica that
        does after the lease ends sends the same frozen request, which the provider answers with the same 202.
        """
        delay = 0.05
        while True:
            try:
                await self.ctx.work.change(key, lambda page, fx: self._record_placed(page, call, due_at, now, fx),
                                           held=True)  # under the step's lock (see process())
                return
            except StoreUnavailable as exc:
                if self.stopping():
                    raise
                log.warning("store unavailable; the accepted call is written when it answers", extra={
                    "page_key": key, "correlation_id": call.correlation_id, "error": str(exc)})
                await self.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _record_placed(self, page: Page | None, call: Call, due_at: datetime | None, now: datetime,
                             fx: Effects) -> None:
        """Write onto the page as stored now that `call` was accepted (unless a callback said so already)."""
        stored = page.call(call.correlation_id) if page is not None else None
        if page is None or stored is None or stored.state not in UNSENT_CALL_STATES:
            return
        stored.state, stored.message_id, stored.accepted_at, stored.error = (
            call.state, call.message_id, call.accepted_at, None)
        stored.tries, stored.interactive, stored.storm = call.tries, call.interactive, call.storm
        stored.request, stored.idempotency_key = call.request, call.idempotency_key
        page.due_at, page.updated_at = due_at, now
        fx.save()

    def _route_gone(self, page: Page, now: datetime) -> bool:
        """Whether a page whose route this config lacks is to be cancelled: only once it has been missing for
        ROUTE_GRACE. Until then another replica may run a config that has it (a rolling reload): nothing is
        called on it here, and it is looked at again in ROUTE_RECHECK, by whichever replica takes it."""
        page.route_missing_since = page.route_missing_since or now
        if now - page.route_missing_since >= ROUTE_GRACE:
            return True
        page.due_at, page.updated_at = now + ROUTE_RECHECK, now
        log.warning("page's route is not in this replica's config; left for a replica that has it",
                    extra={"page_key": page.key, "route": page.route,
                           "missing_since": page.route_missing_since.isoformat()})
        return False

    async def _ask_alertmanager(self, page: Page, fx: Effects) -> Checked | None:
        """Alertmanager's verdict on the page's firing alerts (None: none configured), counted once written.

        A heartbeat's page is not asked about: its alert is alert2voice's own, and Alertmanager may be what died.
        """
        suppression = self.ctx.suppression
        if suppression is None or page.route.startswith(HEARTBEAT_ROUTE_PREFIX):
            return None
        checked = await suppression.check(page.alerts)
        if checked is not None:
            result = checked.verdict.value
            fx(self.ctx.metrics.alertmanager_checks.labels(result).inc)
            if checked.verdict is not Verdict.ACTIVE:
                fx(lambda: log.info("Alertmanager checked before a call", extra={
                    "page_key": page.key, "route": page.route, "result": result}))
        return checked

    def _end(self, page: Page, state: PageState, now: datetime, why: str, fx: Effects) -> None:
        """End the page unreached (route removed, alerts silenced): its queued calls cancelled and counted."""
        count = len(end(page, state, now, why))
        fx(lambda: self.ctx.metrics.calls.labels(page.route, CallState.CANCELLED.value).inc(count))
        fx(lambda: log.warning(f"page {state.value}", extra={"page_key": page.key, "route": page.route,
                                                             "reason": why}))
