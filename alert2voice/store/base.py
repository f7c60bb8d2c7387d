"""The store protocol every backend implements, and the error that means "retry later"."""

from __future__ import annotations

from collections.abc import Collection, Sequence
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


class Store(Protocol):
    """Durable state. Every method is atomic; a page written here survives a restart."""

    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve."""

    async def admit(self, page: Page, claims: Sequence[str], window: timedelta, now: datetime) -> bool:
        """Claim-if-absent with expiry: when any claim is free (or expired), hold all of them until
        now + window and save the page, atomically, and return True; else change nothing, return False.
        A page whose key is stored and still active is never admitted again."""

    async def seen(self, key: str, claims: Sequence[str], now: datetime) -> bool:
        """True when admit() would refuse this page now (all claims held, or the page active): a cheap
        pre-check for resends; admit() stays the authority."""

    async def release(self, claims: Sequence[str]) -> None:
        """Drop dedup claims (their alerts resolved), so the same alerts firing again page again."""

    async def put(self, page: Page) -> None:
        """Insert or replace a page and index its calls' correlationIds and messageIds."""

    async def get(self, key: str) -> Page | None:
        """The page with this key."""

    async def by_group(self, route: str, group_key: str) -> list[OpenPage]:
        """Pages of this route and alert group whose alerts have not been resolved (resolved_at is None)."""

    async def find_call(self, *, correlation_id: str | None = None, message_id: str | None = None) -> str | None:
        """The key of the page holding the call with this correlationId or messageId."""

    async def take_due(self, now: datetime, limit: int, lease: timedelta,
                       skip: Collection[str] = ()) -> list[Page]:
        """Up to `limit` pages due at `now` that nobody holds, leased until now + lease; pages whose key is
        in `skip` (the caller is processing them already) are neither leased nor returned."""

    async def next_due(self) -> datetime | None:
        """The earliest due time of any page, leased or not."""

    async def recent(self, limit: int) -> list[Page]:
        """The most recently updated pages, newest first."""

    async def depth(self) -> int:
        """How many pages have work due (the queue_depth metric)."""

    async def purge(self, before: datetime) -> int:
        """Forget finished pages last updated before `before` and expired claims; return pages removed."""
