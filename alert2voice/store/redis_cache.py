"""A replica's short memory of duplicates on Redis: look() answers reused until anything could change them.

A resend (Alertmanager's repeat, the second Alertmanager of an HA pair) asks the store whether its page is
a duplicate and which pages its group has. On Redis that is a round trip; here the answer is kept, and
reused only while all of this holds:

- every claim of the page is held (the answer was "duplicate" because of them), until the earliest of
  their expiries: a resend after the dedup window pages again exactly when it would have;
- nothing that could change the answer has happened anywhere: every replica's store publishes an
  invalidation on the wake-up channel when a page joins or leaves a group (admit, resolve), when claims
  are released (a resolution: the same alerts firing again must page) and when it purges;
- this replica's subscription to that channel is up and has been heard from within LIVE_WITHIN seconds
  (otherwise invalidations may be missed: everything is forgotten and nothing is kept until it is back);
- the answer is at most MAX_AGE seconds old, whatever else (a bound on any window left).

An answer fetched while an invalidation arrived is not kept (the generation counter). What remains is
the time an invalidation takes to travel from Redis to this replica (normally well under a millisecond):
a webhook arriving in it is answered as it would have been a moment earlier.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .base import OpenPage

MAX_AGE = 5.0  # seconds an answer is reused at most
MAX_ENTRIES = 10_000  # answers kept at most (then all are forgotten: a burst of distinct groups)
EVERYTHING = "*"  # an invalidation of every answer (claims released, pages purged)


@dataclass(frozen=True)
class Answer:
    pages: tuple[OpenPage, ...]
    until: float  # Unix time: the earliest expiry of the page's claims
    born: float  # monotonic time it was fetched


class LookCache:
    """Answers of look() that said "duplicate", by group and page key, and what makes them stale."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, live_within: float = 6.0) -> None:
        self.monotonic, self.live_within = monotonic, live_within
        self._groups: dict[str, dict[str, Answer]] = {}
        self._size = 0
        self.generation = 0  # moves on at every invalidation: an answer fetched across one is not kept
        self._heard: float | None = None  # when the subscription was last heard from; None: not subscribed

    @property
    def live(self) -> bool:
        return self._heard is not None and self.monotonic() - self._heard < self.live_within

    def heard(self) -> None:
        """The subscription answered (a message or a PONG): invalidations are arriving."""
        self._heard = self.monotonic()

    def dark(self) -> None:
        """The subscription is down: forget everything and keep nothing until it is back."""
        self._heard = None
        self.invalidate(EVERYTHING)

    def get(self, group: str, key: str, now: float) -> list[OpenPage] | None:
        """The group's pages, if the page is a duplicate by an answer still good at Unix time `now`."""
        answer = self._groups.get(group, {}).get(key)
        if answer is None or not self.live:
            return None
        if now >= answer.until or self.monotonic() - answer.born > MAX_AGE:
            del self._groups[group][key]
            self._size -= 1
            return None
        return list(answer.pages)

    def put(self, group: str, key: str, pages: list[OpenPage], until: float, generation: int) -> None:
        """Keep a "duplicate" answer fetched at `generation`, unless anything was invalidated since."""
        if generation != self.generation or not self.live:
            return
        if self._size >= MAX_ENTRIES:
            self.invalidate(EVERYTHING)
        self._size += key not in self._groups.setdefault(group, {})
        self._groups[group][key] = Answer(tuple(pages), until, self.monotonic())

    def invalidate(self, group: str) -> None:
        """Forget the answers about a group (its Redis key), or every answer (EVERYTHING)."""
        self.generation += 1
        if group == EVERYTHING:
            self._groups.clear()
            self._size = 0
        else:
            self._size -= len(self._groups.pop(group, {}))
