"""The shared-limits part of the store protocol for backends that serve one process (memory, SQLite).

One process holds such a store (SQLite enforces it with its lock file), so its own memory is the shared
memory: these are exact, and start from zero after a restart.
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from .base import StormBatch, Tier

_ALL = "*"  # the counter of every call, for scope "all"
RETAIN = timedelta(days=1)  # how long a placed call is remembered: longer than any sensible window
# Unix time as a float has about 0.2 µs of resolution: a wait of exactly (1 - tokens) / rate may earn
# 0.9999 of a token. A thousandth of a token is nothing to a rate limit, and a wait is at least 1 ms.
TOKEN_SLACK = 1e-3
MIN_WAIT = 0.001


class LocalLimits:
    """Throttle counters, storm batches and the rate limit's token bucket, in this process's memory."""

    def __init__(self) -> None:
        self._placed: dict[str, deque[datetime]] = defaultdict(deque)
        self._storms: dict[str, StormBatch] = {}
        self._tokens: float | None = None
        self._token_time = 0.0
        self._wakeups: list[Callable[[datetime | None], None]] = []

    def _counter(self, number: str, tier: Tier) -> deque[datetime]:
        return self._placed[_ALL if tier.scope == "all" else number]

    async def reserve_call(self, number: str, now: datetime, tiers: Sequence[Tier]) -> datetime | None:
        at = now
        for tier in tiers:
            recent = [t for t in self._counter(number, tier) if t > now - tier.per]
            if len(recent) >= tier.calls:
                at = max(at, recent[-tier.calls] + tier.per)
        if at > now:
            return at
        for q in (self._placed[number], self._placed[_ALL]):
            q.append(now)
            while q and q[0] <= now - RETAIN:
                q.popleft()
        return None

    async def unreserve_call(self, number: str, at: datetime) -> None:
        for q in (self._placed[number], self._placed[_ALL]):
            with contextlib.suppress(ValueError):
                q.remove(at)

    async def calls_within(self, number: str, now: datetime, per: timedelta) -> list[datetime]:
        return [t for t in self._placed[number] if t > now - per]

    async def storm_join(self, number: str, key: str, release_at: datetime) -> StormBatch:
        batch = self._storms.get(number)
        if batch is None or batch.leader is not None:
            batch = self._storms[number] = StormBatch(release_at)
        if key not in batch.keys:
            batch.keys.append(key)
        return copy.deepcopy(batch)

    async def storm_batch(self, number: str) -> StormBatch | None:
        batch = self._storms.get(number)
        return copy.deepcopy(batch) if batch is not None else None

    async def storm_lead(self, number: str, key: str) -> bool:
        batch = self._storms.get(number)
        if batch is None or batch.leader is not None or key not in batch.keys:
            return False
        batch.leader = key
        return True

    async def storm_end(self, number: str, key: str) -> None:
        batch = self._storms.get(number)
        if batch is not None and batch.leader == key:
            del self._storms[number]

    async def take_token(self, now: float, rate: float, burst: float) -> float:
        if self._tokens is None:
            self._tokens, self._token_time = burst, now
        self._tokens = min(burst, self._tokens + max(0.0, now - self._token_time) * rate)
        self._token_time = max(self._token_time, now)
        if self._tokens >= 1 - TOKEN_SLACK:
            self._tokens = max(0.0, self._tokens - 1)
            return 0.0
        return max(MIN_WAIT, (1 - self._tokens) / rate)

    async def time(self) -> None:
        return None  # one process: its own clock is the one

    def on_wakeup(self, callback: Callable[[datetime | None], None]) -> None:
        self._wakeups.append(callback)

    async def wake_others(self) -> None:
        return None  # one process: there are no others
