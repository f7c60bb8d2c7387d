"""The queue consumer: takes due pages, throttles, renders, places calls with retries, and escalates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time as _time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from . import interactive
from .alertmanager import Alert, Payload
from .callbacks import Event
from .config import Config, RetryConfig, SpeechConfig
from .interactive import Answer
from .logs import SCRUBBER, mask_number
from .metrics import Metrics
from .pages import REACHED, Call, CallState, Page, PageState, cancel_queued, next_call, record_outcome, route_of
from .provider import (
    Accepted,
    Audio,
    AuthFailed,
    CallRequest,
    InteractiveProvider,
    MediaAudio,
    Provider,
    ProviderError,
    TtsAudio,
    UrlAudio,
)
from .speech import Speech, SpeechContext
from .store import Store, StoreUnavailable

log = logging.getLogger(__name__)

# CallRequest needs audio, but POST /v1/voice/calls sends none.
_UNSPOKEN = TtsAudio(text="")


class Clock:
    """Wall-clock time; tests pass a FakeClock with the same two methods."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return _time.monotonic()


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


class Throttle:
    """Sliding-window call counters per number and overall (SPEC §3 throttle)."""

    def __init__(self) -> None:
        self._placed: dict[str, deque[datetime]] = defaultdict(deque)
        self._all: deque[datetime] = deque()

    def allowed_at(self, config: Config, number: str, now: datetime) -> datetime:
        """The earliest instant a call to `number` fits every tier (now when it fits already)."""
        at = now
        rules = [(self._placed[number], r) for r in config.throttle.per_number]
        if config.throttle.global_ is not None:
            rules.append((self._all, config.throttle.global_))
        for placed, rule in rules:
            recent = [t for t in placed if t > now - rule.per]
            if len(recent) >= rule.calls:
                at = max(at, recent[-rule.calls] + rule.per)
        return at

    def record(self, number: str, now: datetime, horizon: timedelta) -> None:
        """Count a call as placed at `now`; forget what is older than the longest window."""
        for q in (self._placed[number], self._all):
            q.append(now)
            while q and q[0] <= now - horizon:
                q.popleft()

    def count(self, number: str, now: datetime, per: timedelta) -> int:
        """Calls to `number` within the last `per`."""
        return sum(1 for t in self._placed[number] if t > now - per)

    def frees_at(self, number: str, now: datetime, per: timedelta, calls: int) -> datetime:
        """When fewer than `calls` calls to `number` will be within the window again."""
        recent = [t for t in self._placed[number] if t > now - per]
        return recent[-calls] + per if len(recent) >= calls else now

    def cancel(self, number: str, at: datetime) -> None:
        """Give back a slot recorded at `at` for a call the provider did not take."""
        for q in (self._placed[number], self._all):
            with contextlib.suppress(ValueError):
                q.remove(at)


@dataclass
class StormBatch:
    """Pages folded into one summary call to a number (throttle.storm), released together."""

    release_at: datetime
    keys: list[str] = field(default_factory=list)
    leader: str | None = None


