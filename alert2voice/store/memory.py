"""An in-memory store for tests and `store.backend: memory`: same semantics (store/rules.py), no durability."""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from ..pages import FINAL_PAGE_STATES, Page
from . import rules
from .base import Admitted, Conflict, FirstCall, Lease, OpenPage, StoreUnavailable
from .local import LocalLimits


class MemoryStore(LocalLimits):
    """Dicts behind the Store protocol; pages are copied in and out as a real backend would."""

    def __init__(self) -> None:
        super().__init__()
        self._pages: dict[str, Page] = {}
        self._claims: dict[str, datetime] = {}
        self._leases: dict[str, Lease] = {}
        self._calls: dict[str, str] = {}
        self._beats: dict[str, datetime] = {}  # heartbeat name -> last seen
        self.available = True

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory store switched off (test)")

    async def ping(self) -> None:
        self._check()

    async def seen(self, key: str, claims: Sequence[str], now: datetime) -> bool:
        self._check()
        existing = self._pages.get(key)
        active = existing is not None and existing.state not in FINAL_PAGE_STATES
        return rules.would_refuse(active, [self._claims.get(c) for c in claims], now)

    async def look(self, route: str, group_key: str, key: str, claims: Sequence[str],
                   now: datetime) -> tuple[list[OpenPage], bool]:
        """by_group() and seen(), one after the other: both are in this process."""
        return await self.by_group(route, group_key), await self.seen(key, claims, now)

    async def admit(self, page: Page, claims: Sequence[str], window: timedelta, now: datetime,
                    lease: Lease | None = None, first: FirstCall | None = None) -> Admitted | None:
        if await self.seen(page.key, claims, now):
            return None
        for c in claims:
            self._claims[c] = now + window
        stored = self._pages.get(page.key)  # a finished earlier incarnation: versions go on from it
        page.version = stored.version if stored is not None else 0
        for call in stored.calls if stored is not None else ():  # its call ids go with it, as on Redis
            self._calls.pop(call.correlation_id, None)
            self._calls.pop(call.message_id or "", None)
        self._store(page, lease)
        return await self._cleared(first, now)

    async def release(self, claims: Sequence[str]) -> None:
        self._check()
        for c in claims:
            self._claims.pop(c, None)

    def _store(self, page: Page, lease: Lease | None) -> None:
        page.version += 1
        self._pages[page.key] = copy.deepcopy(page)
        for call in page.calls:
            self._calls[call.correlation_id] = page.key
            if call.message_id:
                self._calls[call.message_id] = page.key
        if lease is None:
            self._leases.pop(page.key, None)
        else:
            self._leases[page.key] = lease

    async def put(self, page: Page, lease: Lease | None = None) -> None:
        self._check()
        stored = self._pages.get(page.key)
        if (stored.version if stored is not None else 0) != page.version:
            raise Conflict(f"page {page.key[:12]} changed since it was read")
        self._store(page, lease)

    async def get(self, key: str) -> Page | None:
        self._check()
        page = self._pages.get(key)
        return copy.deepcopy(page) if page else None

    async def by_group(self, route: str, group_key: str) -> list[OpenPage]:
        self._check()
        return [OpenPage(p.key, tuple(p.identities)) for p in self._pages.values()
                if p.route == route and p.group_key == group_key and p.resolved_at is None]

    async def find_call(self, *, correlation_id: str | None = None, message_id: str | None = None) -> str | None:
        self._check()
        return self._calls.get(correlation_id or "") or self._calls.get(message_id or "")

    async def take_due(self, now: datetime, limit: int, lease: timedelta, owner: str,
                       skip: Collection[str] = ()) -> list[Page]:
        self._check()
        due = sorted((p for p in self._pages.values() if p.due_at is not None and p.due_at <= now
                      and rules.lease_free(self._leases.get(p.key), now, owner) and p.key not in skip),
                     key=lambda p: rules.take_order(p.due_at, p.key))
        out = []
        for p in due[:limit]:
            self._leases[p.key] = Lease(owner, now + lease)
            p.version += 1  # the lease's fencing token: a writer that read before it cannot write now
            out.append(copy.deepcopy(p))
        return out

    async def renew(self, key: str, lease: Lease) -> bool:
        self._check()
        held = self._leases.get(key)
        if not rules.renewable(held.owner if held is not None else None, "", lease):
            return False
        self._leases[key] = lease
        return True

    async def next_due(self) -> datetime | None:
        self._check()
        return min((p.due_at for p in self._pages.values() if p.due_at is not None), default=None)

    async def recent(self, limit: int) -> list[Page]:
        self._check()
        pages = sorted(self._pages.values(), key=lambda p: rules.recent_order(p.updated_at or p.received_at, p.key),
                       reverse=True)
        return [copy.deepcopy(p) for p in pages[:limit]]

    async def depth(self) -> int:
        self._check()
        return sum(1 for p in self._pages.values() if p.due_at is not None)

    async def purge(self, before: datetime) -> int:
        self._check()
        gone = [k for k, p in self._pages.items()
                if rules.purgeable(p.state, p.due_at, p.updated_at or p.received_at, before)]
        for k in gone:
            page = self._pages.pop(k)
            self._leases.pop(k, None)  # forgotten with its page: nobody holds (or renews) what is not stored
            for call in page.calls:
                self._calls.pop(call.correlation_id, None)
                self._calls.pop(call.message_id or "", None)
        for c in [c for c, exp in self._claims.items() if not rules.claim_held(exp, before)]:
            del self._claims[c]
        return len(gone)

    # ------------------------------------------------------------------------------------ heartbeats

    async def beat(self, name: str, at: datetime) -> None:
        self._check()
        stored = self._beats.get(name)
        self._beats[name] = at if stored is None else max(stored, at)

    async def beats(self) -> dict[str, datetime]:
        self._check()
        return dict(self._beats)
