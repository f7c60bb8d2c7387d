"""How often calls may go out: the throttle tiers as the store counts them, and the provider's rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..config import Config
from ..store.base import Tier


def tiers(cfg: Config) -> list[Tier]:
    """The throttle rules in force: every per-number tier, and the global one."""
    out = [Tier("number", r.calls, r.per) for r in cfg.throttle.per_number]
    if cfg.throttle.global_ is not None:
        out.append(Tier("all", cfg.throttle.global_.calls, cfg.throttle.global_.per))
    return out


def tiers_for(cfg: Config, kind: str) -> list[Tier] | None:
    """The tiers a call of `kind` must fit. A "resolved" call is information and firing pages come first: it
    takes a slot only when a page call would still fit after it, so it fits every tier with one call fewer
    (None: a tier of one call has no slot to spare, and it never fits). Page calls, heartbeats' included,
    fit the tiers as they are."""
    out = tiers(cfg)
    if kind != "resolved":
        return out
    if any(t.calls <= 1 for t in out):
        return None
    return [t._replace(calls=t.calls - 1) for t in out]


class RateLimiter:
    """`provider.rate_limit`: one token bucket in the store, shared by every replica (the tenant's limit is one)."""

    def __init__(self, take: Callable[[float, float, float], Awaitable[float]], now: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.take, self.now, self.sleep = take, now, sleep

    async def acquire(self, per_second: float) -> bool:
        """Wait until a request may be sent at the rate in force now (a reload may change it); True if it waited."""
        waited = False
        while (wait := await self.take(self.now(), per_second, max(1.0, per_second))) > 0:
            await self.sleep(wait)
            waited = True
        return waited
