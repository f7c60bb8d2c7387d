"""Phase 7, startup: process start -> first 200 on /-/ready, for every alert2voice the run started."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.rig import Rig

AT_LEAST = 3  # samples: more alert2voice processes are started (and stopped) until there are this many


@dataclass(frozen=True)
class Startup:
    """Seconds from Popen to the first 200 on /-/ready, for every alert2voice of the run."""

    samples_s: list[float]
    median_s: float
    max_s: float


async def startup(rig: Rig, *, at_least: int = AT_LEAST) -> Startup:
    """The startups the earlier phases timed, topped up to `at_least` with services started just for this."""
    while len(rig.startups) < at_least:
        async with rig.service(f"startup{len(rig.startups)}"):
            pass
    samples = list(rig.startups)
    return Startup(samples_s=[round(s, 3) for s in samples], median_s=round(statistics.median(samples), 3),
                   max_s=round(max(samples), 3))
