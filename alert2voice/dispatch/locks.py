"""One asyncio lock per page key, so that one page is moved by one coroutine at a time in this process."""

from __future__ import annotations

import asyncio


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _KeyLock:
    """`async with locks[key]:` — the key's lock, counted while held or awaited."""

    __slots__ = ("_key", "_locks")

    def __init__(self, locks: dict[str, _Entry], key: str) -> None:
        self._locks, self._key = locks, key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = _Entry()
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._leave(entry)
            raise

    async def __aexit__(self, *exc: object) -> None:
        entry = self._locks[self._key]
        entry.lock.release()
        self._leave(entry)

    def _leave(self, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._locks[self._key]


class KeyedLocks:
    """One lock per page key, kept only while somebody holds or waits for it.

    Removing a lock that others still wait on would let the next comer create a second lock for the same
    key, and two coroutines would then move one page at once; an entry nobody uses is dropped at once.
    """

    def __init__(self) -> None:
        self._locks: dict[str, _Entry] = {}

    def __getitem__(self, key: str) -> _KeyLock:
        return _KeyLock(self._locks, key)

    def __len__(self) -> int:
        return len(self._locks)
