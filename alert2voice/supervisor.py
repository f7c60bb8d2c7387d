"""Keeps a long-running loop alive: what escapes it is logged, and it restarts with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# A loop that crashed this many times in a row, each time soon after it started, is down: /-/healthy fails
# and Kubernetes restarts the pod, which beats a process that answers webhooks while nobody places calls.
DOWN_AFTER = 5


class Supervisor:
    """Runs `run()` until it returns; an exception escaping it is logged and `run()` starts again.

    Restarts wait `initial`, doubling up to `cap` seconds. A run that lasted `cap` seconds or more before it
    crashed was healthy: its crash starts a new count. `healthy` is False once DOWN_AFTER crashes came in a row.
    """

    def __init__(self, name: str, run: Callable[[], Awaitable[None]], *, monotonic: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, stopping: Callable[[], bool],
                 initial: float = 0.5, cap: float = 30.0) -> None:
        self.name = name
        self._run = run
        self._monotonic = monotonic
        self._sleep = sleep
        self._stopping = stopping
        self.initial, self.cap = initial, cap
        self.crashes = 0  # in a row

    @property
    def healthy(self) -> bool:
        return self.crashes < DOWN_AFTER

    async def run(self) -> None:
        """Run the loop until it returns by itself (it was told to stop)."""
        while not self._stopping():
            started = self._monotonic()
            try:
                await self._run()
                return
            except Exception:
                if self._monotonic() - started >= self.cap:
                    self.crashes = 0
                self.crashes += 1
                delay = min(self.cap, self.initial * 2 ** (self.crashes - 1))
                log.exception(f"{self.name} crashed; restarting it", extra={
                    "crashes_in_a_row": self.crashes, "restart_in": delay, "healthy": self.healthy})
                await self._sleep(delay)
