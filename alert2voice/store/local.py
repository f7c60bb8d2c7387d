"""The shared-limits part of the store protocol for backends that serve one process (memory, SQLite).

One process holds such a store (SQLite enforces it with its lock file), so its own memory is the shared
memory: these are exact, and start from zero after a restart. The rules themselves are store/rules.py's.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from . import rules
from .base import Admitted, FirstCall, StormBatch, Tier

_ALL = "*"  # the counter of every call, for scope "all"


class LocalLimits:
    """Throttle counters, storm batches and the rate limit's token bucket, in this process's memory."""

    def __init__(self) -> None:
        self._placed: dict[str, list[datetime]] = defaultdict(list)  # placement times, oldest first
        self._storms: dict[str, StormBatch] = {}
        self._bucket: rules.Bucket | None = None
        self._wakeups: list[Callable[[datetime | None], None]] = []

    async def memory_headroom(self) -> float | None:
        """None: no limit of the store's own (the process's memory, the disk: the node's to watch)."""
        return None

    async def replicated(self) -> None:
        """Nothing to wait for: the process's memory or its disk has no replicas."""

    async def reserve_call(self, number: str, now: datetime, tiers: Sequence[Tier]) -> datetime | None:
        counters = [self._placed[_ALL if tier.scope == "all" else number] for tier in tiers]
        at = rules.tier_fit(counters, tiers, now)
        if at is not None:
            return at
        for counter in (number, _ALL):
            rules.count(self._placed[counter], now)
        return None

    async def unreserve_call(self, number: str, at: datetime) -> None:
        if at in self._placed[number]:  # a call to this number, counted at `at`: out of its counters, and only then
            self._placed[number].remove(at)
            self._placed[_ALL].remove(at)

    async def calls_within(self, number: str, now: datetime, per: timedelta) -> list[datetime]:
        return rules.counted_within(self._placed[number], now, per)

    async def storm_join(self, number: str, key: str, release_at: datetime) -> StormBatch:
        batch = self._storms[number] = rules.storm_join(self._storms.get(number), key, release_at)
        return copy.deepcopy(batch)

    async def storm_batch(self, number: str) -> StormBatch | None:
        batch = self._storms.get(number)
        return copy.deepcopy(batch) if batch is not None else None

    async def storm_lead(self, number: str, key: str) -> bool:
        led = rules.storm_lead(self._storms.get(number), key)
        if led is None:
            return False
        self._storms[number] = led
        return True

    async def storm_end(self, number: str, key: str) -> None:
        if rules.storm_ends(self._storms.get(number), key):
            del self._storms[number]

    async def take_token(self, now: float, rate: float, burst: float) -> float:
        self._bucket, wait = rules.take_token(self._bucket, now, rate, burst)
        return wait

    async def _cleared(self, first: FirstCall | None, now: datetime) -> Admitted:
        """What an admit answers for its page's first call: counted if it fits, then given a token."""
        if first is None:
            return Admitted()
        fits_at = await self.reserve_call(first.number, now, first.tiers)
        if fits_at is not None:
            return Admitted(fits_at)
        return Admitted(None, await self.take_token(now.timestamp(), first.rate, first.burst))

    async def time(self) -> None:
        return None  # one process: its own clock is the one

    def on_wakeup(self, callback: Callable[[datetime | None], None]) -> None:
        self._wakeups.append(callback)

    async def wake_others(self) -> None:
        return None  # one process: there are no others
