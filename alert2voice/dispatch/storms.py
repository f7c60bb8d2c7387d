"""throttle.storm: past N pages to one number in a window, the rest are folded into one summary call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..config import Config
from ..pages import Call, CallState, Page, PageState
from ..provider import Accepted, CallRequest
from .context import Context
from .limits import Throttle
from .speaking import Speaker

# Sends one attempt; True when the provider accepted it (Placer.send).
Send = Callable[[Page, Call, Config, datetime, CallRequest], Awaitable[bool]]


@dataclass
class StormBatch:
    """Pages folded into one summary call to a number (throttle.storm), released together."""

    release_at: datetime
    keys: list[str] = field(default_factory=list)
    leader: str | None = None


class Storms:
    """The storm batches of this process, by number (after a restart a storm folds anew)."""

    def __init__(self, ctx: Context, throttle: Throttle, speaker: Speaker, send: Send) -> None:
        self.ctx, self.throttle, self.speaker, self.send = ctx, throttle, speaker, send
        self.batches: dict[str, StormBatch] = {}

    async def hold(self, page: Page, call: Call, cfg: Config, now: datetime) -> bool:
        """Apply throttle.storm; True when this call is held for, or went out as, a storm summary call.

        Past `pages` calls to a number within `per`, further pages for it are folded: they wait until
        the window has room again, and then one call speaks all of them. Its outcome is theirs.
        """
        rule = cfg.throttle.storm
        assert rule is not None
        batch = self.batches.get(call.number)
        if batch is None or page.key not in batch.keys:
            if self.throttle.count(call.number, now, rule.per) < rule.pages:
                return False
            if batch is None or batch.leader is not None:
                release = self.throttle.frees_at(call.number, now, rule.per, rule.pages)
                batch = self.batches[call.number] = StormBatch(release)
            batch.keys.append(page.key)
            page.due_at = batch.release_at
            call.error = "storm: held for a summary call"
            self.ctx.metrics.page(page.route, "throttled").inc()
            self.ctx.log(page, call, "call folded into a storm summary", logging.WARNING,
                         until=batch.release_at.isoformat(), pages_waiting=len(batch.keys))
            return True
        if now < batch.release_at:
            page.due_at = batch.release_at
            return True
        if batch.leader is not None:
            page.due_at = now + timedelta(seconds=2)  # the summary is being placed; its result reaches us
            return True
        batch.leader = page.key
        await self._place_summary(page, call, batch, cfg, now)
        return True

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
            self.batches.pop(call.number, None)
            return
        members = [page.key, *(p.key for p in followers)]
        call.storm = members
        accepted = Accepted(call.message_id or "", call.correlation_id, None)
        for other in followers:
            async with ctx.locks[other.key]:
                fresh = await ctx.store.get(other.key)
                c = fresh.open_call if fresh is not None else None
                if fresh is None or c is None or c.state is not CallState.QUEUED:
                    continue
                c.storm, c.error = members, f"spoken in storm summary call {call.correlation_id}"
                c.interactive = call.interactive
                ctx.accepted(fresh, c, cfg, accepted, ctx.clock.now())
                await ctx.store.put(fresh)
        self.batches.pop(call.number, None)
        ctx.log(page, call, "storm summary call placed", logging.WARNING, pages=len(members))
