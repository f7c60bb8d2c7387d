"""How often calls may go out: the throttle tiers as the store counts them, and the provider's rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from ..config import Config
from ..pages import Call
from ..store.base import Admitted, FirstCall, Tier


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


def burst(per_second: float) -> float:
    """The token bucket's size at a rate: a second's worth, and at least one request."""
    return max(1.0, per_second)


def first_call(cfg: Config, call: Call) -> FirstCall | None:
    """What the admit of a new page clears for its first call: its throttle tiers and a token (None: a call of a
    kind that never fits, left to the placer)."""
    rules = tiers_for(cfg, call.kind)
    if rules is None:
        return None
    rate = cfg.provider.rate_limit.per_second
    return FirstCall(call.number, rules, rate, burst(rate))


@dataclass
class Cleared:
    """A new page's first call as its admit cleared it at `at` (Admitted); `spent` once the placer used it. An
    unspent one gives its throttle slot back (Stepper.process)."""

    number: str
    at: datetime
    admitted: Admitted
    spent: bool = False

    @property
    def counted(self) -> bool:
        return self.admitted.fits_at is None

    @property
    def token(self) -> bool:
        return self.admitted.wait == 0


class RateLimiter:
    """`provider.rate_limit`: one token bucket in the store, shared by every replica (the tenant's limit is one)."""

    def __init__(self, take: Callable[[float, float, float], Awaitable[float]], now: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.take, self.now, self.sleep = take, now, sleep

    async def acquire(self, per_second: float) -> bool:
        """Wait until a request may be sent at the rate in force now (a reload may change it); True if it waited."""
        waited = False
        while (wait := await self.take(self.now(), per_second, burst(per_second))) > 0:
            await self.sleep(wait)
            waited = True
        return waited
