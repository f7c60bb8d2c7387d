"""Wall-clock and monotonic time in one injectable object: tests pass a clock they move by hand.

This is the process's clock. The app reads every time replicas share through store/clock.py's StoreClock,
which runs the store's clock on this one's monotonic time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """Wall-clock time; tests pass a FakeClock with the same two methods (and, optionally, `sleep`)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
