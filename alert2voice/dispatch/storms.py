"""throttle.storm: past N pages to one number in a window, the rest are folded into one summary call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import Enum

from ..config import Config
from ..pages import Call, CallState, Page, PageState
from ..provider import Accepted, CallRequest
from ..store.base import StormBatch
from .context import Context, after_write, retry_conflicts
from .speaking import Speaker

# Sends one attempt; True when the provider accepted it (Placer.send).
Send = Callable[[Page, Call, Config, datetime, CallRequest], Awaitable[bool]]


class Hold(Enum):
    """What the storm rule made of a call: no storm, held for a summary, or sent as the summary."""

    NONE = "none"
    HELD = "held"
    SENT = "sent"


class Storms:
    """throttle.storm over the store's batches, so every replica folds into the same summary call."""

    def __init__(self, ctx: Context, speaker: Speaker, send: Send) -> None:
        self.ctx, self.speaker, self.send = ctx, speaker, send

    async def hold(self, page: Page, call: Call, cfg: Config, now: datetime, reserved: datetime) -> Hold:
        """Apply throttle.storm to a call whose throttle slot (at `reserved`) is counted already.

        Past `pages` calls to a number within `per`, further pages for it are folded: they wait until
        the window has room again, and then one call speaks all of them. Its outcome is theirs.
        """
        rule = cfg.throttle.storm
        assert rule is not None
        store, number = self.ctx.store, call.number
        batch = await store.storm_batch(number)
        if batch is None or page.key not in batch.keys:
            recent = await store.calls_within(number, now, rule.per)
            if reserved in recent:
                recent.remove(reserved)  # this call's own slot, counted just now
            if len(recent) < rule.pages:
                return Hold.NONE
            batch = await store.storm_join(number, page.key, recent[-rule.pages] + rule.per)
            page.due_at = batch.release_at
            call.error = "storm: held for a summary call"
            after_write(self.ctx.metrics.page(page.route, "throttled").inc)
            self.ctx.log_after_write(page, call, "call folded into a storm summary", logging.WARNING,
                                     until=batch.release_at.isoformat(), pages_waiting=len(batch.keys))
            return Hold.HELD
        if now < batch.release_at:
            page.due_at = batch.release_at
            return Hold.HELD
        if batch.leader is not None or not await store.storm_lead(number, page.key):
            page.due_at = now + timedelta(seconds=2)  # the summary is being placed; its result reaches us
            return Hold.HELD
        await self._place_summary(page, call, batch, cfg, now)
        return Hold.SENT

    async def _place_summary(self, page: Page, call: Call, batch: StormBatch, cfg: Config, now: datetime) -> None:
        ctx = self.ctx
        followers: list[Page] = []
        for key in batch.keys:
            other = await ctx.store.get(key) if key != page.key else None
            open_call = other.open_call if other is not None else None
            if other is not None and other.state is PageState.ACTIVE and open_call is not None \
                    and open_call.state is CallState.QUEUED and open_call.number == call.number:
                followers.append(other)
        request = self.speaker.build_request(page, call, cfg, now, extra=followers)
        if not await self.send(page, call, cfg, now, request):
            # Not accepted: the batch dissolves and each page is looked at again on its own.
            await ctx.store.storm_end(call.number, page.key)
            return
        members = [page.key, *(p.key for p in followers)]
        call.storm = members
        accepted = Accepted(call.message_id or "", call.correlation_id, None)
        for other in followers:
            async with ctx.locks[other.key]:
                await retry_conflicts(lambda key=other.key: self._spoken_for(key, call, members, accepted, cfg))
        # Only now: until its followers are marked, they see a led batch and wait for its result.
        await ctx.store.storm_end(call.number, page.key)
        ctx.log(page, call, "storm summary call placed", logging.WARNING, pages=len(members))

    async def _spoken_for(self, key: str, call: Call, members: list[str], accepted: Accepted, cfg: Config) -> None:
        """A follower's queued call was spoken in the summary call: it is accepted with the summary's ids."""
        ctx = self.ctx
        fresh = await ctx.store.get(key)
        c = fresh.open_call if fresh is not None else None
        if fresh is None or c is None or c.state is not CallState.QUEUED:
            return
        c.storm, c.error = members, f"spoken in storm summary call {call.correlation_id}"
        c.interactive = call.interactive
        ctx.accepted(fresh, c, cfg, accepted, ctx.clock.now())
        await ctx.store.put(fresh)
