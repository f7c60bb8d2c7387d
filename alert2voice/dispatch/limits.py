"""How often calls may go out: the per-number and global throttle tiers, and the provider's rate limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from ..config import Config


def horizon(cfg: Config) -> timedelta:
    """How long the throttle must remember a placed call: the longest window of any rule."""
    windows = [r.per for r in cfg.throttle.per_number] + [timedelta(hours=1)]
    windows += [rule.per for rule in (cfg.throttle.global_, cfg.throttle.storm) if rule is not None]
    return max(windows)


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


class RateLimiter:
    """A token bucket for provider requests (`provider.rate_limit`)."""

    def __init__(self, per_second: float, burst: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate = per_second
        self.capacity = burst or max(1.0, per_second)
        self.tokens = self.capacity
        self.monotonic = monotonic
        self.sleep = sleep
        self.last = monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, per_second: float | None = None) -> None:
        """Wait until a request may be sent; `per_second` is the rate in force now (a reload may change it)."""
        async with self._lock:
            if per_second is not None and per_second != self.rate:
                self._refill()  # time so far earns tokens at the old rate
                self.rate, self.capacity = per_second, max(1.0, per_second)
                self.tokens = min(self.tokens, self.capacity)
            while True:
                self._refill()
                # With a tolerance: a wait of exactly (1 - tokens) / rate can earn 0.999... of a token in floats.
                if self.tokens >= 1 - 1e-9:
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                await self.sleep((1 - self.tokens) / self.rate)

    def _refill(self) -> None:
        now = self.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
