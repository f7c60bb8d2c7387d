"""The store's rules, each written once as a pure function over a snapshot; every backend applies these.

Memory and SQLite call them; the Lua that Redis needs for atomicity (redis_scripts.py) encodes the same
rules, takes its numbers from the constants here (interpolated when the script text is built, never
retyped), and is pinned to them by the differential test (tests/test_store_differential.py), which runs
the same operation sequences against every backend with the clock at the rules' boundaries.

Claims and pages take moments as the backend compares them: datetimes (memory) or Unix seconds (SQLite's
columns); throttle counters are datetimes; the token bucket computes in floats (Unix seconds), as Lua does.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, TypeVar

from ..pages import FINAL_PAGE_STATES, PageState
from .base import Lease, StormBatch, Tier

M = TypeVar("M", datetime, float)  # a moment: a datetime, or Unix seconds

RETAIN = timedelta(days=1)  # how long placed calls and storm batches are kept: longer than any sensible window
PURGE_CHUNK = 500  # pages and claims one purge operation removes at most
# A token is there from TOKEN_EARLY seconds before it has refilled in full: Unix time as a float has about
# 0.24 µs of resolution (under 0.5 µs until the year 2106), so a try made exactly `now + wait` may land that much
# short of the instant itself, and still finds its token.
TOKEN_EARLY = 1e-6


# ------------------------------------------------------------------------------------- claims and pages


def claim_held(expires: M | None, now: M) -> bool:
    """A dedup claim holds until its expiry (exclusive); a missing one (None) is free."""
    return expires is not None and expires > now


def would_refuse(active: bool, claim_expiries: Iterable[M | None], now: M) -> bool:
    """Whether admit() refuses: the page is stored and active, or every one of its claims is held at `now`
    (so a page with no claims is refused: it has nothing to hold)."""
    return active or all(claim_held(expires, now) for expires in claim_expiries)


def finished(state: PageState | str, due_at: object | None) -> bool:
    """A page is finished when its state is final and nothing is due for it (a resolved call may still be)."""
    return due_at is None and state in FINAL_PAGE_STATES


def purgeable(state: PageState | str, due_at: object | None, updated: M, before: M) -> bool:
    """purge(before) forgets a finished page last updated (else received) strictly before `before`."""
    return finished(state, due_at) and updated < before


def lease_free(lease: Lease | None, now: datetime, owner: str) -> bool:
    """take_due() may lease a page to `owner` when nobody holds it, its lease ended at or before `now`, or
    `owner` holds it already."""
    return lease is None or lease.until <= now or lease.owner == owner


def renewable(holder: str | None, epoch: str, lease: Lease) -> bool:
    """renew() extends a lease when `lease.owner` holds the page now (`holder`: its lease's owner, None when
    nobody holds it) and the page was read under the store's epoch (`epoch`; memory and SQLite have none, "")
    or the lease names none."""
    return holder == lease.owner and lease.epoch in ("", epoch)


def take_order(due_at: datetime, key: str) -> tuple[datetime, str]:
    """take_due() takes the earliest due first; at equal due times, in the order of their keys (as Redis
    orders a sorted set's equal scores)."""
    return due_at, key


def recent_order(updated: datetime, key: str) -> tuple[datetime, str]:
    """recent() lists the latest updated (else received) first; at equal times, the greater key first (Redis
    reads its index of equal scores backwards)."""
    return updated, key


# ------------------------------------------------------------------------------------ throttle tiers


def counted_within(placed: Sequence[datetime], now: datetime, per: timedelta) -> list[datetime]:
    """The placements of a counter (oldest first) within the last `per` (after now - per, exclusive)."""
    return list(placed[bisect_right(placed, now - per):])


def leaves_window(placed_at: datetime, tier: Tier) -> datetime:
    """When a call placed at `placed_at` stops counting against the tier."""
    return placed_at + tier.per


def tier_fit(counters: Sequence[Sequence[datetime]], tiers: Sequence[Tier], now: datetime) -> datetime | None:
    """Given each tier's counter (its placement times, oldest first: the number's, or every call's for scope
    "all"), None when a call at `now` fits every tier; else the earliest instant it fits them all: for each full
    tier, when the `calls`-th newest placement within its window leaves it."""
    at: datetime | None = None
    for placed, tier in zip(counters, tiers, strict=True):
        if len(placed) - bisect_right(placed, now - tier.per) >= tier.calls:
            ready = leaves_window(placed[-tier.calls], tier)
            at = ready if at is None else max(at, ready)
    return at if at is not None and at > now else None


def count(placed: list[datetime], now: datetime) -> None:
    """Count a call at `now` in a counter (oldest first, changed in place), which keeps the placements after
    now - RETAIN only."""
    insort(placed, now)
    del placed[:bisect_right(placed, now - RETAIN)]


# ------------------------------------------------------------------------------------------ token bucket


class Bucket(NamedTuple):
    """The provider's token bucket: `tokens` at Unix time `t`."""

    tokens: float
    t: float


def _refill(bucket: Bucket, now: float, rate: float, burst: float) -> Bucket:
    return Bucket(min(burst, bucket.tokens + max(0.0, now - bucket.t) * rate), max(bucket.t, now))


def _has_token(bucket: Bucket, rate: float) -> bool:
    return bucket.tokens >= 1 - rate * TOKEN_EARLY


def take_token(bucket: Bucket | None, now: float, rate: float, burst: float) -> tuple[Bucket, float]:
    """The bucket after a try at `now` (None: never used, so full) and the wait: 0 when a token was taken,
    else the seconds after which a try, made exactly at `now + wait`, takes one (nothing taken now)."""
    bucket = Bucket(burst, now) if bucket is None else _refill(bucket, now, rate, burst)
    if _has_token(bucket, rate):
        return Bucket(max(0.0, bucket.tokens - 1), bucket.t), 0.0
    return bucket, (bucket.t - now) + (1 - bucket.tokens) / rate


# ------------------------------------------------------------------------------------------ storm batches


def storm_join(batch: StormBatch | None, key: str, release_at: datetime) -> StormBatch:
    """The batch after `key` joins: the open one (no leader yet), or a new one released at `release_at`."""
    if batch is None or batch.leader is not None:
        batch = StormBatch(release_at)
    keys = batch.keys if key in batch.keys else [*batch.keys, key]
    return StormBatch(batch.release_at, keys, batch.leader)


def storm_lead(batch: StormBatch | None, key: str) -> StormBatch | None:
    """The batch led by `key`, or None when it cannot lead it (no batch, led already, or not in it)."""
    if batch is None or batch.leader is not None or key not in batch.keys:
        return None
    return StormBatch(batch.release_at, list(batch.keys), key)


def storm_ends(batch: StormBatch | None, key: str) -> bool:
    """Whether storm_end(key) drops the batch: only its leader ends it."""
    return batch is not None and batch.leader == key
