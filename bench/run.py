"""`make bench`: how fast alert2voice is, as ratios to a bare aiohttp app measured in the same run.

    .venv/bin/python -m bench.run                  # full run on SQLite and Redis, about 6 minutes
    .venv/bin/python -m bench.run --quick          # smoke run, about 2 minutes
    .venv/bin/python -m bench.run --store sqlite   # one store only
    .venv/bin/python -m bench.run --store redis --replicas 2   # also two serve processes on one redis-server
    .venv/bin/python bench/run.py --out /tmp/bench.json

The phases (bench/phases.py) run on one rig (bench/rig.py) and return typed results; bench/report.py
turns them into the table and the JSON (bench/results/latest.json, or --out). Exits 0 even when a
target is missed (it is a measurement; MISSED is printed), 1 when a phase failed (ERROR in its row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench import loadgen, phases, report, say
from bench.costs import perf_usable
from bench.machine import ensure_wrk, machine
from bench.redis_server import MISSING, redis_server_path, redis_version
from bench.replicas import Replicas
from bench.rig import FULL, QUICK, REDIS, STORES, Plan, Rig

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure alert2voice against a bare aiohttp ceiling (make bench).")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about two minutes on both stores)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk is there")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--callbacks", choices=("off", "instant"), default="off",
                        help="simulator callbacks: off (default) or instant (4 receipts per call back to alert2voice)")
    parser.add_argument("--store", choices=(*STORES, "both"), default="both",
                        help="the store backend(s) of alert2voice measured side by side (default both); Redis on a "
                             "redis-server of the bench's own, appendfsync always")
    parser.add_argument("--only", default=",".join(phases.NAMES),
                        help=f"comma-separated subset of {','.join(phases.NAMES)} (startup is always measured)")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="also measure N serve processes on one redis-server (the replicas phase; N >= 2 runs "
                             "it, on the Redis store only)")
    parser.add_argument("--no-perf", action="store_true",
                        help="do not count the store's fsyncs with perf (fsyncs per page then read n/a)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, logs, databases)")
    parser.add_argument("--profile", action="store_true",
                        help="sample alert2voice with py-spy during the duplicate, new-page and time-to-call loads "
                             "(pip install py-spy; figures of a profiled run are slightly lower)")
    args = parser.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()} - {phases.STARTUP.name}
    unknown = args.only - set(phases.NAMES)
    if unknown:
        parser.error(f"--only: unknown phase {', '.join(sorted(unknown))} (phases: {', '.join(phases.NAMES)})")
    args.stores = STORES if args.store == "both" else (args.store,)
    if args.replicas < 1:
        parser.error(f"--replicas: {args.replicas} is not a number of serve processes (1 or more)")
    if args.replicas > 1 and REDIS not in args.stores:
        parser.error("--replicas: replicas share a Redis store; SQLite is one process's (use --store redis or both)")
    if REDIS in args.stores and redis_server_path() is None:
        parser.error(MISSING)
    return args


def on_term(signum: int, frame: Any) -> None:
    """SIGTERM ends the run like Ctrl-C: every process is stopped on the way out."""
    raise KeyboardInterrupt


def setup(args: argparse.Namespace, plan: Plan) -> tuple[dict[str, Any], str | None]:
    """The machine and the load generator (installing wrk if allowed), announced."""
    info = machine()
    wrk = None if args.no_wrk else ensure_wrk(allow_install=not args.no_install)
    info["wrk"] = loadgen.wrk_version(wrk) if wrk else None
    info["load_generator"] = "wrk" if wrk else "python (aiohttp)"
    redis = redis_server_path() if REDIS in args.stores else None
    info["redis_server"] = redis_version(redis) if redis else None
    say(f"alert2voice bench ({plan.name}, store {' and '.join(args.stores)}) on {info['cpu']}, {info['cores']} cores, "
        f"{info['ram_gib']} GiB, Python {info['python']}, aiohttp {info['aiohttp']}, "
        f"load: {info['load_generator']} {info['wrk'] or ''}")
    if redis:
        say(f"note: Redis {info['redis_server']} on loopback, a redis-server per alert2voice, appendfsync always")
    say("note: load generator, simulator and servers share this machine's cores: compare ratios, not absolutes")
    if args.no_perf or not perf_usable():
        say("note: fsyncs per page read n/a: " + ("--no-perf" if args.no_perf else
            "perf cannot count the fsync tracepoints here (install linux-perf, run as root)"))
    if not wrk:
        say("note: the Python load generator saturates before the ceiling does, so the ceiling reads low and every "
            "ratio reads high; install wrk (make bench does) for figures to compare")
    return info, wrk


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    info, wrk = setup(args, plan)
    workdir = Path(tempfile.mkdtemp(prefix="a2v-bench-"))
    started = time.time()
    rigs: list[Rig] = []
    results: list[phases.Result] = []
    crashed = interrupted = False

    async def go() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            rig = Rig(plan=plan, workdir=workdir, wrk=wrk, session=session, callbacks=args.callbacks,
                      profile_dir=args.out.parent if args.profile else None, stores=args.stores,
                      replicas=args.replicas, count_fsyncs=not args.no_perf)
            rigs.append(rig)
            results.extend(await phases.run(rig, args.only))

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        interrupted = True
    except Exception:
        crashed = True
        raise
    finally:
        if interrupted:
            say("interrupted: stopping every process")
        for rig in rigs:
            if crashed:
                for proc in rig.procs:
                    say(proc.log_tail(15))
            rig.stop_all()
        failed = crashed or bool(report.errors(report.table(results)))
        if args.keep or failed:
            say(f"logs, configs and databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130
    return write(args, plan, info, time.time() - started, results, rigs[0].profiles)


def write(args: argparse.Namespace, plan: Plan, info: dict[str, Any], elapsed_s: float,
          results: list[phases.Result], profiles: dict[str, Any]) -> int:
    """Print the table, write the JSON, say what was missed or failed; 1 if anything failed."""
    rows = report.table(results)
    say("")
    report.print_table(rows)
    doc = report.document(plan=plan, machine=info, callbacks=args.callbacks, stores=args.stores,
                          replicas=args.replicas,
                          elapsed_s=elapsed_s, results=results, rows=rows, profiles=profiles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    for result in results:
        if isinstance(result, Replicas):
            say(f"replicas: {result.can_show}")
    say("")
    missed, errors = doc["missed"], doc["errors"]
    if missed:
        say(f"{len(missed)} target(s) MISSED: {'; '.join(missed)}")
    if errors:
        say(f"{len(errors)} figure(s) not measured (ERROR): {'; '.join(errors)}")
    if not missed and not errors:
        say("every target met")
    say(f"wrote {args.out} ({doc['elapsed_s']:.0f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
