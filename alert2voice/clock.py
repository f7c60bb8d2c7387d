"""Wall-clock and monotonic time in one injectable object: tests pass a clock they move by hand.

This is the process's clock. The app reads every time replicas share through store/clock.py's StoreClock,
which runs the store's clock on this one's monotonic time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class Clock:
    """Wall-clock and monotonic time, and waiting; tests pass a FakeClock with the same three methods."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a test's clock may move itself on instead)."""
        await asyncio.sleep(seconds)
