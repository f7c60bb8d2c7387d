"""One page, one unit of work: every change to a page is locked, read, decided, written and only then acted on.

GoAlert's `processinglock.WithTx` is the model. `Work.change()` takes the page key's lock, reads the page,
lets a decision change it and list its effects (counts, log lines, wake-ups), writes it with compare-and-set,
decides again on a fresh read when another writer came first, and runs the effects once, after the write
that won. A decision that lost its race reports nothing; nothing waits in a context variable.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from ..pages import Page
from ..store import Store
from ..store.base import Conflict, Lease
from .locks import KeyedLocks

T = TypeVar("T")

# A page's compare-and-set write is tried this often: each loss means another replica wrote it in between.
CAS_ATTEMPTS = 5


class Effects:
    """What a decision leaves to do once its write has won, in order: `fx(effect)` adds one.

    An effect is a callable; what it returns is awaited when awaitable (a store call, say). `save()` asks
    Work.change() to write the page (with a lease: kept held by its owner).
    """

    __slots__ = ("_pending", "lease", "write")

    def __init__(self) -> None:
        self._pending: list[Callable[[], object]] = []
        self.write = False
        self.lease: Lease | None = None

    def __call__(self, effect: Callable[[], object]) -> None:
        self._pending.append(effect)

    def save(self, lease: Lease | None = None) -> None:
        """The decision changed the page: write it (released, or held under `lease`)."""
        self.write, self.lease = True, lease

    async def run(self) -> None:
        """Run the effects, once, in the order they were added."""
        for effect in self._pending:
            outcome = effect()
            if inspect.isawaitable(outcome):
                await outcome


Decide = Callable[[Page | None, Effects], Awaitable[T]]


class Work:
    """The one way a page changes (Work.change), and the lock a longer step takes on it (Work.step).

    `due(at)` is told when a change wrote a page that has work due at `at` (the dispatcher's loop looks then, if
    it would not by then anyway; other replicas hear it from the store).
    """

    def __init__(self, store: Store, locks: KeyedLocks, due: Callable[[datetime], None] = lambda at: None) -> None:
        self.store, self.locks, self.due = store, locks, due

    async def change(self, key: str, decide: Decide[T], *, held: bool = False) -> T:
        """Lock the page, read it, decide, write it if the decision saved it, retry on Conflict, run the effects.

        `decide(page, fx)` gets the page as stored (None when there is none) and may be called again, on a
        fresh read, when another writer came first: it must be a decision over what it reads, not a change
        applied blindly. Raises Conflict only when CAS_ATTEMPTS writes in a row lost their race. `held`: the
        caller holds the key's lock already (a step's own follow-up write, see step()).
        """
        if held:
            return await self._change(key, decide)
        async with self.locks[key]:
            return await self._change(key, decide)

    async def _change(self, key: str, decide: Decide[T]) -> T:
        for attempt in range(1, CAS_ATTEMPTS + 1):
            page = await self.store.get(key)
            fx = Effects()
            result = await decide(page, fx)
            if page is not None and fx.write:
                try:
                    await self.store.put(page, lease=fx.lease)
                except Conflict:
                    if attempt == CAS_ATTEMPTS:
                        raise
                    continue
                if page.due_at is not None:
                    self.due(page.due_at)
            await fx.run()
            return result
        raise AssertionError("unreachable")

    async def step(self, key: str, act: Callable[[Effects], Awaitable[T]]) -> T:
        """A step that writes the page itself, around a provider request (the dispatcher's): under the page's
        lock, its effects run once it returns and are dropped when it raises (its write lost, say)."""
        async with self.locks[key]:
            fx = Effects()
            result = await act(fx)
            await fx.run()
            return result