class RateLimiter:
    """A token bucket for provider requests (`provider.rate_limit`)."""

    def __init__(self, per_second: float, burst: float | None = None,
                 monotonic: Callable[[], float] = _time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate = per_second
        self.capacity = burst or max(1.0, per_second)
        self.tokens = self.capacity
        self.monotonic = monotonic
        self.sleep = sleep
        self.last = monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a request may be sent."""
        async with self._lock:
            while True:
                now = self.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await self.sleep((1 - self.tokens) / self.rate)


def _payload_of(page: Page, extra: Sequence[Page] = ()) -> Payload:
    g = page.group
    alerts = [a for p in (page, *extra) for a in p.alerts]
    return Payload(version="4", receiver=g.get("receiver", ""), status="firing",
                   alerts=[Alert.model_validate(a) for a in alerts], groupLabels=g.get("groupLabels", {}),
                   commonLabels=g.get("commonLabels", {}), commonAnnotations=g.get("commonAnnotations", {}),
                   externalURL=g.get("externalURL", ""), groupKey=page.group_key,
                   truncatedAlerts=g.get("truncatedAlerts", 0))


class Dispatcher:
    """Places the calls pages need, one page at a time per key, within the provider limits."""

    def __init__(self, *, config: Callable[[], Config], store: Store, provider: Provider, speech: Callable[[], Speech],
                 metrics: Metrics, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self._config = config
        self.store = store
        self.provider = provider
        self._speech = speech
        self.metrics = metrics
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.throttle = Throttle()
        cfg = config()
        self.limiter = RateLimiter(cfg.provider.rate_limit.per_second, monotonic=self.clock.monotonic,
                                   sleep=getattr(self.clock, "sleep", asyncio.sleep))
        self.in_flight = asyncio.Semaphore(cfg.provider.max_in_flight)
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.wakeup = asyncio.Event()
        self.provider_healthy = True
        self.running = False
        self.stopping = False
        self._purged_at: datetime | None = None
        self.active: set[str] = set()  # keys being processed now, in this process
        self.storms: dict[str, StormBatch] = {}  # by number; in memory: after a restart a storm folds anew
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> Config:
        return self._config()

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

    def poke(self) -> None:
        """New work was queued: look at the queue now rather than at the next due time."""
        self.wakeup.set()

    def submit(self, page: Page) -> None:
        """A page just admitted with its first attempt: start it now if a slot is free, else the loop will."""
        if not self.running or self.stopping or len(self.active) >= self.config.provider.max_in_flight:
            self.poke()
            return
        task = asyncio.create_task(self._guarded(page.key, page), name=f"page-{page.key[:12]}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.poke()

    def _lease(self, cfg: Config) -> timedelta:
        # Long enough for one provider request and its bookkeeping; after a crash, pages that were
        # in flight are picked up again once this expires.
        return cfg.provider.timeout * 2 + timedelta(seconds=5)

    async def run(self) -> None:
        """Process due pages until stopped: a page starts as soon as it is due and a slot is free.

        Pages are not processed in batches (a batch waits for its slowest page): each finished page
        frees its slot and wakes the loop, which takes as many due pages as there are free slots.
        """
        self.running = True
        tasks = self._tasks
        try:
            while not self.stopping:
                self.wakeup.clear()
                cfg = self.config
                nxt: datetime | None
                try:
                    free = cfg.provider.max_in_flight - len(self.active)
                    # Pages submitted straight from a webhook are in progress already: not read, not leased.
                    pages = await self.store.take_due(self.clock.now(), limit=free, lease=self._lease(cfg),
                                                      skip=self.active) if free > 0 else []
                    started = 0
                    for page in pages:
                        if page.key in self.active:
                            continue  # submitted from a webhook while the store was answering
                        task = asyncio.create_task(self._guarded(page.key), name=f"page-{page.key[:12]}")
                        tasks.add(task)
                        task.add_done_callback(self._finished)
                        started += 1
                    if started and len(pages) == free:
                        continue  # every slot filled: more may be due already
                    await self._purge(cfg)
                    nxt = await self.store.next_due()
                    if nxt is not None and nxt <= self.clock.now():
                        # Due but leased (in flight here, or a crashed attempt): a finishing page pokes us.
                        nxt = self.clock.now() + timedelta(seconds=1)
                except StoreUnavailable as exc:
                    log.warning("store unavailable; dispatcher retries in 1s", extra={"error": str(exc)})
                    nxt = self.clock.now() + timedelta(seconds=1)
                wait = 60.0 if nxt is None else max(0.0, (nxt - self.clock.now()).total_seconds())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=min(wait, 60.0) or 0.001)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.running = False

    async def _purge(self, cfg: Config) -> None:
        """Forget finished pages and expired claims older than the dedup window, once a minute."""
        now = self.clock.now()
        if self._purged_at is not None and now - self._purged_at < timedelta(minutes=1):
            return
        self._purged_at = now
        gone = await self.store.purge(now - cfg.dedup.window)
        if gone:
            log.debug("purged finished pages", extra={"pages": gone})

    async def run_due(self) -> int:
        """Process every page due now, batch by batch; returns how many were processed. Tests call this."""
        total = 0
        while not self.stopping:
            cfg = self.config
            pages = await self.store.take_due(self.clock.now(), limit=cfg.provider.max_in_flight,
                                              lease=self._lease(cfg))
            if not pages:
                break
            await asyncio.gather(*(self._guarded(p.key) for p in pages))
            total += len(pages)
        return total

    async def _guarded(self, key: str, fresh: Page | None = None) -> None:
        if key in self.active:
            return
        self.active.add(key)
        try:
            async with self.in_flight:
                if self.stopping:
                    await self.release(key)
                    return
                await self.process(key, fresh)
        except StoreUnavailable:
            raise
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
                await self.store.put(page)

    async def process(self, key: str, fresh: Page | None = None) -> None:
        """Move one page on: start its next call, place a queued call, or poll an overdue one.

        `fresh` is a page the caller has just committed and nobody else has seen (a new page: no call
        of it was sent, so no callback can have changed it); otherwise the page is read from the store.
        """
        async with self.locks[key]:
            page = fresh if fresh is not None else await self.store.get(key)
            now = self.clock.now()
            if page is None or page.due_at is None or page.due_at > now:
                if page is not None:
                    await self.store.put(page)  # releases the lease
                return
            cfg = self.config
            if page.state is PageState.ACTIVE and route_of(cfg, page) is None:
                # A reload removed the route: stop its escalation cleanly rather than call on a stale plan.
                self._cancel(page, now, "route removed by a config reload")
            call = page.open_call
            if call is None and page.state is PageState.ACTIVE:
                had_calls = any(c.kind == "page" for c in page.calls)
                call = next_call(page, cfg, now)
                if call is not None:
                    if had_calls:
                        self.metrics.escalations.labels(page.route).inc()
                    # Commit the new attempt before sending it: a receipt can arrive before the 202 does, and
                    # after a crash the same correlationId and Idempotency-Key are reused, not new ones.
                    await self.store.put(page)
            if call is None:
                if page.state is not PageState.ACTIVE or page.due_at is None or page.due_at <= now:
                    page.due_at = None
            elif call.state is CallState.QUEUED:
                await self._place(page, call, cfg, now)
            elif call.state is CallState.ACCEPTED:
                await self._poll(page, call, cfg, now)
            page.updated_at = now
            await self.store.put(page)
        self.locks.pop(key, None)

    def _cancel(self, page: Page, now: datetime, why: str) -> None:
        cancelled = cancel_queued(page, now, why)
        self.metrics.calls.labels(page.route, CallState.CANCELLED.value).inc(len(cancelled))
        page.state, page.due_at = PageState.CANCELLED, None
        log.warning("page cancelled", extra={"page_key": page.key, "route": page.route, "reason": why})

    def _log(self, page: Page, call: Call, msg: str, level: int = logging.INFO, **fields) -> None:
        log.log(level, msg, extra={"page_key": page.key, "route": page.route, "correlation_id": call.correlation_id,
                                   "contact": call.contact, "number": mask_number(call.number),
                                   "attempt": call.attempt, **fields})

    def _voice(self, cfg: Config, call: Call) -> SpeechConfig:
        contact = cfg.contacts.get(call.contact)
        return cfg.speech.for_contact(contact.speech if contact else None)

    def _tts(self, cfg: Config, call: Call, text: str, text_format: str = "SSML") -> TtsAudio:
        voice = self._voice(cfg, call)
        return TtsAudio(text=text, language=voice.language, voice=voice.voice, gender=voice.gender,
                        text_format=text_format)

    def audio_for(self, page: Page, call: Call, cfg: Config, now: datetime, extra: Sequence[Page] = ()) -> list[Audio]:
        """What a call says: the recording, else the speech; interactive: both, the speech ending with the prompt."""
        # `extra` pages (a storm summary) add their alerts to what is said.
        route = route_of(cfg, page)
        recording: Audio | None = None
        if route is not None and route.audio is not None and call.kind == "page" and not extra:
            a = route.audio
            recording = UrlAudio(a.location or "") if a.type == "URL" else MediaAudio(a.mediaId or "")
            if not call.interactive:
                return [recording]
        speech = self._speech()
        status = "resolved" if call.kind == "resolved" else "firing"
        if route is not None:
            name = route.template_for(cfg.templates, status)
        else:
            name = cfg.templates.resolved if status == "resolved" else cfg.templates.firing
        digit = cfg.acknowledgement.digit if call.interactive else None
        payload = _payload_of(page, extra)
        # The page stores only the alerts it paged for (its firing ones), so they are what is spoken.
        spoken = speech.speak(name, SpeechContext(payload=payload, alerts=payload.alerts, route=page.route,
                                                  contact=call.contact, now=now, status=status,
                                                  language=self._voice(cfg, call).language, ack_digit=digit))
        if spoken.error is not None:
            # The call goes out all the same: a template's mistake must not keep anyone from being called.
            self.metrics.template_errors.labels(page.route).inc()
            self._log(page, call, f"template failed; {spoken.fallback} is spoken instead", logging.WARNING,
                      template=name, error=str(spoken.error))
        audio = [self._tts(cfg, call, spoken.text, spoken.text_format)]
        if digit is not None and not spoken.asks_ack:
            # A template that does not say the prompt itself: it follows as a sentence of its own.
            audio.append(self._tts(cfg, call, interactive.ssml(interactive.prompt_text(digit), audio[0].language)))
        return [recording, *audio] if recording is not None else audio

    def build_request(self, page: Page, call: Call, cfg: Config, now: datetime,
                      extra: Sequence[Page] = ()) -> CallRequest:
        """The provider request for a call: what it says (message mode) and our callback."""
        # POST /v1/voice/calls carries no audio: interactive calls are spoken when answered (see call_event).
        audio = _UNSPOKEN if call.interactive else self.audio_for(page, call, cfg, now, extra)[0]
        return CallRequest(
            caller_id=cfg.provider.caller_id,
            dialed_number=call.number,
            audio=audio,
            correlation_id=call.correlation_id,
            callback_url=cfg.server.public_url + "/callbacks/webex",
            callback_auth_id=cfg.provider.callback.auth_id,
            idempotency_key=call.idempotency_key,
        )

    async def _place(self, page: Page, call: Call, cfg: Config, now: datetime) -> None:
        if call.tries == 0:
            # Chosen once per attempt, so its retries send the same request after a reload changed the mode.
            # Resolved notices (and test calls) stay play-and-hang-up: there is nothing to acknowledge.
            call.interactive = cfg.provider.mode == "interactive" and call.kind == "page"
        allowed = self.throttle.allowed_at(cfg, call.number, now)
        if allowed > now:
            if call.error != "throttled":
                call.error = "throttled"
                self.metrics.page(page.route, "throttled").inc()
                self._log(page, call, "call deferred by throttle", logging.WARNING, until=allowed.isoformat())
            page.due_at = allowed
            return
        if call.kind == "page" and cfg.throttle.storm is not None and await self._storm(page, call, cfg, now):
            return
        await self._send(page, call, cfg, now, self.build_request(page, call, cfg, now))

    async def _send(self, page: Page, call: Call, cfg: Config, now: datetime, request: CallRequest) -> bool:
        """Send one attempt; True when the provider accepted it."""
        call.tries += 1
        # Take the throttle slot now, before awaiting: concurrent pages must not all pass the same check.
        horizon = max([r.per for r in cfg.throttle.per_number] + [timedelta(hours=1)])
        if cfg.throttle.global_ is not None:
            horizon = max(horizon, cfg.throttle.global_.per)
        if cfg.throttle.storm is not None:
            horizon = max(horizon, cfg.throttle.storm.per)
        self.throttle.record(call.number, now, horizon)
        await self.limiter.acquire()
        place = cast(InteractiveProvider, self.provider).place_interactive_call if call.interactive \
            else self.provider.place_call
        try:
            accepted = await place(request)
        except ProviderError as exc:
            self.throttle.cancel(call.number, now)
            self._failed_try(page, call, cfg, exc, self.clock.now())
            return False
        self._accepted(page, call, cfg, accepted, self.clock.now())
        return True

    async def _storm(self, page: Page, call: Call, cfg: Config, now: datetime) -> bool:
        """Apply throttle.storm; True when this call is held for, or went out as, a storm summary call.

        Past `pages` calls to a number within `per`, further pages for it are folded: they wait until
        the window has room again, and then one call speaks all of them. Its outcome is theirs.
        """
        rule = cfg.throttle.storm
        assert rule is not None
        batch = self.storms.get(call.number)
        if batch is None or page.key not in batch.keys:
            if self.throttle.count(call.number, now, rule.per) < rule.pages:
                return False
            if batch is None or batch.leader is not None:
                release = self.throttle.frees_at(call.number, now, rule.per, rule.pages)
                batch = self.storms[call.number] = StormBatch(release)
            batch.keys.append(page.key)
            page.due_at = batch.release_at
            call.error = "storm: held for a summary call"
            self.metrics.page(page.route, "throttled").inc()
            self._log(page, call, "call folded into a storm summary", logging.WARNING,
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
        followers: list[Page] = []
        for key in batch.keys:
            other = await self.store.get(key) if key != page.key else None
            open_call = other.open_call if other is not None else None
            if other is not None and other.state is PageState.ACTIVE and open_call is not None \
                    and open_call.state is CallState.QUEUED and open_call.number == call.number:
                followers.append(other)
        request = self.build_request(page, call, cfg, now, extra=followers)
        if not await self._send(page, call, cfg, now, request):
            # Not accepted: the batch dissolves and each page is looked at again on its own.
            self.storms.pop(call.number, None)
            return
        members = [page.key, *(p.key for p in followers)]
        call.storm = members
        accepted = Accepted(call.message_id or "", call.correlation_id, None)
        for other in followers:
            async with self.locks[other.key]:
                fresh = await self.store.get(other.key)
                c = fresh.open_call if fresh is not None else None
                if fresh is None or c is None or c.state is not CallState.QUEUED:
                    continue
                c.storm, c.error = members, f"spoken in storm summary call {call.correlation_id}"
                c.interactive = call.interactive
                self._accepted(fresh, c, cfg, accepted, self.clock.now())
                await self.store.put(fresh)
        self.storms.pop(call.number, None)
        self._log(page, call, "storm summary call placed", logging.WARNING, pages=len(members))

    def _accepted(self, page: Page, call: Call, cfg: Config, accepted: Accepted, now: datetime) -> None:
        call.state, call.message_id, call.accepted_at, call.error = CallState.ACCEPTED, accepted.message_id, now, None
        page.due_at = now + cfg.provider.callback.deadline
        if not self.provider_healthy:
            self.provider_healthy = True
            self.metrics.provider_up.set(1)
        if call.kind == "page" and call.attempt == 1:
            self.metrics.time_to_call.observe(max(0.0, (now - page.received_at).total_seconds()))
        # Debug only: the info line for an attempt is its outcome (one line per attempt at info level).
        self._log(page, call, "call accepted by provider", logging.DEBUG, message_id=accepted.message_id,
                  tries=call.tries, seconds_since_webhook=round((now - page.received_at).total_seconds(), 3))

    def _failed_try(self, page: Page, call: Call, cfg: Config, exc: ProviderError, now: datetime) -> None:
        self.metrics.provider_errors.labels(exc.reason).inc()
        # Provider error text can echo what we sent; keep secrets out of the stored state and the API.
        message = SCRUBBER.scrub(str(exc))
        changed = call.error != message
        call.error = message
        if isinstance(exc, AuthFailed):
            # A credentials problem is not this call's fault: keep it queued, report not ready, retry slowly.
            if self.provider_healthy:
                self.provider_healthy = False
                self.metrics.provider_up.set(0)
            page.due_at = now + cfg.provider.retry.max
            self._log(page, call, "provider refused our credentials; call kept queued", logging.ERROR,
                      code=exc.code, reason=exc.reason)
            return
        gave_up = now - call.created_at >= cfg.provider.retry.give_up_after
        if not exc.retryable or gave_up:
            self._ended(page, call, CallState.FAILED, cfg, now, via="provider rejected" if not exc.retryable
                        else "retries gave up", code=exc.code, status=exc.status, reason=exc.reason)
            return
        wait = Backoff(cfg.provider.retry, self.rng).delay(call.tries, getattr(exc, "retry_after", None))
        page.due_at = now + wait
        if changed:
            self._log(page, call, "provider error; retrying", logging.WARNING, code=exc.code, status=exc.status,
                      reason=exc.reason, retry_in=round(wait.total_seconds(), 3))

    async def _poll(self, page: Page, call: Call, cfg: Config, now: datetime) -> None:
        # No final callback within the deadline: ask the provider (GET /v1/voice/calls/{id}).
        call.polls += 1
        status = None
        if call.message_id:
            try:
                status = await self.provider.call_status(call.message_id)
            except ProviderError as exc:
                self.metrics.provider_errors.labels(exc.reason).inc()
        outcome = outcome_of_status(status.status if status else None, bool(status and status.answered_time))
        if call.interactive and outcome in REACHED:
            # A programmable call is reached only by a keypress, which only a call event reports; still
            # ANSWERED, it may be going on.
            outcome = None if status is not None and status.status == "ANSWERED" else CallState.NO_ANSWER
            call.error = interactive.NOT_ACKNOWLEDGED
        if outcome is None and call.polls < 3:
            page.due_at = now + cfg.provider.callback.deadline / 2
            return
        self._ended(page, call, outcome or CallState.NO_ANSWER, cfg, now, via="status poll",
                    status=status.status if status else None)

    def _ended(self, page: Page, call: Call, outcome: CallState, cfg: Config, now: datetime, **fields) -> None:
        if record_outcome(page, call, outcome, cfg, now):
            self.metrics.calls.labels(page.route, outcome.value).inc()
            level = logging.INFO if outcome is not CallState.FAILED else logging.ERROR
            self._log(page, call, f"call {outcome.value}", level, message_id=call.message_id, tries=call.tries,
                      kind=call.kind, step=call.step + 1, error=call.error, **fields)

    async def apply_outcome(self, key: str, *, correlation: str | None, message_id: str | None,
                            outcome: CallState | None, grace: timedelta | None = None) -> str:
        """Apply a callback's outcome to its call; returns 'ok', 'unknown' or 'stale'."""
        async with self.locks[key]:
            page = await self.store.get(key)
            call = page.call(correlation, message_id) if page else None
            if page is None or call is None:
                return "unknown"
            now = self.clock.now()
            if not call.open:
                return "stale"
            if outcome is None:
                if grace is not None:
                    # A drop without its final receipt: give the receipt a moment, then poll.
                    page.due_at = min(page.due_at or now + grace, now + grace)
                    await self.store.put(page)
                return "ok"
            self._ended(page, call, outcome, self.config, now, via="callback")
            await self.store.put(page)
        await self._spread(key, call, outcome, now)
        return "ok"

    async def _spread(self, key: str, call: Call, outcome: CallState, now: datetime) -> list[Page]:
        """A storm summary call spoke for several pages: its outcome is theirs too (one lock at a time)."""
        ended = []
        for other in call.storm:
            if other == key:
                continue
            async with self.locks[other]:
                p = await self.store.get(other)
                c = p.call(message_id=call.message_id) if p is not None else None
                if p is not None and c is not None and c.open:
                    self._ended(p, c, outcome, self.config, now, via="storm summary callback")
                    await self.store.put(p)
                    ended.append(p)
        self.poke()
        return ended

    async def call_event(self, key: str, event: Event) -> Answer:
        """Apply an interactive call's event (SPEC §5) and return the action that answers it."""
        cfg = self.config
        async with self.locks[key]:
            page = await self.store.get(key)
            call = page.call(event.correlation_id, event.message_id) if page else None
            if page is None or call is None:
                return Answer("unknown", interactive.HANGUP)
            if not call.open:
                # Already final: the PLAYED after the thank-you, the DROPPED after our HANGUP, a late duplicate.
                return Answer("stale", interactive.HANGUP)
            now = self.clock.now()
            step = interactive.decide(call, event, cfg.acknowledgement.digit)
            action = await self._action(page, call, step, cfg, now)
            # The deadline poll is for calls whose events stopped, not for one still talking to us.
            page.due_at = now + cfg.provider.callback.deadline
            if step.outcome is not None:
                call.error = step.error
                self._ended(page, call, step.outcome, cfg, now, via="call event", event=event.event)
            await self.store.put(page)
        acknowledged: list[Page] = []
        if step.outcome is not None:
            others = await self._spread(key, call, step.outcome, now)
            if step.outcome is CallState.ACKNOWLEDGED:
                acknowledged = [page, *others]
        return Answer("ok", action, acknowledged, call.contact)

    async def _action(self, page: Page, call: Call, step: interactive.Step, cfg: Config,
                      now: datetime) -> dict[str, Any]:
        if step.reply == "prompt":
            call.prompts += 1
            extra = [p for k in call.storm if k != page.key and (p := await self.store.get(k)) is not None]
            # audio_for never fails on a template: the callee on the line hears a fallback at worst.
            return interactive.prompt_action(self.audio_for(page, call, cfg, now, extra), cfg.acknowledgement.digit)
        if step.reply == "thanks":
            text = interactive.ssml(interactive.THANKS, self._voice(cfg, call).language)
            return interactive.play_action([self._tts(cfg, call, text)])
        return interactive.CONTINUE if step.reply == "continue" else interactive.HANGUP


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
    s = status.upper().replace(" ", "_")
    if s in ("DROPPED", "RELEASED", "DISCONNECTED", "TROMBONE_RELEASED"):
        return CallState.ANSWERED if answered else CallState.NO_ANSWER
    return _STATUS_OUTCOMES.get(s)
