"""The phases of a run, in order, and running them so that a phase that fails is a row of the table, not a crash."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from bench import say
from bench.memory import Memory, memory
from bench.rig import NUMBER, Rig
from bench.startup import Startup, startup
from bench.storm import Storms, storms
from bench.throughput import Throughput, throughput
from bench.ttc import TimeToCall, time_to_call


@dataclass(frozen=True)
class PhaseError:
    """A phase that raised instead of returning its result: which one, and the error in one line."""

    phase: str
    title: str
    error: str


Result = Throughput | TimeToCall | Storms | Memory | Startup | PhaseError


@dataclass(frozen=True)
class Phase:
    """One phase: its name, the figure numbers, its title (the error row's figure) and its function."""

    name: str    # as --only spells it
    number: str  # the figures it gives, as bench/README.md numbers them
    title: str
    run: Callable[[Rig], Awaitable[Result]]


PHASES = (
    Phase("throughput", "1-3", "throughput: ceiling, duplicate path, new-page path, relay floor", throughput),
    Phase("ttc", "4", "time to call", time_to_call),
    Phase("storms", "5", "storms", storms),
    Phase("memory", "6", "memory", memory),
)
STARTUP = Phase("startup", "7", "startup", startup)  # always measured, last: it counts every start before it
NAMES = tuple(p.name for p in PHASES)


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 200 characters (messages may carry a log tail)."""
    first = next(iter(str(exc).splitlines()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


async def attempt(phase: Phase, rig: Rig) -> Result:
    """The phase's result, or a PhaseError once its traceback is printed; the next phase runs either way."""
    say(f"[{phase.number}] {phase.title}")
    try:
        return await phase.run(rig)
    except Exception as exc:
        say(traceback.format_exc().rstrip())
        say(f"  {phase.name} failed: {one_line(exc)}")
        return PhaseError(phase.name, phase.title, one_line(exc))


async def run(rig: Rig, only: Iterable[str]) -> list[Result]:
    """Start the simulator and the ceiling, then each selected phase in order, then startup."""
    selected = set(only)
    say("starting the simulator and the ceiling")
    rig.start_simulator()
    rig.start_ceiling()
    await rig.script_numbers(NUMBER)
    return [await attempt(phase, rig) for phase in (*(p for p in PHASES if p.name in selected), STARTUP)]
