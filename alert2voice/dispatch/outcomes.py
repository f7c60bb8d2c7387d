"""How a call ends: delivery receipts, interactive call events, and status polls when callbacks stop."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from .. import interactive
from ..callbacks import Event
from ..config import Config
from ..interactive import Answer
from ..pages import REACHED, UNSENT_CALL_STATES, Call, CallState, Page, PageEnded, PageState, escalate
from ..provider import Accepted, ProviderError, statuses
from .context import Context
from .speaking import Speaker
from .work import Effects


class Outcomes:
    """Applies what the provider reports about a call to its page, under the page's lock."""

    def __init__(self, ctx: Context, speaker: Speaker) -> None:
        self.ctx, self.speaker = ctx, speaker

    async def receipt(self, key: str, *, correlation: str | None, message_id: str | None,
                      outcome: CallState | None, grace: timedelta | None = None) -> str:
        """Apply a delivery receipt to its call; returns 'ok', 'unknown', 'stale' or 'mismatched'."""
        result, call, now = await self.ctx.work.change(
            key, lambda page, fx: self._receipt(page, correlation, message_id, outcome, grace, fx))
        if call is not None and outcome is not None:
            await self._spread(key, call, outcome, now)
        return result

    async def _receipt(self, page: Page | None, correlation: str | None, message_id: str | None,
                       outcome: CallState | None, grace: timedelta | None,
                       fx: Effects) -> tuple[str, Call | None, datetime]:
        """The decision of a receipt: (result, the call it ended or None, when)."""
        ctx = self.ctx
        now = ctx.clock.now()
        call = page.call(correlation, message_id) if page else None
        if page is None or call is None:
            return "unknown", None, now
        if not call.open:
            return "stale", None, now
        if call.interactive:
            # Delivery receipts belong to /v1/voice/messages; a programmable call moves by its call events.
            return "mismatched", None, now
        queued = call.state in UNSENT_CALL_STATES
        if not self._reconcile(page, call, message_id, now, fx):
            return "stale", None, now
        if outcome is None:
            if grace is not None:
                # A drop without its final receipt: give the receipt a moment, then poll.
                page.due_at = min(page.due_at or now + grace, now + grace)
            if grace is not None or queued:
                fx.save()
            return "ok", None, now
        ctx.ended(page, call, outcome, ctx.config(), now, fx, via="callback")
        fx.save()
        return "ok", call, now

    async def call_event(self, key: str, event: Event) -> Answer:
        """Apply an interactive call's event (SPEC §5) and return the action that answers it."""
        answer, page, call, now = await self.ctx.work.change(key, lambda page, fx: self._call_event(page, event, fx))
        if page is None or call is None:
            return answer
        ended = call.state if not call.open else None
        others = await self._spread(key, call, ended, now) if ended is not None else []
        acknowledged = [page, *others] if ended is CallState.ACKNOWLEDGED else []
        return Answer("ok", answer.action, acknowledged, call.contact)

    async def _call_event(self, page: Page | None, event: Event,
                          fx: Effects) -> tuple[Answer, Page | None, Call | None, datetime]:
        """The decision of a call event: the answer, and the page and call it moved (None: none)."""
        ctx = self.ctx
        cfg = ctx.config()
        now = ctx.clock.now()
        call = page.call(event.correlation_id, event.message_id) if page else None
        if page is None or call is None:
            return Answer("unknown", interactive.HANGUP), None, None, now
        if not call.open:
            # Already final: the PLAYED after the thank-you, the DROPPED after our HANGUP, a late duplicate.
            return Answer("stale", interactive.HANGUP), None, None, now
        if not call.interactive:
            # A play-and-hang-up call has no programmable session: nothing an event says applies to it.
            return Answer("mismatched", interactive.HANGUP), None, None, now
        if not self._reconcile(page, call, event.message_id, now, fx):
            return Answer("stale", interactive.HANGUP), None, None, now
        step = interactive.decide(call, event, cfg.acknowledgement)
        call.misses += step.miss
        if step.reply == "passed":
            step = self._passed_on(page, call, now, fx)
        action = await self.speaker.reply(page, call, step, cfg, now)
        if step.reply == "passed":
            page.due_at = now  # escalate(): the next step is due at once
        else:
            # The deadline poll is for calls whose events stopped, not for one still talking to us.
            page.due_at = now + cfg.provider.callback.deadline
        if step.outcome is not None:
            call.error = step.error
            ctx.ended(page, call, step.outcome, cfg, now, fx, via="call event", event=event.event)
            if page.acknowledged_via == "phone" and page.acknowledged_at == now:
                fx(ctx.metrics.pages_acknowledged.labels("phone").inc)
        fx.save()
        return Answer("ok", action), page, call, now

    def _passed_on(self, page: Page, call: Call, now: datetime, fx: Effects) -> interactive.Step:
        """The escalate key: the page goes to its next step now, as POST /api/v1/pages/{key}/escalate does (the
        call is given up); a page no longer escalating (acknowledged meanwhile) only hangs up."""
        ctx = self.ctx
        try:
            given_up = escalate(page, now, by=call.contact, step=call.step)
        except PageEnded as exc:
            return interactive.Step("hangup", CallState.CANCELLED, f"escalated by {call.contact}: {exc}")
        if given_up is None:  # the page is past this call's step already
            return interactive.Step("hangup", CallState.CANCELLED, f"escalated by {call.contact}: past its step")
        fx(lambda: ctx.metrics.calls.labels(page.route, "cancelled").inc(len(given_up)))
        fx(ctx.line(page, call, "page escalated", via="phone", by=call.contact, calls_given_up=len(given_up)))
        return interactive.Step("passed")

    async def poll(self, page: Page, call: Call, cfg: Config, now: datetime, fx: Effects) -> None:
        """No final callback within the deadline: ask the provider (GET /v1/voice/calls/{id})."""
        ctx = self.ctx
        call.polls += 1
        status = None
        if call.message_id:
            try:
                status = await ctx.provider.call_status(call.message_id)
            except ProviderError as exc:
                ctx.metrics.provider_errors.labels(exc.reason).inc()
        outcome = statuses.poll(status.status if status else None, bool(status and status.answered_time))
        if call.interactive and outcome in REACHED:
            # A programmable call is reached only by a keypress, which only a call event reports; still
            # connected, it may be going on.
            outcome = None if status is not None and status.status == statuses.CONNECTED else CallState.NO_ANSWER
            call.error = interactive.NOT_ACKNOWLEDGED
        if outcome is None and call.polls < 3:
            page.due_at = now + cfg.provider.callback.deadline / 2
            return
        ctx.ended(page, call, outcome or CallState.NO_ANSWER, cfg, now, fx, via="status poll",
                  status=status.status if status else None)

    def _reconcile(self, page: Page, call: Call, message_id: str | None, now: datetime, fx: Effects) -> bool:
        """Match a callback's messageId (receipt `transid`, event `sessionId`) with its call; False when stale.

        A callback naming another messageId than the call holds is about another request (a replay, or the
        platform's id of an earlier incident): stale. A callback for a call still queued proves the platform
        took a request whose answer never reached us (the POST timed out, or we crashed before recording
        it): the attempt is accepted with the callback's messageId, and the retry that would ring the
        phone a second time is not sent.
        """
        if call.message_id is not None:
            return message_id is None or message_id == call.message_id
        if call.state in UNSENT_CALL_STATES and message_id:
            ctx = self.ctx
            cfg = ctx.config()
            # The call did happen: it counts, whatever the tiers (once the adoption is written).
            fx(lambda: ctx.store.reserve_call(call.number, now, ()))
            ctx.accepted(page, call, cfg, Accepted(message_id, call.correlation_id, None), now, fx)
            fx(ctx.line(page, call, "provider took a request whose answer was lost; its retry is not sent",
                        logging.WARNING, message_id=message_id, tries=call.tries))
        return True

    async def _spread(self, key: str, call: Call, outcome: CallState, now: datetime) -> list[Page]:
        """A storm summary call spoke for several pages: its outcome is theirs too (one lock at a time)."""
        ended = []
        for other in call.storm:
            if other == key:
                continue
            page = await self.ctx.work.change(other, lambda p, fx: self._end_shared(p, call, outcome, now, fx))
            if page is not None:
                ended.append(page)
        return ended

    async def _end_shared(self, p: Page | None, call: Call, outcome: CallState, now: datetime,
                          fx: Effects) -> Page | None:
        """The decision for a page a summary call spoke for: its call ends as the summary did."""
        ctx = self.ctx
        c = p.call(message_id=call.message_id) if p is not None else None
        if p is None or c is None or not c.open:
            return None
        if outcome is CallState.CANCELLED and p.state is PageState.ACTIVE:
            # Only the escalate key cancels a call from its events: every page the summary spoke for goes on.
            given_up = escalate(p, now, by=call.contact, step=c.step)
            if given_up is not None:
                fx(lambda: ctx.metrics.calls.labels(p.route, "cancelled").inc(len(given_up)))
                fx.save()
                return p
        ctx.ended(p, c, outcome, ctx.config(), now, fx, via="storm summary callback")
        fx.save()
        return p
