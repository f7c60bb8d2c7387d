"""Where a page's time goes: serve's CPU, store round trips, commits and fsyncs, counted over a measured window.

Every figure is a count divided by the pages (or requests) of the window, so it does not depend on how fast
this machine is or how its cores were shared:

- **serve CPU**: utime + stime of every `alert2voice serve` process of the window, from `/proc/<pid>/stat`.
- **round trips** (Redis): the read events Redis processed (`INFO stats` `total_reads_processed`), the bench's
  own two left out. A client sends a request, or a pipeline, in one write and Redis reads it in one event, so
  this counts round trips whatever a request holds: a script (EVAL/EVALSHA/FCALL) is one, a pipeline one. It
  overcounts a request too large for one read (64 KiB+: none of the store's) and counts a connection's close;
  it includes the service's idle work in the window (the wake-up subscription's ping, sweeps).
- **client operations**: the service's own count of what it sent to its store (`alert2voice_store_operations_total`:
  on Redis commands and scripts, each one round trip; on SQLite the operations its writer ran).
- **commands** (Redis): `INFO commandstats` calls, a script's own commands among them, the bench's INFO left out;
  **scripts**: the EVAL/EVALSHA/FCALL among them.
- **commits** (SQLite): writer transactions committed (`alert2voice_store_commits_total`), each one fdatasync of
  the WAL, shared by the operations group-committed together.
- **fsyncs**: fsync + fdatasync system calls of the store's process (redis-server; serve on SQLite), counted in
  the kernel by `perf stat` on the syscall tracepoints (needs perf and root or perf_event_paranoid <= 1; `n/a`
  without). Redis 7.0 counts none of its own: `INFO persistence` has `aof_delayed_fsync`, which only
  `appendfsync everysec` moves, and `eventloop_cycles` (one AOF write and fsync per cycle that wrote) came in 7.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import LOOPBACK
from bench.rig import Rig, Samples, Service

# The service's store counters. The first name present in /metrics is read, so a counter the service adds later
# under the proposed name (with a `store` label: summed over it) is read without a change here.
STORE_OPERATIONS = ("alert2voice_store_round_trips_total", "alert2voice_store_operations_total")
STORE_COMMITS = ("alert2voice_store_writes_total", "alert2voice_store_commits_total")
SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
# Reads of Redis the bench causes between two snapshots: the second's INFO, and the close of the first's connection.
OWN_READS = 2
FSYNC_EVENTS = ("syscalls:sys_enter_fsync", "syscalls:sys_enter_fdatasync")
PERF_ATTACH_S = 0.3  # perf stat takes this long at most to attach before the window starts


# --------------------------------------------------------------------------------------------- parsers


def parse_info(text: str) -> dict[str, Any]:
    """Redis's INFO text: `key:value` lines (sections and blank lines skipped); a `cmdstat_<name>` line's value
    (`calls=2,usec=3,...`) becomes a dict of numbers."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        if key.startswith("cmdstat_"):
            out[key] = {k: float(v) for k, v in (part.split("=", 1) for part in value.split(",") if "=" in part)}
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class RedisCounters:
    """What Redis counted so far: read events, and by command (INFO left out) its calls and the calls that failed
    or were refused (commandstats failed_calls + rejected_calls: a script that raised, a WRONGTYPE; not a new
    connection's CLIENT SETINFO, which Redis 7.0 does not know and counts under no command)."""

    reads: int
    calls: dict[str, int]
    failed: dict[str, int] = field(default_factory=dict)  # only the commands with a failed call

    @classmethod
    def from_info(cls, text: str) -> RedisCounters:
        info = parse_info(text)
        stats = {k.removeprefix("cmdstat_").lower(): v for k, v in info.items()
                 if k.startswith("cmdstat_") and k != "cmdstat_info"}
        failed = {name: int(v.get("failed_calls", 0) + v.get("rejected_calls", 0)) for name, v in stats.items()}
        return cls(reads=int(info["total_reads_processed"]),
                   calls={name: int(v.get("calls", 0)) for name, v in stats.items()},
                   failed={name: n for name, n in failed.items() if n})

    @property
    def commands(self) -> int:
        return sum(self.calls.values())

    @property
    def scripts(self) -> int:
        return sum(n for name, n in self.calls.items() if name in SCRIPT_COMMANDS)

    @property
    def failed_commands(self) -> int:
        return sum(self.failed.values())


