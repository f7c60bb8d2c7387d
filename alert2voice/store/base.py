"""The store protocol every backend implements, and the errors that mean "retry later" and "re-read".

The store is the only memory replicas share. Everything that must hold across processes goes through it:
dedup claims with expiry, pages under versioned writes (compare-and-set), due work taken under a lease
with an owner, the throttle's counters, storm batches and the provider's rate limit, and a wake-up when
another replica adds or changes due work. The in-process backends (memory, SQLite) implement the same
protocol, trivially, and pass the same contract suite (tests/test_store.py). The rules behind the answers
(when admit refuses, when a lease is free, tier arithmetic, the token bucket, storm batches, what purge
forgets) are written once, in rules.py; tests/test_store_differential.py holds every backend to them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from ..pages import Page


class OpenPage(NamedTuple):
    """An unresolved page of a group: enough to tell whether its alerts still fire."""

    key: str
    identities: tuple[str, ...]


class StoreUnavailable(Exception):
    """The store cannot be read or written now; callers answer 503 and try again later."""


class StoreLocked(StoreUnavailable):
    """Another process owns this store (the SQLite lock file is held): this one must not start."""


class NotReplicated(StoreUnavailable):
    """Fewer replicas than asked (store.replicas_ack) acknowledged the store's writes in time: answered 503.

    Its message names counts and the timeout only, never a host or a secret: the 503's body says it.
    """


class Conflict(Exception):
    """A versioned write lost a race: the page changed since it was read. Re-read it and apply the change again."""


class Tier(NamedTuple):
    """One throttle rule: at most `calls` calls within `per`, to one number (`scope` "number") or to all ("all")."""

    scope: str
    calls: int
    per: timedelta


class Lease(NamedTuple):
    """A page held by one replica until `until`: nobody else takes it from the due work meanwhile.

    `epoch` is the store epoch of the page its holder read (Page.epoch; "" checks none): renew() refuses a
    lease on a page read before the store lost its data, even where the same owner holds the page again.
    """

    owner: str
    until: datetime
    epoch: str = ""


class FirstCall(NamedTuple):
    """A new page's first call, cleared by the admit that stores the page (one atomic step, one round trip):
    counted against the throttle tiers as reserve_call() counts it and, if it fits, given a token of the
    provider's rate limit as take_token() gives one."""

    number: str
    tiers: Sequence[Tier]
    rate: float  # the token bucket's, as take_token() takes them
    burst: float


class Admitted(NamedTuple):
    """admit() stored the page; with a FirstCall, what reserve_call() and take_token() answered for it at the
    admit's `now`: `fits_at` None when the call was counted, `wait` 0 when a token was taken (None: not tried,
    the call did not fit)."""

    fits_at: datetime | None = None
    wait: float | None = None


@dataclass
class StormBatch:
    """Pages folded into one summary call to a number (throttle.storm), released together."""

    release_at: datetime
    keys: list[str] = field(default_factory=list)
    leader: str | None = None


