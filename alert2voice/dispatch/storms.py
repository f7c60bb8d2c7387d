"""throttle.storm: past N pages to one number in a window, the rest are folded into one summary call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from enum import Enum

from .. import entropy
from ..config import Config
from ..pages import HELD_STORM, UNSENT_CALL_STATES, Call, CallState, Page, PageState
from ..provider import Accepted, CallRequest
from ..store.base import StormBatch
from .context import Context
from .speaking import Speaker
from .work import Effects

# Sends one attempt; True when the provider accepted it (Placer.send).
Send = Callable[[Page, Call, Config, datetime, CallRequest, Effects], Awaitable[bool]]


def _waits(page: Page | None, number: str, states: Collection[CallState]) -> bool:
    """Whether the page is active with an open call to `number` in one of `states`."""
    call = page.open_call if page is not None and page.state is PageState.ACTIVE else None
    return call is not None and call.state in states and call.number == number


def _summary_for(leader: Page | None, key: str) -> Call | None:
    """The leader page's summary call that the provider took and that speaks for page `key`, if any."""
    calls = leader.calls if leader is not None else []
    return next((c for c in reversed(calls) if key in c.storm and c.message_id is not None), None)


class Hold(Enum):
    """What the storm rule made of a call: no storm, held for a summary, or sent as the summary."""

    NONE = "none"
    HELD = "held"
    SENT = "sent"


class Storms:
    """throttle.storm over the store's batches, so every replica folds into the same summary call."""

    def __init__(self, ctx: Context, speaker: Speaker, send: Send) -> None:
        self.ctx, self.speaker, self.send = ctx, speaker, send

    async def hold(self, page: Page, call: Call, cfg: Config, now: datetime, fx: Effects, reserved: datetime) -> Hold:
        """Apply throttle.storm to a call whose throttle slot (at `reserved`) is counted already.

        Past `pages` calls to a number within `per`, further pages for it are folded: they wait until
        the window has room again, and then one call speaks all of them. Its outcome is theirs.
        """
        rule = cfg.throttle.storm
        assert rule is not None
        store, number = self.ctx.store, call.number
        if call.storm:
            # Its fan-out is written: a summary whose leader died while placing it; these bytes go out now.
            await self._place_summary(page, call, cfg, now, StormBatch(now), fx)
            return Hold.SENT
        batch = await store.storm_batch(number)
        if batch is None or page.key not in batch.keys:
            recent = await store.calls_within(number, now, rule.per)
            if reserved in recent:
                recent.remove(reserved)  # this call's own slot, counted just now
            if len(recent) < rule.pages:
                return Hold.NONE
            batch = await store.storm_join(number, page.key, recent[-rule.pages] + rule.per)
            page.due_at = batch.release_at
            call.error = HELD_STORM
            fx(self.ctx.metrics.page(page.route, "throttled").inc)
            fx(self.ctx.line(page, call, "call folded into a storm summary", logging.WARNING,
                             until=batch.release_at.isoformat(), pages_waiting=len(batch.keys)))
            return Hold.HELD
        if now < batch.release_at:
            page.due_at = batch.release_at
            return Hold.HELD
        if batch.leader not in (None, page.key):
            leader = await store.get(batch.leader)
            if _waits(leader, number, UNSENT_CALL_STATES):
                page.due_at = now + timedelta(seconds=2)  # the summary is being placed; its result reaches us
                return Hold.HELD
            summary = _summary_for(leader, page.key)
            if summary is not None:
                # The summary went out and spoke for this page, but its leader never marked it (spoken_for): the
                # leader's replica died with the 202 pending and a receipt adopted the call on the leader page
                # alone (outcomes._reconcile). Ending the batch here would fold this page into a second summary.
                await store.unreserve_call(number, reserved)
                self._speak_for(page, call, summary, cfg, now, fx)
                if not summary.open:
                    self.ctx.ended(page, call, summary.state, cfg, now, fx, via="storm summary")
                return Hold.SENT
            # Its leader page ended without finishing the summary (resolved, cancelled while its holder was
            # gone): the batch is free, and this page is looked at again on its own.
            await store.storm_end(number, batch.leader)
            page.due_at = now
            return Hold.HELD
        # Leading already: this replica took the leader page over from one that died before it wrote the fan-out.
        if batch.leader is None and not await store.storm_lead(number, page.key):
            page.due_at = now + timedelta(seconds=2)
            return Hold.HELD
        await self._place_summary(page, call, cfg, now, batch, fx)
        return Hold.SENT

    async def _place_summary(self, page: Page, call: Call, cfg: Config, now: datetime, batch: StormBatch,
                             fx: Effects) -> None:
        """Place the summary call, its fan-out written on the leader's page first; the batch ends with it."""
        ctx = self.ctx
        try:
            if not call.storm:
                followers = []
                for key in batch.keys:
                    other = await ctx.store.get(key) if key != page.key else None
                    if other is not None and _waits(other, call.number, {CallState.QUEUED}):
                        followers.append(other)
                call.storm = [page.key, *(p.key for p in followers)]
                # The summary is a request of its own (what it says changed): a new key, frozen, and written
                # before it is sent, so that a replica taking the page over sends these very bytes.
                call.idempotency_key = str(entropy.uuid4())
                self.speaker.freeze(page, call, cfg, extra=followers)
                await ctx.store.put(page, lease=ctx.lease(cfg))
            if await self.send(page, call, cfg, now, self.speaker.request_of(page, call, cfg), fx):
                ctx.log(page, call, "storm summary call placed", logging.WARNING, pages=len(call.storm))
        finally:
            if call.state is not CallState.UNKNOWN:
                # Placed (its followers marked) or refused: the batch is over, and each page is looked at again
                # on its own. An unknown one leads on: its followers wait for its receipts.
                await ctx.store.storm_end(call.number, page.key)

    async def spoken_for(self, page: Page, call: Call, cfg: Config) -> None:
        """A summary call was accepted: every follower's queued call is accepted with the summary's ids."""
        for key in call.storm:
            if key != page.key:
                await self.ctx.work.change(key, lambda fresh, fx: self._spoken_for(fresh, call, cfg, fx))

    async def _spoken_for(self, fresh: Page | None, call: Call, cfg: Config, fx: Effects) -> None:
        """The decision for a follower: its queued call was spoken in the summary call, accepted with its ids."""
        c = fresh.open_call if fresh is not None else None
        if fresh is None or c is None or c.state is not CallState.QUEUED:
            return
        self._speak_for(fresh, c, call, cfg, self.ctx.clock.now(), fx)
        fx.save()

    def _speak_for(self, page: Page, call: Call, summary: Call, cfg: Config, now: datetime, fx: Effects) -> None:
        """A follower's queued call was spoken in the summary call (found on the leader page): accepted with its ids."""
        call.storm, call.error = summary.storm, f"spoken in storm summary call {summary.correlation_id}"
        call.interactive = summary.interactive
        self.ctx.accepted(page, call, cfg, Accepted(summary.message_id or "", summary.correlation_id, None), now, fx)