def parse_perf_stat(text: str) -> int | None:
    """The sum of the counts `perf stat -x,` wrote for FSYNC_EVENTS; None if one was not counted."""
    total, seen = 0, set()
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or fields[2] not in FSYNC_EVENTS:
            continue
        if not fields[0].strip().isdigit():  # <not counted>, <not supported>
            return None
        total += int(fields[0])
        seen.add(fields[2])
    return total if seen == set(FSYNC_EVENTS) else None


# ----------------------------------------------------------------------------------------------- reading


async def redis_info(port: int, host: str = LOOPBACK) -> str:
    """`INFO stats commandstats` over a connection of its own, in plain RESP: one request, one read for Redis."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    try:
        writer.write(b"*3\r\n$4\r\nINFO\r\n$5\r\nstats\r\n$12\r\ncommandstats\r\n")
        header = await asyncio.wait_for(reader.readline(), 5)
        if not header.startswith(b"$"):
            raise RuntimeError(f"redis INFO answered {header[:200]!r}")
        body = await asyncio.wait_for(reader.readexactly(int(header[1:]) + 2), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return body[:-2].decode()


def first_present(samples: Samples, names: Sequence[str]) -> str | None:
    return next((n for n in names if any(key[0] == n for key in samples.values)), None)


_perf: bool | None = None


def perf_usable() -> bool:
    """Whether `perf stat` can count the fsync tracepoints here (once per run)."""
    global _perf
    if _perf is None:
        perf = shutil.which("perf")
        ok = False
        if perf:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                proc = subprocess.run([perf, "stat", "-x,", "-e", ",".join(FSYNC_EVENTS), "true"],  # noqa: S603
                                      capture_output=True, text=True, timeout=10, check=False)
                ok = proc.returncode == 0 and parse_perf_stat(proc.stderr) is not None
        _perf = ok
    return _perf


class FsyncCount:
    """`perf stat` on the fsync tracepoints of some processes, from start() to stop() (None: not counted)."""

    def __init__(self, pids: Sequence[int], out: Path) -> None:
        self.pids, self.out = list(pids), out
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        perf = shutil.which("perf")
        if not perf or not self.pids or not perf_usable():
            return
        self.proc = await asyncio.create_subprocess_exec(
            perf, "stat", "-x,", "-e", ",".join(FSYNC_EVENTS), "-p", ",".join(map(str, self.pids)),
            "-o", str(self.out), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(PERF_ATTACH_S)

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None
        try:
            return parse_perf_stat(self.out.read_text(encoding="utf-8"))
        except OSError:
            return None


# ------------------------------------------------------------------------------------------------ figures


@dataclass(frozen=True)
class Cost:
    """Per page (or request) of a window; None where this store or machine cannot count it."""

    per: int                          # the pages (or requests) the figures are divided by
    cpu_ms: float | None              # every serve process of the window
    round_trips: float | None         # Redis: read events (client round trips)
    client_operations: float | None   # the service's store operations (Redis: commands and scripts sent)
    commands: float | None            # Redis: commands run, a script's own among them
    scripts: float | None             # Redis: EVAL/EVALSHA/FCALL
    failed_commands: float | None     # Redis: commands failed or refused (commandstats)
    commits: float | None             # SQLite: writer transactions committed
    fsyncs: float | None              # the store process's fsync + fdatasync calls (perf)
    by_command: dict[str, float] = field(default_factory=dict)     # Redis: commands per page, by name
    failed_by_command: dict[str, int] = field(default_factory=dict)  # Redis: failed or refused calls, by name
    counted_by: dict[str, str] = field(default_factory=dict)       # figure -> where it was read


def _per(value: float | None, n: int, digits: int = 3) -> float | None:
    return None if value is None or not n else round(value / n, digits)


@dataclass
class Meter:
    """Counters of some serve processes (on one store) read at start() and at stop(); cost(n) divides by n."""

    rig: Rig
    services: Sequence[Service]
    name: str
    fsyncs: bool = True
    _cpu: list[float] = field(default_factory=list)
    _metrics: list[Samples] = field(default_factory=list)
    _redis: RedisCounters | None = None
    _fsync: FsyncCount | None = None
    _cpu_spent: list[float] = field(default_factory=list)
    _metrics_after: list[Samples] = field(default_factory=list)
    _redis_after: RedisCounters | None = None
    _fsync_count: int | None = None

    @property
    def redis_port(self) -> int | None:
        redis = self.services[0].redis
        return redis.port if redis is not None else None

    def _store_pids(self) -> list[int]:
        redis = self.services[0].redis
        return [redis.proc.pid] if redis is not None else [svc.proc.pid for svc in self.services]

    async def start(self) -> Meter:
        if self.fsyncs:
            self._fsync = FsyncCount(self._store_pids(), self.rig.workdir / f"perf-{self.name}.txt")
            await self._fsync.start()
        self._metrics = [await self.rig.metrics(svc) for svc in self.services]
        self._redis = await self._redis_counters()
        self._cpu = [svc.proc.cpu_s() for svc in self.services]
        return self

    @property
    def cpu_spent_s(self) -> list[float]:
        """CPU seconds each serve process spent in the window, in the order given (after stop())."""
        return list(self._cpu_spent)

    async def stop(self) -> Meter:
        self._cpu_spent = [svc.proc.cpu_s() - c for svc, c in zip(self.services, self._cpu, strict=True)]
        self._redis_after = await self._redis_counters()
        self._metrics_after = [await self.rig.metrics(svc) for svc in self.services]
        if self._fsync is not None:
            self._fsync_count = await self._fsync.stop()
        return self

    async def _redis_counters(self) -> RedisCounters | None:
        port = self.redis_port
        return RedisCounters.from_info(await redis_info(port)) if port is not None else None

    def _metric(self, names: Sequence[str]) -> tuple[float | None, str | None]:
        """The growth of the first of `names` the services expose, summed over them."""
        name = first_present(self._metrics_after[0], names) if self._metrics_after else None
        if name is None:
            return None, None
        return sum(a.delta(b, name) for a, b in zip(self._metrics_after, self._metrics, strict=True)), name

    def cost(self, n: int) -> Cost:
        """The window's counts per page (or request); n is how many it handled."""
        ops, ops_name = self._metric(STORE_OPERATIONS)
        commits, commits_name = self._metric(STORE_COMMITS)
        counted_by = {"cpu_ms": "/proc/<pid>/stat utime+stime of serve"}
        if ops_name:
            counted_by["client_operations"] = ops_name
        r0, r1 = self._redis, self._redis_after
        round_trips = commands = scripts = errors = None
        by_command: dict[str, float] = {}
        failed_by_command: dict[str, int] = {}
        if r0 is not None and r1 is not None:
            round_trips = max(0, r1.reads - r0.reads - OWN_READS)
            commands, scripts = r1.commands - r0.commands, r1.scripts - r0.scripts
            errors = r1.failed_commands - r0.failed_commands
            failed_by_command = {k: v - r0.failed.get(k, 0) for k, v in sorted(r1.failed.items())
                                 if v > r0.failed.get(k, 0)}
            grew = {k: v - r0.calls.get(k, 0) for k, v in sorted(r1.calls.items())}
            by_command = {k: round(v / n, 3) for k, v in grew.items() if v > 0} if n else {}
            counted_by |= {"round_trips": "INFO stats total_reads_processed", "commands": "INFO commandstats"}
            commits = None  # Redis: the service's commit counter stays 0; its fsyncs are below
        elif commits_name:
            counted_by["commits"] = commits_name
        if self._fsync_count is not None:
            counted_by["fsyncs"] = "perf stat " + " + ".join(FSYNC_EVENTS)
        total_cpu_ms = sum(self._cpu_spent) * 1000 if self._cpu_spent else None
        return Cost(per=n, cpu_ms=_per(total_cpu_ms, n), round_trips=_per(round_trips, n),
                    client_operations=_per(ops, n), commands=_per(commands, n), scripts=_per(scripts, n),
                    failed_commands=_per(errors, n), commits=_per(commits, n), fsyncs=_per(self._fsync_count, n),
                    by_command=by_command, failed_by_command=failed_by_command,
                    counted_by=counted_by)


@contextlib.asynccontextmanager
async def metered(rig: Rig, services: Sequence[Service], name: str, *, fsyncs: bool = True) -> AsyncIterator[Meter]:
    """A Meter running for the block (stopped on the way out, also when the block fails)."""
    meter = await Meter(rig, services, name, fsyncs=fsyncs and rig.count_fsyncs).start()
    try:
        yield meter
    finally:
        await meter.stop()
