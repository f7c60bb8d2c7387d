"""The queue consumer's loop: due pages taken under a lease, one task per page, within max_in_flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from ..alertmanager import Alert
from ..clock import Clock
from ..config import Config
from ..logs import Repeated
from ..metrics import Metrics
from ..pages import Page, next_call
from ..provider import Provider
from ..provider.health import ProviderHealth
from ..speech import Speech
from ..store import Store, StoreUnavailable
from ..store.base import Lease
from ..suppression import Suppression
from .context import Context, lease_span
from .limits import Cleared, RateLimiter, first_call
from .locks import KeyedLocks
from .outcomes import Outcomes
from .placing import Placer
from .speaking import Speaker
from .stepping import Stepper

log = logging.getLogger("alert2voice.dispatch")

# A page whose route is missing from this replica's config is cancelled only once it has been missing this long
# (longer than a rolling reload takes), and looked at again this often meanwhile.
ROUTE_GRACE = timedelta(minutes=5)
ROUTE_RECHECK = timedelta(seconds=30)
# A look planned at another replica's lease end comes this much later, so that the lease has ended by then.
LEASE_MARGIN = 0.05


class Dispatcher:
    """Places the calls pages need, one page at a time per key, within the provider limits.

    The rooms: `stepper` moves one page on, `placer` sends queued calls (throttle, storm, rate limit,
    retries), `outcomes` applies receipts, call events and polls, `speaker` says what a call says; this class
    runs the loop, opens new pages and hands out its slots.
    """

    def __init__(self, *, config: Callable[[], Config], store: Store, provider: Provider, speech: Callable[[], Speech],
                 metrics: Metrics, clock: Clock | None = None, rng: random.Random | None = None,
                 health: ProviderHealth | None = None, suppression: Suppression | None = None) -> None:
        clock = clock or Clock()
        # The app's (its probes feed it too), or one of its own fed by the calls alone.
        health = health or ProviderHealth(metrics, target=lambda: config().provider.url, now=clock.now)
        self.ctx = ctx = Context(config=config, store=store, provider=provider, speech=speech, metrics=metrics,
                                 clock=clock, health=health, rng=rng or random.Random(), suppression=suppression)
        self.store, self.metrics, self.clock = store, metrics, clock
        self.sleep = clock.sleep
        limiter = RateLimiter(store.take_token, lambda: clock.now().timestamp(), sleep=self.sleep)
        self.speaker = Speaker(ctx)
        self.placer = Placer(ctx, limiter, self.speaker)
        self.outcomes = Outcomes(ctx, self.speaker)
        self.stepper = Stepper(ctx, self.placer, self.outcomes, self.speaker, stopping=lambda: self.stopping,
                               sleep=lambda seconds: self.sleep(seconds))
        self.owner = ctx.owner
        ctx.due = self.poke  # a page changed here (a callback, a person, a resolution) is looked at when due
        store.on_wakeup(self.poke)  # another replica added or changed due work
        self.wakeup = asyncio.Event()
        # Set while the loop waits with nothing in flight and nothing due now (see settled()).
        self._settled = asyncio.Event()
        self.running = False
        self.stopping = False
        self._purged_at: datetime | None = None
        self._look_later: asyncio.TimerHandle | None = None  # a planned look (poke(at))
        self._look_at: datetime | None = None  # when it looks
        self._wake_at: datetime | None = None  # when the waiting loop looks by itself (None: it is looking now)
        self._backlog = False  # the last look left due work for want of a slot: a freed slot takes it
        self._store_away = Repeated(log, "store unavailable; dispatcher retries every second",
                                    monotonic=clock.monotonic)
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
        return self.ctx.health.healthy

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
        """Look at the queue now (new work was queued), or at `at` (another replica's lease on due work ends
        then, or a page is due then) unless the loop looks by then anyway: one look then takes the page on."""
        now = self.clock.now()
        if at is None or at <= now:
            self.wakeup.set()
            return
        if self._wake_at is not None and at >= self._wake_at:
            return  # the waiting loop looks by then
        if self._look_later is not None and self._look_at is not None and self._look_at <= at:
            return  # an earlier look is planned already
        if self._look_later is not None:
            self._look_later.cancel()
        self._look_at = at
        delay = (at - now).total_seconds() + LEASE_MARGIN
        self._look_later = asyncio.get_running_loop().call_later(delay, self._looked)

    def _looked(self) -> None:
        self._look_later = self._look_at = None
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
                   wanted: Callable[[], Awaitable[bool]] | None = None, alerts: Sequence[Alert] | None = None) -> bool:
        """Admit a new page (store.admit) with its first attempt queued and frozen; False when it is a duplicate.

        The one way a page comes to be, for a webhook's group and a missing heartbeat alike. When a slot is free
        the page is admitted leased to this process and started at once, its slot taken before the store is
        asked (so no other start can take it meanwhile); otherwise it is admitted unleased and left to the loop
        of whichever replica comes first. `wanted`, asked once the page is stored, may still stop it starting.
        `alerts`: the page's alerts as its webhook carried them, validated (spoken without validating them again).
        """
        cfg = self.config
        call = next_call(page, cfg, now)
        if call is not None:
            self.speaker.freeze(page, call, cfg, alerts=alerts)
        slot = call is not None and self.has_room() and page.key not in self.active
        # Started here, its first call is cleared by the admit itself: counted against the throttle, given a token.
        first = first_call(cfg, call) if slot and call is not None else None
        if slot:
            self.active.add(page.key)
        started = False
        try:
            admitted = await self.store.admit(page, claims, cfg.dedup.window, now,
                                              lease=self.ctx.held(page.key, cfg) if slot else None, first=first)
            cleared = Cleared(first.number, now, admitted) if first is not None and admitted is not None else None
            if admitted is not None and slot and (wanted is None or await wanted()):
                self._start(page.key, page, reserved=True, cleared=cleared)
                started = True
            elif cleared is not None and cleared.counted:
                await self.store.unreserve_call(cleared.number, now)
        finally:
            if slot and not started:
                self.active.discard(page.key)
                self.ctx.leases.pop(page.key, None)
        if admitted is not None and call is not None and not started:
            self.poke()
        return admitted is not None

    def _start(self, key: str, fresh: Page | None = None, reserved: bool = False,
               cleared: Cleared | None = None) -> asyncio.Task[None] | None:
        """Process a page in a task of its own, unless it is in progress here already (or `reserved` by open()).

        The key takes its slot in `active` at once, not when the task first runs, so that every check of
        the free slots (against the current provider.max_in_flight) counts it.
        """
        if key in self.active and not reserved:
            return None
        self.active.add(key)
        task = asyncio.create_task(self._guarded(key, fresh, cleared), name=f"page-{key[:12]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _freed(self, due: datetime | None) -> None:
        """A page's task ended, leaving it due at `due`: the loop looks when it is due (if it would not by then),
        or now when due work waits for the slot this frees; and it is settled when nothing is left in flight."""
        if self._backlog:
            self.poke()
        elif due is not None:
            self.poke(due)
        if not self.active and self._wake_at is not None and not self.wakeup.is_set():
            self._settled.set()  # the waiting loop saw nothing due now, and the page's next look is planned

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
                self._wake_at = None
                cfg = self.config
                nxt: datetime | None
                try:
                    free = cfg.provider.max_in_flight - len(self.active)
                    # Pages submitted straight from a webhook are in progress already: not read, not leased.
                    now = clock.now()
                    pages = await self.store.take_due(now, limit=free, lease=lease_span(cfg),
                                                      owner=self.owner, skip=self.active) if free > 0 else []
                    for page in pages:
                        self.ctx.leases[page.key] = now + lease_span(cfg)
                    # A key in progress already was submitted from a webhook while the store was answering.
                    started = sum(self._start(page.key, page) is not None for page in pages)
                    self._backlog = free <= 0 or len(pages) == free
                    if started and len(pages) == free:
                        continue  # every slot filled: more may be due already
                    await self._purge(cfg)
                    nxt = await self.store.next_due()
                    if nxt is not None and nxt <= clock.now():
                        # Due but leased (in flight here, or a crashed attempt): looked at again in a second.
                        nxt = clock.now() + timedelta(seconds=1)
                except StoreUnavailable as exc:
                    self._store_away(str(exc))
                    nxt = clock.now() + timedelta(seconds=1)
                else:
                    self._store_away.over()
                wait = min(60.0, 60.0 if nxt is None else max(0.0, (nxt - clock.now()).total_seconds()))
                self._wake_at = clock.now() + timedelta(seconds=wait)
                if not self.active and wait > 0 and not self.wakeup.is_set():
                    self._settled.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=wait or 0.001)
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

    async def _guarded(self, key: str, fresh: Page | None = None, cleared: Cleared | None = None) -> None:
        due: datetime | None = self.clock.now()  # unless the step says otherwise: look again now
        try:
            if self.stopping:
                await self.stepper.release(key, cleared)
                return
            due = await self.stepper.process(key, fresh, cleared)
        except StoreUnavailable as exc:
            # Still leased to this process, which takes it back as soon as the store answers again.
            log.warning("store unavailable while processing a page; it is taken again", extra={
                "page_key": key, "error": str(exc)})
        except Exception:
            log.exception("processing page failed; it stays queued", extra={"page_key": key})
        finally:
            self.active.discard(key)
            self.ctx.leases.pop(key, None)
            self._freed(due)
