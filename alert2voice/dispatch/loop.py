"""The queue consumer's loop: due pages taken under a lease, one task per page, within max_in_flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from ..clock import Clock
from ..config import Config
from ..metrics import Metrics
from ..pages import UNSENT_CALL_STATES, Call, CallState, Page, PageState, cancel_queued, next_call, route_of
from ..provider import Provider
from ..speech import Speech
from ..store import Store, StoreUnavailable
from ..store.base import Conflict, Lease
from .context import Context, lease_span
from .limits import RateLimiter
from .locks import KeyedLocks
from .outcomes import Outcomes
from .placing import Placer
from .speaking import Speaker
from .work import Effects

log = logging.getLogger("alert2voice.dispatch")

# A page whose route is missing from this replica's config is cancelled only once it has been missing this long
# (longer than a rolling reload takes), and looked at again this often meanwhile.
ROUTE_GRACE = timedelta(minutes=5)
ROUTE_RECHECK = timedelta(seconds=30)
# A look planned at another replica's lease end comes this much later, so that the lease has ended by then.
LEASE_MARGIN = 0.05


class Dispatcher:
    """Places the calls pages need, one page at a time per key, within the provider limits.

    The rooms: `placer` sends queued calls (throttle, storm, rate limit, retries), `outcomes` applies
    receipts, call events and polls, `speaker` says what a call says; this class runs the loop.
    """

    def __init__(self, *, config: Callable[[], Config], store: Store, provider: Provider, speech: Callable[[], Speech],
                 metrics: Metrics, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        clock = clock or Clock()
        self.ctx = ctx = Context(config=config, store=store, provider=provider, speech=speech, metrics=metrics,
                                 clock=clock, rng=rng or random.Random())
        self.store, self.metrics, self.clock = store, metrics, clock
        self.sleep = getattr(clock, "sleep", asyncio.sleep)
        limiter = RateLimiter(store.take_token, lambda: clock.now().timestamp(), sleep=self.sleep)
        self.speaker = Speaker(ctx)
        self.placer = Placer(ctx, limiter, self.speaker)
        self.outcomes = Outcomes(ctx, self.speaker, self.poke)
        self.owner = ctx.owner
        store.on_wakeup(self.poke)  # another replica added or changed due work
        self.wakeup = asyncio.Event()
        # Set while the loop waits with nothing in flight and nothing due now (see settled()).
        self._settled = asyncio.Event()
        self.running = False
        self.stopping = False
        self._purged_at: datetime | None = None
        self._look_later: asyncio.TimerHandle | None = None  # a planned look at another replica's lease end
        self.active: set[str] = set()  # keys being processed now, in this process
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> Config:
        return self.ctx.config()

    @property
    def locks(self) -> KeyedLocks:
        return self.ctx.locks

    @property
    def provider_healthy(self) -> bool:
        return self.ctx.provider_healthy

    # ---------------------------------------------------------------------------------------- loop

    async def drain(self, task: asyncio.Task[None], grace: float) -> None:
        """Stop taking work; let in-flight provider requests finish within `grace` seconds; the rest stays queued."""
        self.stopping = True
        self.poke()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace)
        except TimeoutError:
            log.warning("shutdown grace over; cancelling in-flight work (it stays queued)", extra={"grace": grace})
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def poke(self, at: datetime | None = None) -> None:
        """New work was queued: look at the queue now rather than at the next due time (or at `at`, when another
        replica's lease on due work ends: one look then takes the page over if its holder died)."""
        if at is None:
            self.wakeup.set()
            return
        if self._look_later is not None and not self._look_later.cancelled():
            return  # a look is planned already, no later than this lease's end (leases are equally long)
        delay = max(0.0, (at - self.clock.now()).total_seconds()) + LEASE_MARGIN
        self._look_later = asyncio.get_running_loop().call_later(delay, self._looked)

    def _looked(self) -> None:
        self._look_later = None
        self.wakeup.set()

    async def settled(self) -> None:
        """Look at the queue now, and return once the loop has nothing in flight and nothing due now.

        What a caller that moved the clock, or queued work, waits on to see its effect: the tests drive the
        production loop this way, with an injected clock, instead of a loop of their own.
        """
        self._settled.clear()
        self.poke()
        await self._settled.wait()

    def has_room(self) -> bool:
        """Whether a page submitted now would start at once."""
        return self.running and not self.stopping and len(self.active) < self.config.provider.max_in_flight

    def lease(self) -> Lease:
        """A lease for a page this process is about to work on (see context.lease_span)."""
        return self.ctx.lease(self.config)

    async def open(self, page: Page, claims: Sequence[str], now: datetime,
                   wanted: Callable[[], Awaitable[bool]] | None = None) -> bool:
        """Admit a new page (store.admit) with its first attempt queued and frozen; False when it is a duplicate.

        The one way a page comes to be, for a webhook's group and a missing heartbeat alike. When a slot is free
        the page is admitted leased to this process and started at once, its slot taken before the store is
        asked (so no other start can take it meanwhile); otherwise it is admitted unleased and left to the loop
        of whichever replica comes first. `wanted`, asked once the page is stored, may still stop it starting.
        """
        cfg = self.config
        call = next_call(page, cfg, now)
        if call is not None:
            self.speaker.freeze(page, call, cfg)
        slot = call is not None and self.has_room() and page.key not in self.active
        if slot:
            self.active.add(page.key)
        started = False
        try:
            admitted = await self.store.admit(page, claims, cfg.dedup.window, now,
                                              lease=self.lease() if slot else None)
            if admitted and slot and (wanted is None or await wanted()):
                self._start(page.key, page, reserved=True)
                started = True
        finally:
            if slot and not started:
                self.active.discard(page.key)
        if admitted and call is not None and not started:
            self.poke()
        return admitted

    def _start(self, key: str, fresh: Page | None = None, reserved: bool = False) -> asyncio.Task[None] | None:
        """Process a page in a task of its own, unless it is in progress here already (or `reserved` by open()).

        The key takes its slot in `active` at once, not when the task first runs, so that every check of
        the free slots (against the current provider.max_in_flight) counts it.
        """
        if key in self.active and not reserved:
            return None
        self.active.add(key)
        task = asyncio.create_task(self._guarded(key, fresh), name=f"page-{key[:12]}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.poke()

    async def run(self) -> None:
        """Process due pages until stopped: a page starts as soon as it is due and a slot is free.

        Pages are not processed in batches (a batch waits for its slowest page): each finished page
        frees its slot and wakes the loop, which takes as many due pages as there are free slots.
        """
        self.running = True
        clock = self.clock
        try:
            while not self.stopping:
                self.wakeup.clear()
                cfg = self.config
                nxt: datetime | None
                try:
                    free = cfg.provider.max_in_flight - len(self.active)
                    # Pages submitted straight from a webhook are in progress already: not read, not leased.
                    pages = await self.store.take_due(clock.now(), limit=free, lease=lease_span(cfg),
                                                      owner=self.owner, skip=self.active) if free > 0 else []
                    # A key in progress already was submitted from a webhook while the store was answering.
                    started = sum(self._start(page.key) is not None for page in pages)
                    if started and len(pages) == free:
                        continue  # every slot filled: more may be due already
                    await self._purge(cfg)
                    nxt = await self.store.next_due()
                    if nxt is not None and nxt <= clock.now():
                        # Due but leased (in flight here, or a crashed attempt): a finishing page pokes us.
                        nxt = clock.now() + timedelta(seconds=1)
                except StoreUnavailable as exc:
                    log.warning("store unavailable; dispatcher retries in 1s", extra={"error": str(exc)})
                    nxt = clock.now() + timedelta(seconds=1)
                wait = 60.0 if nxt is None else max(0.0, (nxt - clock.now()).total_seconds())
                if not self.active and wait > 0 and not self.wakeup.is_set():
                    self._settled.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=min(wait, 60.0) or 0.001)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self.running = False
            if self._look_later is not None:
                self._look_later.cancel()
            self._settled.set()  # a stopped loop has nothing more to do

    async def _purge(self, cfg: Config) -> None:
        """Forget finished pages and expired claims older than the dedup window, once a minute."""
        now = self.clock.now()
        if self._purged_at is not None and now - self._purged_at < timedelta(minutes=1):
            return
        self._purged_at = now
        gone = await self.store.purge(now - cfg.dedup.window)
        if gone:
            log.debug("purged finished pages", extra={"pages": gone})

    async def _guarded(self, key: str, fresh: Page | None = None) -> None:
        try:
            if self.stopping:
                await self.release(key)
                return
            await self.process(key, fresh)
        except StoreUnavailable as exc:
            # Still leased to this process, which takes it back as soon as the store answers again.
            log.warning("store unavailable while processing a page; it is taken again", extra={
                "page_key": key, "error": str(exc)})
        except Exception:
            log.exception("processing page failed; it stays queued", extra={"page_key": key})
        finally:
            self.active.discard(key)

    # ------------------------------------------------------------------------------------ one page

    async def release(self, key: str) -> None:
        """Give up a leased page untouched (shutting down), so the next start takes it at once."""
        async with self.locks[key]:
            page = await self.store.get(key)
            if page is not None:
                with contextlib.suppress(Conflict):  # written by another since: its lease is released already
                    await self.store.put(page)

    async def process(self, key: str, fresh: Page | None = None) -> None:
        """Move one page on: start its next call, place a queued call, or poll an overdue one.

        `fresh` is a page the caller has just committed and nobody else has seen (a new page: no call
        of it was sent, so no callback can have changed it); otherwise the page is read from the store.
        """
        try:
            await self.ctx.work.step(key, lambda fx: self._process(key, fresh, fx))
        except Conflict:
            # Another replica wrote the page since we read it (a callback it took, say): whatever we did
            # is in the page it wrote or will be redone, and the page is due again for whoever takes it.
            log.info("page changed by another writer while it was processed; it is taken again",
                     extra={"page_key": key})

    async def _process(self, key: str, fresh: Page | None, fx: Effects) -> None:
        page = fresh if fresh is not None else await self.store.get(key)
        now = self.clock.now()
        if page is None or page.due_at is None or page.due_at > now:
            if page is not None:
                await self.store.put(page)  # releases the lease
            return
        cfg = self.config
        if page.state is PageState.ACTIVE and route_of(cfg, page) is None:
            if not self._route_gone(page, now):
                await self.store.put(page)
                return
            # A reload removed the route everywhere: stop its escalation cleanly rather than call on a stale plan.
            self._cancel(page, now, "route removed by a config reload", fx)
        page.route_missing_since = None
        call = page.open_call
        if call is None and page.state is PageState.ACTIVE:
            had_calls = any(c.kind == "page" for c in page.calls)
            call = next_call(page, cfg, now)
            if call is not None:
                self.speaker.freeze(page, call, cfg)
                if had_calls:
                    fx(self.metrics.escalations.labels(page.route).inc)
                # Commit the new attempt before sending it: a receipt can arrive before the 202 does, and
                # after a crash the same correlationId and Idempotency-Key are reused, not new ones. The page
                # stays held by this process: nobody else may send the attempt meanwhile.
                await self.store.put(page, lease=self.ctx.lease(cfg))
        placed = False
        if call is None:
            if page.state is not PageState.ACTIVE or page.due_at is None or page.due_at <= now:
                page.due_at = None
        elif call.state in UNSENT_CALL_STATES:
            await self.placer.place(page, call, cfg, now, fx)
            placed = call.state is CallState.ACCEPTED
        elif call.state is CallState.ACCEPTED:
            await self.outcomes.poll(page, call, cfg, now, fx)
        page.updated_at = now
        try:
            await self.store.put(page)
        except (Conflict, StoreUnavailable):
            if not placed or call is None:
                raise
            # The provider took the call, and the page could not be written as read (another writer changed it,
            # or the store is away): that the call went out must not be lost, or its retry would ring again.
            await self._keep_record(key, call, page.due_at, now)

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
                if self.stopping:
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

    def _cancel(self, page: Page, now: datetime, why: str, fx: Effects) -> None:
        cancelled = cancel_queued(page, now, why)
        count = len(cancelled)
        fx(lambda: self.metrics.calls.labels(page.route, CallState.CANCELLED.value).inc(count))
        page.state, page.due_at = PageState.CANCELLED, None
        log.warning("page cancelled", extra={"page_key": page.key, "route": page.route, "reason": why})
