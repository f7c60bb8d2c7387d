"""The phases of a run, in order, and running them so that a phase that fails is a row of the table, not a crash."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from bench import say
from bench.memory import Memory, memory
from bench.replicas import Replicas, replicas
from bench.rig import NUMBER, REDIS, Rig
from bench.startup import Startup, startup
from bench.storm import Storms, storms
from bench.throughput import Throughput, throughput
from bench.ttc import TimesToCall, time_to_call


@dataclass(frozen=True)
class PhaseError:
    """A phase that raised instead of returning its result: which one, on which store, and the error in one line."""

    phase: str
    title: str
    error: str
    store: str = ""  # empty for a phase that is not run per store (throughput runs every store at once)


Result = Throughput | TimesToCall | Storms | Memory | Replicas | Startup | PhaseError
EACH, FIRST, ALL, REPLICAS = "each", "first", "all", "replicas"


@dataclass(frozen=True)
class Phase:
    """One phase: its name, the figure numbers, its title (the error row's figure), its function and its stores.

    `stores`: EACH runs `run(rig, store)` once per store of the run, FIRST on the first store only, ALL runs
    `run(rig)` once, which measures every store itself, REPLICAS `run(rig, "redis")` once with --replicas 2+ on
    a run that measures Redis (never otherwise).
    """

    name: str    # as --only spells it
    number: str  # the figures it gives, as bench/README.md numbers them
    title: str
    run: Callable[..., Awaitable[Result]]
    stores: str = EACH


PHASES = (
    Phase("throughput", "1-3", "throughput: ceiling, duplicate path, new-page path, relay floor", throughput, ALL),
    Phase("ttc", "4", "time to call", time_to_call),
    Phase("storms", "5", "storms", storms, FIRST),
    Phase("memory", "6", "memory", memory),
    Phase("replicas", "7", "replicas: serve processes on one redis-server", replicas, REPLICAS),
)
STARTUP = Phase("startup", "8", "startup", startup)  # always measured, last: it counts every start before it
NAMES = tuple(p.name for p in PHASES)


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 200 characters (messages may carry a log tail)."""
    first = next(iter(str(exc).splitlines()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


async def attempt(phase: Phase, rig: Rig, store: str = "") -> Result:
    """The phase's result, or a PhaseError once its traceback is printed; the next phase runs either way."""
    say(f"[{phase.number}] {phase.title}" + (f" ({store})" if store else ""))
    try:
        return await (phase.run(rig, store) if store else phase.run(rig))
    except Exception as exc:
        say(traceback.format_exc().rstrip())
        say(f"  {phase.name} failed: {one_line(exc)}")
        return PhaseError(phase.name, phase.title, one_line(exc), store)


def stores_of(phase: Phase, rig: Rig) -> tuple[str, ...]:
    """The stores the phase is run on, one attempt each; ("",) for a phase that measures them all at once."""
    if phase.stores == REPLICAS:
        return (REDIS,) if REDIS in rig.stores and rig.replicas > 1 else ()
    return {EACH: rig.stores, FIRST: rig.stores[:1]}.get(phase.stores, ("",))


async def run(rig: Rig, only: Iterable[str]) -> list[Result]:
    """Start the simulator and the ceiling, then each selected phase in order (on each store), then startup."""
    selected = set(only)
    say("starting the simulator and the ceiling")
    rig.start_simulator()
    rig.start_ceiling()
    await rig.script_numbers(NUMBER)
    chosen = (*(p for p in PHASES if p.name in selected), STARTUP)
    return [await attempt(phase, rig, store) for phase in chosen for store in stores_of(phase, rig)]