class Store(Protocol):
    """Durable shared state. Every method is atomic; a page written here survives a restart."""

    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve: when it does not answer, or cannot take a write."""

    async def memory_headroom(self) -> float | None:
        """Bytes the store may still grow by before it refuses writes; None when it sets no limit of its own."""

    async def replicated(self) -> None:
        """Return once the store's replicas (as many as it was asked for) have every write made before this
        call, or raise NotReplicated; at once when none is asked for, and on a store that has no replicas."""

    async def time(self) -> datetime | None:
        """The store's own clock, the one every time replicas compare is read from (store/clock.py); None for
        a store that serves one process, whose clock is that process's. Raises StoreUnavailable."""

    # ------------------------------------------------------------------------------- pages and claims

    async def admit(self, page: Page, claims: Sequence[str], window: timedelta, now: datetime,
                    lease: Lease | None = None, first: FirstCall | None = None) -> Admitted | None:
        """Claim-if-absent with expiry: when any claim is free (or expired), hold all of them until
        now + window and save the page (version 1), atomically, and return Admitted; else change nothing, return
        None. A page whose key is stored and still active is never admitted again. With a lease, the page
        is saved held by its owner (the admitting replica places its first call itself); with `first`, its
        first call is cleared in the same step (see FirstCall)."""

    async def seen(self, key: str, claims: Sequence[str], now: datetime) -> bool:
        """True when admit() would refuse this page now (all claims held, or the page active): a cheap
        pre-check for resends; admit() stays the authority."""

    async def look(self, route: str, group_key: str, key: str, claims: Sequence[str],
                   now: datetime) -> tuple[list[OpenPage], bool]:
        """by_group(route, group_key) and seen(key, claims, now) at once: what the admission asks of every
        planned page of a resend, in one operation (one round trip on Redis)."""

    async def release(self, claims: Sequence[str]) -> None:
        """Drop dedup claims (their alerts resolved), so the same alerts firing again page again."""

    async def put(self, page: Page, lease: Lease | None = None) -> None:
        """Compare-and-set: replace the page if the stored version is still `page.version` (and the store's epoch
        still `page.epoch`, on Redis: see redis.py), then bump it (on
        the object too), index its calls' correlationIds and messageIds, and release its lease (or, with
        `lease`, leave it held by that owner until then); raise Conflict (changing nothing) when another
        writer came first."""

    async def get(self, key: str) -> Page | None:
        """The page with this key, with the version it is stored at."""

    async def by_group(self, route: str, group_key: str) -> list[OpenPage]:
        """Pages of this route and alert group whose alerts have not been resolved (resolved_at is None), first
        seen first (a page admitted anew keeps its place; one purged and admitted again comes last)."""

    async def find_call(self, *, correlation_id: str | None = None, message_id: str | None = None) -> str | None:
        """The key of the page holding the call with this correlationId or messageId."""

    async def take_due(self, now: datetime, limit: int, lease: timedelta, owner: str,
                       skip: Collection[str] = ()) -> list[Page]:
        """Up to `limit` pages due at `now` that nobody else holds (unleased, lease expired, or leased to
        `owner` itself), earliest due first (then by key), leased to `owner` until now + lease. Taking a lease
        bumps the page's version (its fencing token): a holder whose lease passed to another cannot write any
        more. Pages whose key is in `skip` (the caller is processing them already) are passed over."""

    async def renew(self, key: str, lease: Lease) -> bool:
        """Extend the lease `lease.owner` holds on the page to `lease.until`; False when it holds none now
        (the page was written since, or another replica took it over)."""

    async def next_due(self) -> datetime | None:
        """The earliest due time of any page, leased or not."""

    async def recent(self, limit: int) -> list[Page]:
        """The most recently updated pages, newest first (at equal times, the greater key first)."""

    async def depth(self) -> int:
        """How many pages have work due (the queue_depth metric)."""

    async def purge(self, before: datetime) -> int:
        """Forget finished pages last updated before `before` and expired claims; return pages removed."""

    # --------------------------------------------------------------------------------- shared limits

    async def reserve_call(self, number: str, now: datetime, tiers: Sequence[Tier]) -> datetime | None:
        """Count a call to `number` at `now` if every tier has room; None when counted. Otherwise count
        nothing and return the earliest instant at which the call would fit them all."""

    async def unreserve_call(self, number: str, at: datetime) -> None:
        """Give back the slot counted at `at` for a call the provider did not take."""

    async def calls_within(self, number: str, now: datetime, per: timedelta) -> list[datetime]:
        """When the calls to `number` counted within the last `per` were placed, oldest first."""

    async def storm_join(self, number: str, key: str, release_at: datetime) -> StormBatch:
        """Add the page to the number's open storm batch (one without a leader), or open one released at
        `release_at`; returns the batch as stored."""

    async def storm_batch(self, number: str) -> StormBatch | None:
        """The number's storm batch, if any."""

    async def storm_lead(self, number: str, key: str) -> bool:
        """Make the page the batch's leader (it places the summary call) unless it has one already."""

    async def storm_end(self, number: str, key: str) -> None:
        """Drop the number's batch if `key` leads it (its summary call went out, or failed)."""

    async def take_token(self, now: float, rate: float, burst: float) -> float:
        """The provider's rate limit, one token bucket for every replica: take a token and return 0, or
        return the seconds to wait before one is there (nothing taken). `now` is Unix time in seconds."""

    # ------------------------------------------------------------------------------------- wake-ups

    def on_wakeup(self, callback: Callable[[datetime | None], None]) -> None:
        """Call `callback` (on the event loop) when another replica adds or changes due work: with None to look
        now, or with the end of the lease under which it was written, to look then (its holder may die)."""

    async def wake_others(self) -> None:
        """Tell the other replicas that due work was added or changed (nothing to do in one process)."""

    # ------------------------------------------------------------------------------------ heartbeats

    async def beat(self, name: str, at: datetime) -> None:
        """A heartbeat was refreshed at `at`: its last-seen time becomes the later of the stored one and `at`."""

    async def beats(self) -> dict[str, datetime]:
        """The last-seen time of every heartbeat ever refreshed (a heartbeat not in it was never seen)."""
