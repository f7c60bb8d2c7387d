"""On-call rotations and quiet hours, computed for an instant the caller passes in (no clock reads)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

_DAY = timedelta(days=1)
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")


def parse_clock(text: str) -> time:
    """Parse a 24-hour "HH:MM" or "H:MM" clock time; ValueError naming the bad text otherwise."""
    if not isinstance(text, str):
        # PyYAML reads an unquoted 22:00 as the base-60 integer 1320.
        raise ValueError(f"clock time must be a string like '22:00' (quote it in YAML), got {text!r}")
    match = _CLOCK.fullmatch(text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"invalid clock time {text!r}: expected HH:MM between 00:00 and 23:59")
    return time(int(match[1]), int(match[2]))


def _localize(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of naive wall-clock time `wall` in `tz`, folds and gaps resolved with fold=0."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _utc(at: datetime) -> datetime:
    """`at` in UTC; refuses naive datetimes, which astimezone() would read as the host's local time."""
    if at.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {at!r}")
    # Datetimes sharing a tzinfo compare and subtract by wall clock, ignoring DST: work in UTC.
    return at.astimezone(UTC)


def _clip(since: datetime, until: datetime, at: datetime, windows: Iterable[tuple]) -> tuple:
    """Narrow [since, until) around `at` to the part no (start, end, ...) window covers."""
    for start, end, *_ in windows:
        if end <= at:
            since = max(since, end)
        elif start > at:
            until = min(until, start)
    return since, until


@dataclass(frozen=True)
class Override:
    """`contact` takes a rotation's calls from start (inclusive) to end (exclusive), naive rotation-local."""

    contact: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError(f"override for {self.contact}: times must be naive (rotation-local)")
        if self.end <= self.start:
            raise ValueError(f"override for {self.contact}: end {self.end} is not after start {self.start}")


@dataclass(frozen=True)
class OnCall:
    """Who a rotation pages from `since` until `until` (aware, rotation timezone), and why."""

    rotation: str
    contact: str | None
    since: datetime
    until: datetime
    reason: str


@dataclass(frozen=True)
class Rotation:
    """Members take turns in fixed-length shifts from `start` (naive, in `tz`); overrides win over turns.

    Shifts that are whole days (1d, 1w, 2w) hand over at the same local wall-clock time across DST
    changes, so a week containing a change lasts 167 or 169 hours. Other shifts (12h, 8h, 36h) last
    exactly that much elapsed time from the start instant, so their local handover time moves with DST.
    Local times a DST fold repeats mean the first occurrence and local times a DST gap skips are read
    with the pre-gap offset (01:30 in a 01:00-02:00 gap is 02:30 after it): fold=0 everywhere.
    """

    name: str
    members: tuple[str, ...]
    shift: timedelta
    start: datetime
    tz: ZoneInfo
    overrides: tuple[Override, ...] = ()

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError(f"rotation {self.name}: no members")
        if self.shift <= timedelta(0):
            raise ValueError(f"rotation {self.name}: shift must be positive, got {self.shift}")
        if self.start.tzinfo is not None:
            raise ValueError(f"rotation {self.name}: start must be naive (local time in {self.tz})")

    def on_call(self, at: datetime) -> OnCall:
        """Who is on call at aware instant `at`; since/until bound their uninterrupted stretch around it."""
        at, tz = _utc(at), self.tz
        windows = [(_localize(o.start, tz), _localize(o.end, tz), o) for o in self.overrides]
        for i in reversed(range(len(windows))):
            start, end, override = windows[i]
            if start <= at < end:
                since, until = _clip(start, end, at, windows[i + 1 :])
                reason = f"override for {override.contact} until {self._fmt(until)} {tz}"
                return self._on_call(override.contact, since, until, reason)
        first = self._handover(0)
        if at < first:
            since, until = _clip(at, first, at, windows)
            reason = f"rotation has not started yet (first shift {self._fmt(first)} {tz})"
            return self._on_call(None, since, until, reason)
        n = self._shift_index(at)
        start, end = self._handover(n), self._handover(n + 1)
        since, until = _clip(start, end, at, windows)
        members = ", ".join(self.members)
        reason = f"shift {n + 1} of {self.name} ({members}), {self._fmt(start)} → {self._fmt(end)} {tz}"
        return self._on_call(self.members[n % len(self.members)], since, until, reason)

    def shifts(self, start: datetime, count: int) -> list[OnCall]:
        """The `count` consecutive on-call stretches from aware instant `start`, overrides included."""
        stretches: list[OnCall] = []
        for _ in range(count):
            stretches.append(self.on_call(start))
            start = stretches[-1].until
        return stretches

    def _handover(self, n: int) -> datetime:
        """The UTC instant shift n (0-based, may be negative) begins."""
        if self.shift % _DAY:
            return _localize(self.start, self.tz) + n * self.shift
        return _localize(self.start + n * self.shift, self.tz)

    def _shift_index(self, at: datetime) -> int:
        """The 0-based number of the regular shift containing UTC instant `at`."""
        n = (at.astimezone(self.tz).replace(tzinfo=None) - self.start) // self.shift
        # That wall-clock estimate is off near DST changes for elapsed-time shifts and fold/gap handovers.
        while self._handover(n) > at:
            n -= 1
        while self._handover(n + 1) <= at:
            n += 1
        return n

    def _on_call(self, contact: str | None, since: datetime, until: datetime, reason: str) -> OnCall:
        return OnCall(self.name, contact, since.astimezone(self.tz), until.astimezone(self.tz), reason)

    def _fmt(self, instant: datetime) -> str:
        return f"{instant.astimezone(self.tz):%Y-%m-%d %H:%M}"


@dataclass(frozen=True)
class QuietHours:
    """A contact's daily no-call window from `start` (inclusive) to `end` (exclusive), local to `tz`.

    end < start wraps past midnight (22:00 → 07:00); start == end means never quiet. The window's edges
    are wall-clock times resolved like Rotation's (fold=0), so a night with a DST change is an hour
    shorter or longer.
    """

    start: time
    end: time
    tz: ZoneInfo
    unless_severity: frozenset[str] = frozenset()

    def active(self, at: datetime) -> bool:
        """Whether aware instant `at` falls in a quiet window."""
        return self._window_end(at) is not None

    def applies(self, at: datetime, severities: Iterable[str]) -> bool:
        """Whether calls at `at` should wait: quiet now and no given severity is exempt."""
        if isinstance(severities, str):
            severities = (severities,)
        return self.active(at) and self.unless_severity.isdisjoint(severities)

    def ends_after(self, at: datetime) -> datetime | None:
        """When the quiet window containing `at` ends (aware, contact timezone); None if not quiet."""
        end = self._window_end(at)
        return None if end is None else end.astimezone(self.tz)

    def _window_end(self, at: datetime) -> datetime | None:
        """The UTC end of the quiet window containing `at`, if any."""
        if self.start == self.end:
            return None
        at = _utc(at)
        today = at.astimezone(self.tz).date()
        # Only the window opening today or a wrapping one opened yesterday can contain `at`.
        for day in (today - _DAY, today):
            begin = _localize(datetime.combine(day, self.start), self.tz)
            end_day = day + _DAY if self.end < self.start else day
            end = _localize(datetime.combine(end_day, self.end), self.tz)
            if begin <= at < end:
                return end
        return None
