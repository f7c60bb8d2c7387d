"""The store's clock, as this process reads it: the one time every replica writes and compares.

Lease ends, due times, heartbeats' last-seen times and the limits' windows are written by one replica
and compared by another, so they must come from one clock. A store shared by several processes (Redis)
has one: `Store.time()`. Asking it at every `now()` would cost a round trip on every webhook, so the
process measures it now and then, NTP's way: the store's answer was read somewhere within the round
trip, so its time at the round trip's midpoint is known within half the round trip, and of the last
few measurements the one with the shortest round trip is believed. Between measurements the store's
time runs on with this process's monotonic clock, so a step of the process's wall clock changes nothing.
A store that serves one process (memory, SQLite) has no clock of its own: the process's is the one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..clock import Clock
from .base import StoreUnavailable

log = logging.getLogger("alert2voice.store")

MEASURE_EVERY = 30.0  # seconds between measurements of the store's clock
RETRY_EVERY = 1.0  # seconds before measuring again after a failure, and between the first QUICK measurements
FIRST_RETRY = 0.1  # seconds between attempts while the store never answered: the loops wait for the first
QUICK = 3  # measurements taken RETRY_EVERY apart at start, so that the filter has a choice soon
KEPT = 8  # measurements the filter chooses from
# How fast this process's monotonic clock and the store's clock may run apart: NTP slews a clock by up to
# 500 ppm, and the two hosts may slew in opposite directions. An older measurement is that much less sure
# (so a fresh one is believed unless its round trip was slow), and no slewing passes for a step.
DRIFT = 1000e-6
RESOLUTION = 1e-5  # seconds: what the store's clock and float timestamps resolve, with room to spare
WARN_SKEW = 1.0  # seconds between this process's wall clock and the store's above which a warning is logged


@dataclass(frozen=True)
class Measurement:
    """One reading of the store's clock, against this process's clocks at the round trip's midpoint."""

    offset: float  # the store's Unix time minus this process's monotonic clock, seconds
    error: float  # half the round trip: the store's clock was read within this of the midpoint
    at: float  # this process's monotonic clock at the midpoint
    wall: float  # this process's wall clock (Unix time) at the midpoint

    def error_at(self, at: float) -> float:
        """How sure the offset still is at monotonic time `at`: the clocks drift apart as time passes."""
        return self.error + DRIFT * abs(at - self.at) + RESOLUTION


def agree(a: Measurement, b: Measurement) -> bool:
    """Whether two measurements can both be right: their offsets differ by no more than their errors."""
    return abs(a.offset - b.offset) <= a.error_at(b.at) + b.error


class StoreClock(Clock):
    """`now()` on the store's clock (or the process's, for a store without one); `monotonic()` stays local.

    `read` is the store's `time()`: its current time, or None when it has no clock of its own. `skew`
    is told, at every measurement, how far this process's wall clock is ahead of the store's (seconds).
    """

    def __init__(self, process: Clock, read: Callable[[], Awaitable[datetime | None]], *,
                 skew: Callable[[float], None] = lambda seconds: None) -> None:
        self.process = process
        self._read = read
        self._report_skew = skew
        self._kept: deque[Measurement] = deque(maxlen=KEPT)
        self._best: Measurement | None = None
        self._warned: float | None = None  # the skew last warned about, while beyond WARN_SKEW
        self.local = False  # the store has no clock of its own: the process's is the one
        self._quick = QUICK  # measurements still to take RETRY_EVERY apart
        self._on_measured: list[Callable[[], None]] = []

    # ------------------------------------------------------------------------------------ the clock

    def now(self) -> datetime:
        best = self._best
        if best is None:
            return self.process.now()  # one process (or not measured yet: nothing is shared before the store answers)
        return datetime.fromtimestamp(best.offset + self.process.monotonic(), UTC)

    def monotonic(self) -> float:
        return self.process.monotonic()

    async def sleep(self, seconds: float) -> None:
        """The process clock's sleep (a test's clock may move itself on instead)."""
        await self.process.sleep(seconds)

    def on_measured(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when `now()` first becomes the store's time (see `measured`)."""
        self._on_measured.append(callback)

    @property
    def measured(self) -> bool:
        """Whether `now()` is the store's time (or the store has none): what /-/ready waits for."""
        return self.local or self._best is not None

    @property
    def skew(self) -> float | None:
        """How far this process's wall clock was ahead of the store's at the last measurement (seconds)."""
        best = self._best
        if best is None or not self._kept:
            return None
        last = self._kept[-1]
        return last.wall - (best.offset + last.at)

    # ------------------------------------------------------------------------------------ measuring

    async def measure(self) -> None:
        """Read the store's clock once and keep the measurement; raises StoreUnavailable."""
        process, first = self.process, not self.measured
        wall, start = process.now().timestamp(), process.monotonic()
        store_now = await self._read()
        end = process.monotonic()
        if store_now is None:
            self.local = True
        else:
            half = (end - start) / 2
            self._keep(Measurement(offset=store_now.timestamp() - (start + half), error=half, at=start + half,
                                   wall=wall + half))
        if first:
            for callback in self._on_measured:
                callback()

    def _keep(self, new: Measurement) -> None:
        best = self._best
        if best is not None and not agree(best, new):
            # The clocks moved against each other beyond what any round trip explains: the store's clock was
            # stepped, or it failed over to a host with another clock. What was measured before is void.
            log.warning("the store's clock moved: measuring it afresh", extra={
                "moved_seconds": round(new.offset - best.offset, 6)})
            self._kept.clear()
            self._quick = QUICK
        self._kept.append(new)
        self._quick = max(0, self._quick - 1)
        # The measurement with the shortest round trip (aged by the drift since) is the best there is.
        self._best = min(self._kept, key=lambda m: m.error_at(new.at))
        skew = self.skew
        assert skew is not None
        self._report_skew(skew)
        self._warn(skew)

    def _warn(self, skew: float) -> None:
        """A warning when the skew goes beyond WARN_SKEW or moves by as much again; a line when it is back."""
        warned = self._warned
        if abs(skew) > WARN_SKEW:
            if warned is None or abs(skew - warned) > WARN_SKEW:
                log.warning("this host's wall clock is %+.1fs off the store's: alert2voice reads every shared time "
                            "from the store's clock, so paging is not affected, but log timestamps are off and "
                            "other software on this host may mind; check its time synchronisation", skew,
                            extra={"skew_seconds": round(skew, 3)})
                self._warned = skew
        elif warned is not None:
            log.info("this host's wall clock is within %gs of the store's again", WARN_SKEW,
                     extra={"skew_seconds": round(skew, 3)})
            self._warned = None

    def next_wait(self) -> float:
        """Seconds until the next measurement: sooner while the store is away or the first ones are taken."""
        if self._best is None:
            return FIRST_RETRY
        return RETRY_EVERY if self._quick else MEASURE_EVERY

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Measure the store's clock every next_wait() seconds, until cancelled (at once done for a local store)."""
        while not self.local:
            await sleep(self.next_wait())
            try:
                await self.measure()
            except Exception as exc:
                # A store away is said by /-/ready and by every operation already; here it means measuring again
                # RETRY_EVERY seconds apart until QUICK measurements are in (the store may be another host now).
                if isinstance(exc, StoreUnavailable):
                    log.debug("could not read the store's clock", extra={"error": str(exc)})
                else:
                    log.exception("reading the store's clock failed")
                self._quick = QUICK
