"""How a call ends: delivery receipts, interactive call events, and status polls when callbacks stop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from .. import interactive
from ..callbacks import Event
from ..config import Config
from ..interactive import Answer
from ..pages import REACHED, Call, CallState, Page
from ..provider import Accepted, ProviderError, normalize_status
from .context import Context
from .limits import Throttle, horizon
from .speaking import Speaker

_STATUS_OUTCOMES = {
    "ANSWERED": CallState.ANSWERED,
    "REJECTED": CallState.NO_ANSWER,
    "MESSAGE_EXPIRED": CallState.FAILED,
    "FAILED": CallState.FAILED,
}


def outcome_of_status(status: str | None, answered: bool) -> CallState | None:
    """Map a GET /v1/voice/calls status to a final outcome; None while the call may still be going on."""
    if status is None:
        return None
    s = normalize_status(status)
    if s in ("DROPPED", "RELEASED", "DISCONNECTED", "TROMBONE_RELEASED"):
        return CallState.ANSWERED if answered else CallState.NO_ANSWER
    return _STATUS_OUTCOMES.get(s)


class Outcomes:
    """Applies what the provider reports about a call to its page, under the page's lock."""

    def __init__(self, ctx: Context, throttle: Throttle, speaker: Speaker, poke: Callable[[], None]) -> None:
        self.ctx, self.throttle, self.speaker, self.poke = ctx, throttle, speaker, poke

    async def receipt(self, key: str, *, correlation: str | None, message_id: str | None,
                      outcome: CallState | None, grace: timedelta | None = None) -> str:
        """Apply a delivery receipt to its call; returns 'ok', 'unknown', 'stale' or 'mismatched'."""
        ctx = self.ctx
        async with ctx.locks[key]:
            page = await ctx.store.get(key)
            call = page.call(correlation, message_id) if page else None
            if page is None or call is None:
                return "unknown"
            now = ctx.clock.now()
            if not call.open:
                return "stale"
            if call.interactive:
                # Delivery receipts belong to /v1/voice/messages; a programmable call moves by its call events.
                return "mismatched"
            queued = call.state is CallState.QUEUED
            if not self._reconcile(page, call, message_id, now):
                return "stale"
            if outcome is None:
                if grace is not None:
                    # A drop without its final receipt: give the receipt a moment, then poll.
                    page.due_at = min(page.due_at or now + grace, now + grace)
                if grace is not None or queued:
                    await ctx.store.put(page)
                return "ok"
            ctx.ended(page, call, outcome, ctx.config(), now, via="callback")
            await ctx.store.put(page)
        await self._spread(key, call, outcome, now)
        return "ok"

    async def call_event(self, key: str, event: Event) -> Answer:
        """Apply an interactive call's event (SPEC §5) and return the action that answers it."""
        ctx = self.ctx
        cfg = ctx.config()
        async with ctx.locks[key]:
            page = await ctx.store.get(key)
            call = page.call(event.correlation_id, event.message_id) if page else None
            if page is None or call is None:
                return Answer("unknown", interactive.HANGUP)
            if not call.open:
                # Already final: the PLAYED after the thank-you, the DROPPED after our HANGUP, a late duplicate.
                return Answer("stale", interactive.HANGUP)
            if not call.interactive:
                # A play-and-hang-up call has no programmable session: nothing an event says applies to it.
                return Answer("mismatched", interactive.HANGUP)
            now = ctx.clock.now()
            if not self._reconcile(page, call, event.message_id, now):
                return Answer("stale", interactive.HANGUP)
            step = interactive.decide(call, event, cfg.acknowledgement.digit)
            action = await self.speaker.reply(page, call, step, cfg, now)
            # The deadline poll is for calls whose events stopped, not for one still talking to us.
            page.due_at = now + cfg.provider.callback.deadline
            if step.outcome is not None:
                call.error = step.error
                ctx.ended(page, call, step.outcome, cfg, now, via="call event", event=event.event)
            await ctx.store.put(page)
        acknowledged: list[Page] = []
        if step.outcome is not None:
            others = await self._spread(key, call, step.outcome, now)
            if step.outcome is CallState.ACKNOWLEDGED:
                acknowledged = [page, *others]
        return Answer("ok", action, acknowledged, call.contact)

    async def poll(self, page: Page, call: Call, cfg: Config, now: datetime) -> None:
        """No final callback within the deadline: ask the provider (GET /v1/voice/calls/{id})."""
        ctx = self.ctx
        call.polls += 1
        status = None
        if call.message_id:
            try:
                status = await ctx.provider.call_status(call.message_id)
            except ProviderError as exc:
                ctx.metrics.provider_errors.labels(exc.reason).inc()
        outcome = outcome_of_status(status.status if status else None, bool(status and status.answered_time))
        if call.interactive and outcome in REACHED:
            # A programmable call is reached only by a keypress, which only a call event reports; still
            # ANSWERED, it may be going on.
            outcome = None if status is not None and status.status == "ANSWERED" else CallState.NO_ANSWER
            call.error = interactive.NOT_ACKNOWLEDGED
        if outcome is None and call.polls < 3:
            page.due_at = now + cfg.provider.callback.deadline / 2
            return
        ctx.ended(page, call, outcome or CallState.NO_ANSWER, cfg, now, via="status poll",
                  status=status.status if status else None)

    def _reconcile(self, page: Page, call: Call, message_id: str | None, now: datetime) -> bool:
        """Match a callback's messageId (receipt `transid`, event `sessionId`) with its call; False when stale.

        A callback naming another messageId than the call holds is about another request (a replay, or the
        platform's id of an earlier incident): stale. A callback for a call still queued proves the platform
        took a request whose answer never reached us (the POST timed out, or we crashed before recording
        it): the attempt is accepted with the callback's messageId, and the retry that would ring the
        phone a second time is not sent.
        """
        if call.message_id is not None:
            return message_id is None or message_id == call.message_id
        if call.state is CallState.QUEUED and message_id:
            ctx = self.ctx
            cfg = ctx.config()
            self.throttle.record(call.number, now, horizon(cfg))  # the call did happen: it counts
            ctx.accepted(page, call, cfg, Accepted(message_id, call.correlation_id, None), now)
            ctx.log(page, call, "provider took a request whose answer was lost; its retry is not sent",
                    logging.WARNING, message_id=message_id, tries=call.tries)
        return True

    async def _spread(self, key: str, call: Call, outcome: CallState, now: datetime) -> list[Page]:
        """A storm summary call spoke for several pages: its outcome is theirs too (one lock at a time)."""
        ctx = self.ctx
        ended = []
        for other in call.storm:
            if other == key:
                continue
            async with ctx.locks[other]:
                p = await ctx.store.get(other)
                c = p.call(message_id=call.message_id) if p is not None else None
                if p is not None and c is not None and c.open:
                    ctx.ended(p, c, outcome, ctx.config(), now, via="storm summary callback")
                    await ctx.store.put(p)
                    ended.append(p)
        self.poke()
        return ended
