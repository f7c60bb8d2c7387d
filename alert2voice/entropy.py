"""Random ids without a system call each: the kernel's random bytes (what `secrets` and `uuid4` read), read
4 KiB at a time. A new page takes two to five ids (its nonce, an Idempotency-Key, the Redis store's epoch
candidates and placement); one getrandom call a page cost about 5 % of the new-page path's CPU (py-spy).

For the event loop's thread: the pool is not locked.
"""

from __future__ import annotations

import os
import uuid

_CHUNK = 4096


class _Pool:
    def __init__(self) -> None:
        self._bytes, self._at = b"", 0

    def take(self, n: int) -> bytes:
        if self._at + n > len(self._bytes):
            self._bytes, self._at = os.urandom(max(_CHUNK, n)), 0
        start, self._at = self._at, self._at + n
        return self._bytes[start:self._at]


_POOL = _Pool()


def token_hex(nbytes: int) -> str:
    """`nbytes` random bytes as hex, as secrets.token_hex."""
    return _POOL.take(nbytes).hex()


def uuid4() -> uuid.UUID:
    """A random (version 4) UUID, as uuid.uuid4."""
    return uuid.UUID(bytes=_POOL.take(16), version=4)
