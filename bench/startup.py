"""Phase 8, startup: process start -> first 200 on /-/ready, for every alert2voice of a store the run started."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.rig import Rig

AT_LEAST = 3  # samples: more alert2voice processes are started (and stopped) until there are this many


@dataclass(frozen=True)
class Startup:
    """Seconds from Popen to the first 200 on /-/ready, for every alert2voice of the run on one store."""

    store: str
    samples_s: list[float]
    median_s: float
    max_s: float


async def startup(rig: Rig, store: str, *, at_least: int = AT_LEAST) -> Startup:
    """The startups the earlier phases timed on `store`, topped up to `at_least` with services started for this.

    On Redis, from the start of alert2voice (its redis-server already answers) to ready."""
    while len(samples := rig.startups.get(store, [])) < at_least:
        async with rig.service(f"startup{len(samples)}", store=store):
            pass
    return Startup(store=store, samples_s=[round(s, 3) for s in samples], median_s=round(statistics.median(samples), 3),
                   max_s=round(max(samples), 3))
