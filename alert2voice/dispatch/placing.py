"""Placing a queued call: throttle and storm first, then the provider request, retried with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from ..config import Config, RetryConfig
from ..logs import SCRUBBER
from ..pages import HELD_THROTTLED, Call, CallState, Page, held_too_long
from ..provider import AuthFailed, CallRequest, InteractiveProvider, ProviderError
from ..store.base import Conflict
from ..units import format_duration
from .context import Context
from .limits import Cleared, RateLimiter, tiers_for
from .speaking import Speaker
from .storms import Hold, Storms
from .work import Effects


@dataclass
class Backoff:
    """Exponential backoff with full jitter, honouring Retry-After, capped at `max`."""

    policy: RetryConfig
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, tries: int, retry_after: float | None = None) -> timedelta:
        """The wait before try number `tries + 1`."""
        cap = self.policy.max.total_seconds()
        base = min(cap, self.policy.initial.total_seconds() * 2 ** max(0, tries - 1))
        wait = base / 2 + self.rng.uniform(0, base / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, cap))
        return timedelta(seconds=wait)


class Placer:
    """Sends a page's queued call within the throttle, the storm rule and the provider's rate limit."""

    def __init__(self, ctx: Context, limiter: RateLimiter, speaker: Speaker) -> None:
        self.ctx, self.limiter, self.speaker = ctx, limiter, speaker
        self.storms = Storms(ctx, speaker, self.send)

    async def place(self, page: Page, call: Call, cfg: Config, now: datetime, fx: Effects,
                    cleared: Cleared | None = None) -> None:
        """Send the call's frozen request now, or defer it (throttle) or fold it (storm) by moving page.due_at.

        An unknown attempt (a try went out and its answer was lost) is past the throttle and the storm rule
        already, its slot counted: it is sent again byte for byte, or settled once no more tries are allowed.
        A new page's first call comes `cleared` by its admit: counted (or not) and given a token (or not) there.
        """
        if call.state is CallState.UNKNOWN:
            if call.settle_at is None:
                await self.send(page, call, cfg, now, self.speaker.request_of(page, call, cfg), fx)
            elif now >= call.settle_at:
                self.ctx.ended(page, call, CallState.NO_ANSWER, cfg, now, fx, via="outcome unknown")
            else:
                page.due_at = call.settle_at
            return
        store = self.ctx.store
        rules = tiers_for(cfg, call.kind)
        slot, token = now, False
        if cleared is not None:
            cleared.spent = True
            slot, allowed, token = cleared.at, cleared.admitted.fits_at, cleared.token
        else:
            # Counted in the store before anything is awaited: concurrent pages, here or on another replica,
            # must not all pass the same check.
            allowed = await store.reserve_call(call.number, now, rules) if rules is not None else None
        if rules is None or allowed is not None:
            self._held(page, call, cfg, now, allowed, fx)
            return
        if call.kind == "page" and cfg.throttle.storm is not None:
            held = await self.storms.hold(page, call, cfg, now, fx, reserved=slot)
            if held is Hold.HELD:
                await store.unreserve_call(call.number, slot)
            if held is not Hold.NONE:
                return
        await self.send(page, call, cfg, slot, self.speaker.request_of(page, call, cfg), fx, token=token)

    def _held(self, page: Page, call: Call, cfg: Config, now: datetime, until: datetime | None,
              fx: Effects) -> None:
        """A throttle tier holds the call until `until` (None: it never fits): the page waits for it, or the
        call gives way (pages.held_too_long), recorded throttled: the page moves on at once, or a resolved call
        is dropped."""
        first = call.error != HELD_THROTTLED
        if first:
            call.error = HELD_THROTTLED
            fx(self.ctx.metrics.page(page.route, "throttled").inc)
        fits_at = until.isoformat() if until is not None else None
        if until is None or held_too_long(page, call, until, cfg, now):
            self.ctx.ended(page, call, CallState.THROTTLED, cfg, now, fx, via="throttle", fits_at=fits_at,
                           max_hold=format_duration(cfg.throttle.max_hold))
            return
        page.due_at = until
        if first:
            fx(self.ctx.line(page, call, "call deferred by throttle", logging.WARNING, until=fits_at))

    async def send(self, page: Page, call: Call, cfg: Config, now: datetime, request: CallRequest,
                   fx: Effects, token: bool = False) -> bool:
        """Send one try of an attempt whose throttle slot was counted at `now` (and which holds a token of the
        rate limit already, with `token`); True when the provider accepted it."""
        ctx = self.ctx
        call.tries += 1
        try:
            await self._clear_to_send(page, cfg, token)
        except Conflict:
            if call.state is CallState.QUEUED:
                await ctx.store.unreserve_call(call.number, now)
            raise
        place = cast(InteractiveProvider, ctx.provider).place_interactive_call if call.interactive \
            else ctx.provider.place_call
        try:
            accepted = await place(request)
        except ProviderError as exc:
            if call.state is CallState.QUEUED and not exc.maybe_taken:
                await ctx.store.unreserve_call(call.number, now)  # nothing went out: the slot is free again
            self._failed_try(page, call, cfg, exc, ctx.clock.now(), fx)
            return False
        ctx.accepted(page, call, cfg, accepted, ctx.clock.now(), fx)
        if len(call.storm) > 1:
            await self.storms.spoken_for(page, call, cfg)  # a summary call: its followers were spoken too
        return True

    async def _clear_to_send(self, page: Page, cfg: Config, token: bool) -> None:
        """Take a token of the provider's rate limit (unless the call holds one) and make sure the page's lease
        outlasts the request (Context.hold); Conflict when another replica took the page over.

        Both at once (on Redis, two writes wait for one fsync rather than two); the lease is made sure of again
        after a wait for a token, which may have been long.
        """
        ctx = self.ctx
        held = asyncio.ensure_future(ctx.hold(page, cfg))
        try:
            waited = not token and await self.limiter.acquire(cfg.provider.rate_limit.per_second)
        finally:
            await asyncio.wait({held})
        held.result()
        if waited:
            await ctx.hold(page, cfg)

    def _failed_try(self, page: Page, call: Call, cfg: Config, exc: ProviderError, now: datetime,
                    fx: Effects) -> None:
        ctx = self.ctx
        ctx.metrics.provider_errors.labels(exc.reason).inc()
        # Provider error text can echo what we sent; keep secrets out of the stored state and the API.
        message = SCRUBBER.scrub(str(exc))
        changed = call.error != message
        call.error = message
        if exc.maybe_taken:
            # The provider may have taken it: from now on only these bytes may go out for this attempt.
            call.state = CallState.UNKNOWN
        ctx.health.call_failed(exc)
        if isinstance(exc, AuthFailed):
            # A credentials problem is not this call's fault: keep it queued, report it (the status page, the
            # metrics; /-/ready stays true so that webhooks are still stored), retry slowly.
            page.due_at = now + cfg.provider.retry.max
            ctx.log(page, call, "provider refused our credentials; call kept queued", logging.ERROR,
                    code=exc.code, reason=exc.reason)
            return
        gave_up = now - call.created_at >= cfg.provider.retry.give_up_after
        if call.state is CallState.UNKNOWN and (not exc.retryable or gave_up):
            # An earlier try may have rung the phone: a refused repeat (or the end of the retries) proves
            # nothing. Its receipts may still come; without them it counts as not reached at the deadline,
            # and the next attempt keeps its interval.
            call.settle_at = page.due_at = now + cfg.provider.callback.deadline
            ctx.log(page, call, "call outcome unknown; waiting for its receipts", logging.WARNING, code=exc.code,
                    status=exc.status, reason=exc.reason, settle_at=call.settle_at.isoformat())
            return
        if not exc.retryable or gave_up:
            ctx.ended(page, call, CallState.FAILED, cfg, now, fx, via="provider rejected" if not exc.retryable
                      else "retries gave up", code=exc.code, status=exc.status, reason=exc.reason)
            return
        wait = Backoff(cfg.provider.retry, ctx.rng).delay(call.tries, getattr(exc, "retry_after", None))
        page.due_at = now + wait
        if changed:
            ctx.log(page, call, "provider error; retrying", logging.WARNING, code=exc.code, status=exc.status,
                    reason=exc.reason, retry_in=round(wait.total_seconds(), 3), outcome=call.state.value)
