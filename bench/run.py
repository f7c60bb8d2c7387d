"""`make bench`: how fast alert2voice is, as ratios to a bare aiohttp app measured in the same run.

    .venv/bin/python -m bench.run            # full run, about 4 minutes
    .venv/bin/python -m bench.run --quick    # smoke run, under a minute
    .venv/bin/python bench/run.py --out /tmp/bench.json

Starts, on loopback ports that are free: the Webex Connect simulator (callbacks off, so nothing but
webhooks loads alert2voice), the ceiling (bench/ceiling.py) and `alert2voice serve` with the default
SQLite store on a config generated from bench/config.yaml, then measures:

 1. ceiling: requests/s of the bare aiohttp app on the same body;
 2. duplicate path: requests/s of a group alert2voice already paged (Alertmanager's resends);
 3. new-page path: webhooks/s when every webhook is a new group, and the calls placed for them;
    beside it the relay floor (bench/relay.py): a bare aiohttp app that turns each webhook into one
    provider request and nothing else, the upper bound of any bridge on this machine;
 4. time to call: webhook sent -> the simulator receiving the provider request, at 100 webhooks/s;
 5. storms: one webhook with 5,000 alerts; 1,000 groups within one second, with real throttle tiers;
 6. memory: RSS of a fresh process at idle and after 100,000 webhooks (10,000 with --quick);
 7. startup: process start -> first 200 on /-/ready.

It prints a table, writes bench/results/latest.json (or --out) and exits 0 even when a target is
missed (it is a measurement; MISSED is printed). Load generators share the machine with the servers:
the ratios, not the absolute numbers, are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench import loadgen

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "latest.json"
NUMBER = "+14155550101"
CALLER_ID = "+15550001234"
# The memory run: one webhook in NEW_EVERY is a new group (a page and a call), the rest resend 50 groups.
NEW_EVERY = 50

# The targets (#6), as ratios to the ceiling measured in the same run where they are ratios.
TARGETS = {
    "duplicate_ratio": 0.6,
    "new_page_ratio": 0.3,
    "time_to_call_p99_ms": 20.0,
    "big_webhook_s": 0.5,
    "rss_idle_mb": 80.0,
    "rss_growth_mb": 30.0,
    "startup_s": 1.0,
    # Not in the issue: Alertmanager gives up on a webhook after its 10 s notify timeout (SPEC §4).
    "storm_answer_s": 10.0,
}

# The storm measurement runs its own alert2voice with real limits: per-number tiers raised above the
# storm rule's allowance, so that an enforced storm rule (5 pages per 2 minutes -> one summary call)
# and the per-number tier can be told apart by the number of calls placed.
STORM_BIG_NUMBER = "+14155550102"
STORM_BURST_NUMBER = "+14155550103"
STORM = {
    "contacts": {
        "big": {"number": STORM_BIG_NUMBER, "timezone": "UTC"},
        "burst": {"number": STORM_BURST_NUMBER, "timezone": "UTC"},
    },
    "routes": [
        {"name": "storm-big", "matchers": ['storm="big"'], "escalation": [{"call": "big", "attempts": 1}]},
        {"name": "storm-burst", "matchers": ['storm="burst"'], "escalation": [{"call": "burst", "attempts": 1}]},
        {"name": "everything-else", "matchers": [], "escalation": []},
    ],
    "throttle": {
        "per_number": [{"calls": 20, "per": "15m"}, {"calls": 40, "per": "1h"}],
        "global": {"calls": 60, "per": "1m"},
        "storm": {"pages": 5, "per": "2m"},
    },
}


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs."""

    name: str
    duration: float          # seconds of each throughput measurement
    warmup: float            # seconds of load thrown away before it
    connections: int
    ttc_seconds: float       # seconds at 100 webhooks/s
    memory_webhooks: int
    drain_timeout: float     # at most this long waiting for the calls of a load to be placed
    rounds: int              # ceiling / duplicate-path pairs, measured alternately


FULL = Plan("full", duration=10, warmup=2, connections=32, ttc_seconds=10, memory_webhooks=100_000,
            drain_timeout=90, rounds=5)
QUICK = Plan("quick", duration=3, warmup=1, connections=32, ttc_seconds=3, memory_webhooks=10_000,
             drain_timeout=30, rounds=3)


def say(text: str) -> None:
    print(text, flush=True)


def fsync_probe(folder: Path, *, count: int = 300, rate: float = 100.0) -> dict[str, float | None]:
    """The host's own commit latency: `count` 4 KiB writes, each followed by fdatasync, at `rate` per second,
    in the folder the stores use. Nothing of ours runs in it; a time-to-call figure carries this tail."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    block = b"\0" * 4096
    took = []
    try:
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            os.pwrite(fd, block, (i % 64) * 4096)
            os.fdatasync(fd)
            took.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return loadgen.latency_summary(took)


async def settle() -> None:
    """Write back what earlier loads left dirty in the page cache (their logs: tens of MB) before a latency
    measurement, so that its fsyncs do not queue behind that writeback."""
    await asyncio.to_thread(os.sync)


# ---------------------------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """The machine the figures come from."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    import alert2voice

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,  # noqa: S603,S607
                                text=True, timeout=5, check=False).stdout.strip() or None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "alert2voice": alert2voice.__version__,
        "commit": commit,
    }


def ensure_wrk(allow_install: bool) -> str | None:
    """wrk's path; installs Debian's package when missing and running as root, else None (Python fallback)."""
    path = loadgen.wrk_path()
    if path or not allow_install:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say("wrk not found and not root: using the Python load generator (install Debian's wrk for better figures)")
        return None
    say("wrk not found: installing Debian's package (apt-get install -y wrk)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]):
        try:
            subprocess.run(argv, env=env, check=True, timeout=300, stdout=subprocess.DEVNULL)  # noqa: S603
        except (OSError, subprocess.SubprocessError) as exc:
            say(f"could not install wrk ({exc}): using the Python load generator")
            return None
    return loadgen.wrk_path()


# ------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def alert2voice_command() -> list[str]:
    script = Path(sys.executable).with_name("alert2voice")
    return [str(script)] if script.exists() else [sys.executable, "-m", "alert2voice"]


@dataclass
class Proc:
    """A child process with its output in a log file; stop() always reaps it."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self) -> Proc:
        with self.log_path.open("wb") as log:
            self.started = time.monotonic()
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,  # noqa: S603
                                          stderr=subprocess.STDOUT, env=self.env, cwd=self.log_path.parent)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def rss_mb(self) -> float | None:
        return _status_kb(self.pid, "VmRSS")

    def hwm_mb(self) -> float | None:
        return _status_kb(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return f"----- {self.name} ({self.log_path}) -----\n" + "\n".join(text.splitlines()[-lines:])


def _status_kb(pid: int, key: str) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return None


def wait_ready(url: str, proc: Proc, *, within: float = 20.0, interval: float = 0.01) -> float:
    """Poll url every `interval` until it answers 200; return seconds since the process was started."""
    deadline = time.monotonic() + within
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited before {url} answered\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback URL we built)
                if resp.status == 200:
                    return time.monotonic() - proc.started
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(interval)
    raise RuntimeError(f"{url} not ready within {within:g}s ({last})\n{proc.log_tail()}")


# ---------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Samples:
    """One scrape of /metrics."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Samples:
        values = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values[(s.name, frozenset(s.labels.items()))] = s.value
        return cls(values)

    def sum(self, name: str, **labels: str) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and want <= ls)

    def delta(self, before: Samples, name: str, **labels: str) -> float:
        return self.sum(name, **labels) - before.sum(name, **labels)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _parse_stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------------------------ bench


@dataclass
class Service:
    """One `alert2voice serve` process and its URLs."""

    proc: Proc
    url: str
    db: Path
    startup_s: float


@dataclass
class Bench:
    plan: Plan
    workdir: Path
    wrk: str | None
    session: aiohttp.ClientSession
    procs: list[Proc] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    token: str = field(default_factory=lambda: "bench-" + os.urandom(12).hex())
    service_key: str = field(default_factory=lambda: "bench-key-" + os.urandom(12).hex())
    callback_token: str = field(default_factory=lambda: "bench-cb-" + os.urandom(12).hex())
    callbacks: str = "off"
    profile_dir: Path | None = None
    sim: Proc | None = None
    sim_url: str = ""
    ceiling_url: str = ""
    ceiling: Proc | None = None
    relay_url: str = ""
    relay: Proc | None = None
    starts_at: str = field(default_factory=lambda: (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
                           .replace("+00:00", "Z"))

    # --- processes -----------------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, self.workdir / f"{name}.log", env=env)
        self.procs.append(proc)
        return proc.start()

    def stop(self, proc: Proc) -> None:
        proc.stop()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    def start_simulator(self) -> None:
        port = free_port()
        self.sim_url = f"http://{LOOPBACK}:{port}"
        self.sim = self.start("simulator", [*alert2voice_command(), "--log-level", "warning", "simulator",
                                            "--listen", f"{LOOPBACK}:{port}", "--service-key", self.service_key,
                                            "--callback-auth", f"A2VBENCH=Authorization:Bearer {self.callback_token}",
                                            "--callback-delay", "0"])
        wait_ready(f"{self.sim_url}/_sim/numbers", self.sim)

    def start_relay(self) -> None:
        port = free_port()
        self.relay_url = f"http://{LOOPBACK}:{port}"
        self.relay = self.start("relay", [sys.executable, str(HERE / "relay.py"), "--listen", f"{LOOPBACK}:{port}",
                                          "--provider", self.sim_url, "--service-key", self.service_key,
                                          "--number", NUMBER])
        wait_ready(f"{self.relay_url}/-/ready", self.relay)

    def start_ceiling(self) -> None:
        port = free_port()
        self.ceiling_url = f"http://{LOOPBACK}:{port}"
        self.ceiling = self.start("ceiling", [sys.executable, str(HERE / "ceiling.py"), "--listen",
                                              f"{LOOPBACK}:{port}"])
        wait_ready(f"{self.ceiling_url}/-/ready", self.ceiling)

    def start_service(self, name: str, overrides: dict[str, Any] | None = None) -> Service:
        """Write the config (bench/config.yaml plus overrides), start `alert2voice serve`, time it to ready."""
        config = yaml.safe_load((HERE / "config.yaml").read_text(encoding="utf-8"))
        config.update(overrides or {})
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port()
        db = self.workdir / f"{name}.db"
        env = {**os.environ, "A2V_BENCH_PORT": str(port), "A2V_BENCH_TOKEN": self.token,
               "A2V_BENCH_SIM_URL": self.sim_url, "A2V_BENCH_SERVICE_KEY": self.service_key,
               "A2V_BENCH_CALLBACK_TOKEN": self.callback_token, "A2V_BENCH_DB": str(db)}
        proc = self.start(name, [*alert2voice_command(), "serve", "--config", str(path)], env=env)
        url = f"http://{LOOPBACK}:{port}"
        startup = wait_ready(f"{url}/-/ready", proc)
        say(f"  {name}: alert2voice serve ready {startup * 1000:.0f} ms after start (pid {proc.pid})")
        return Service(proc, url, db, startup)

    # --- HTTP helpers --------------------------------------------------------------------------------

    async def metrics(self, svc: Service) -> Samples:
        async with self.session.get(f"{svc.url}/metrics") as resp:
            resp.raise_for_status()
            return Samples.parse(await resp.text())

    async def script_numbers(self, *numbers: str) -> None:
        """Simulator callbacks off (or instant: --callbacks instant) for these numbers."""
        for number in numbers:
            async with self.session.put(f"{self.sim_url}/_sim/numbers/{number}",
                                        json={"callbacks": self.callbacks != "off"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"simulator refused the script for {number}: {await resp.text()}")

    async def reset_simulator(self, *numbers: str) -> None:
        """Forget every request and call (keeps /_sim/requests small), then script the numbers again."""
        async with self.session.post(f"{self.sim_url}/_sim/reset") as resp:
            resp.raise_for_status()
        await self.script_numbers(*numbers)

    async def sim_calls(self) -> list[dict[str, Any]]:
        """Accepted POST /v1/voice/messages requests the simulator logged: time, correlationId, number."""
        async with self.session.get(f"{self.sim_url}/_sim/requests",
                                    timeout=aiohttp.ClientTimeout(total=60)) as resp:
            resp.raise_for_status()
            requests = await resp.json()
        out = []
        for r in requests:
            if r["path"] == "/v1/voice/messages" and r["method"] == "POST" and r["status"] == 202 \
                    and not r.get("replayed"):
                body = r.get("body") or {}
                out.append({"time": _parse_stamp(r["time"]), "correlationId": body.get("correlationId"),
                            "dialedNumber": body.get("dialedNumber")})
        return out

    async def post(self, url: str, body: bytes) -> tuple[int, Any, float]:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        t = time.monotonic()
        async with self.session.post(url, data=body, headers=headers) as resp:
            raw = await resp.read()
            elapsed = time.monotonic() - t
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = raw[:200].decode(errors="replace")
        return resp.status, answer, elapsed

    async def wait_placed(self, svc: Service, before: Samples, *, route: str, within: float) -> dict[str, Any]:
        """Wait (at most `within` s) until every page called on `route` since `before` has its provider answer."""
        deadline = time.monotonic() + within
        start = time.monotonic()
        while True:
            m = await self.metrics(svc)
            called = m.delta(before, "alert2voice_pages_total", route=route, result="called")
            placed = m.delta(before, "alert2voice_provider_requests_total", endpoint="messages", code="202")
            other = m.delta(before, "alert2voice_provider_requests_total", endpoint="messages") - placed
            if placed + other >= called or time.monotonic() >= deadline:
                return {"called": int(called), "placed_202": int(placed), "provider_other": int(other),
                        "drained": placed + other >= called, "waited_s": round(time.monotonic() - start, 3)}
            await asyncio.sleep(0.2)

    async def load(self, url: str, *, template: str, mode: str, duration: float, prefix: str = "",
                   limit: int = 0, new_every: int = 10, dup_groups: int = 50,
                   until: Callable[[], Awaitable[bool]] | None = None) -> loadgen.LoadResult:
        kwargs = {"token": self.token, "template": template, "mode": mode, "duration": duration,
                  "connections": self.plan.connections, "prefix": prefix, "new_every": new_every,
                  "dup_groups": dup_groups, "limit": limit, "until": until}
        if self.wrk:
            return await loadgen.run_wrk(self.wrk, url, workdir=self.workdir, **kwargs)
        return await loadgen.closed_loop(url, **kwargs)

    async def profiled(self, name: str, proc: Proc, duration: float, work: Awaitable[T]) -> T:
        """Run `work`; with --profile, sample `proc` with py-spy meanwhile and keep its hottest frames."""
        spy = _py_spy()
        if self.profile_dir is None or spy is None:
            return await work
        raw = self.profile_dir / f"profile-{name}.txt"
        argv = [spy, "record", "--pid", str(proc.pid), "--duration", str(max(1, round(duration))), "--rate", "250",
                "--nonblocking", "--format", "raw", "--output", str(raw)]
        with (self.workdir / f"py-spy-{name}.log").open("wb") as spy_log:
            spy_proc = await asyncio.create_subprocess_exec(*argv, stdout=spy_log, stderr=spy_log)
        try:
            result = await work
            await asyncio.wait_for(spy_proc.wait(), timeout=duration + 20)
        finally:
            if spy_proc.returncode is None:
                spy_proc.kill()
                await spy_proc.wait()
        self.results.setdefault("profiles", {})[name] = _hot_frames(raw)
        return result

    def body(self, tag: str, **kwargs: Any) -> str:
        return loadgen.dumps(loadgen.webhook(tag, starts_at=self.starts_at, **kwargs))

    # --- 1-3: ceiling, duplicate path, new-page path -----------------------------------------------------

    async def throughput(self, svc: Service) -> None:
        p = self.plan
        fixed = self.body("Dup")
        template = self.body(loadgen.MARKER)
        say(f"  body: {len(fixed)} bytes, 2 alerts; load: {'wrk' if self.wrk else 'python'} "
            f"{p.connections} connections, {p.duration:g} s per measurement after {p.warmup:g} s warm-up")

        # 1-2. the ceiling and the duplicate path, measured alternately `rounds` times: this machine's speed
        # drifts (shared cores, a VM's neighbours) by more than the difference being measured, and a
        # pair measured back to back sees the same machine. Each figure is the median over the rounds.
        status, answer, _ = await self.post(f"{svc.url}/alerts", fixed.encode())
        first = answer["pages"][0]["result"] if status == 200 else f"HTTP {status}"
        if first != "called":
            raise RuntimeError(f"the first webhook of the duplicate group was not called: {status} {answer}")
        await self.load(f"{self.ceiling_url}/alerts", template=fixed, mode="fixed", duration=p.warmup)
        await self.load(f"{svc.url}/alerts", template=fixed, mode="fixed", duration=p.warmup)
        before = await self.metrics(svc)
        ceiling_runs: list[dict[str, Any]] = []
        dup_runs: list[dict[str, Any]] = []
        for round_ in range(p.rounds):
            ceiling_runs.append(await self.measure_ceiling(fixed))
            cpu0 = svc.proc.cpu_s()
            load = self.load(f"{svc.url}/alerts", template=fixed, mode="fixed", duration=p.duration)
            dup = await (self.profiled("duplicate", svc.proc, p.duration, load) if round_ == 0 else load)
            dup_runs.append({**dup.to_json(), "server_cpu_ms_per_request": _per((svc.proc.cpu_s() - cpu0) * 1000,
                                                                                   dup.requests),
                             "ratio": round(dup.rps / ceiling_runs[-1]["rps"], 3) if ceiling_runs[-1]["rps"] else None})
            say(f"  round {round_ + 1}/{p.rounds}: ceiling {ceiling_runs[-1]['rps']:,.0f} requests/s, duplicate path "
                f"{dup.rps:,.0f} requests/s -> {dup_runs[-1]['ratio']:.2f}")
        after = await self.metrics(svc)
        rps = statistics.median(r["rps"] for r in ceiling_runs)
        self.results["ceiling"] = {"rps": round(rps, 1), "runs": ceiling_runs,
                                   "spread": round((max(r["rps"] for r in ceiling_runs)
                                                    - min(r["rps"] for r in ceiling_runs)) / rps, 3) if rps else 0.0}
        self.results["duplicate"] = {
            "rps": round(statistics.median(r["rps"] for r in dup_runs), 1),
            "ratio": statistics.median(r["ratio"] or 0.0 for r in dup_runs),
            "runs": dup_runs,
            "non_2xx": sum(r["non_2xx"] for r in dup_runs),
            "server_cpu_ms_per_request": statistics.median(r["server_cpu_ms_per_request"] or 0.0 for r in dup_runs),
            "pages_duplicate": int(after.delta(before, "alert2voice_pages_total", result="duplicate")),
            "pages_called": int(after.delta(before, "alert2voice_pages_total", result="called")),
        }

        # 3. new-page path: every request a new group, every page a call
        await self.load(f"{svc.url}/alerts", template=template, mode="distinct", duration=p.warmup, prefix="w")
        await self.wait_placed(svc, before, route="bench", within=p.drain_timeout)
        await self.reset_simulator(NUMBER)
        before = await self.metrics(svc)
        cpu0, sim_cpu0 = svc.proc.cpu_s(), self.sim.cpu_s() if self.sim else 0.0
        load_start = time.time()
        assert self.sim is not None
        new = await self.profiled("new_page", svc.proc, p.duration, self.profiled(
            "new_page_simulator", self.sim, p.duration, self.load(
                f"{svc.url}/alerts", template=template, mode="distinct", duration=p.duration, prefix="np")))
        load_end = time.time()
        drain = await self.wait_placed(svc, before, route="bench", within=p.drain_timeout)
        new_cpu = svc.proc.cpu_s() - cpu0
        sim_cpu = (self.sim.cpu_s() - sim_cpu0) if self.sim else 0.0
        after = await self.metrics(svc)
        calls = await self.sim_calls()
        last = max((c["time"] for c in calls), default=load_end)
        span = max(last, load_end) - load_start
        sustained = len(calls) / span if span > 0 else 0.0
        accepted = int(after.delta(before, "alert2voice_webhooks_total", result="accepted"))
        self.results["new_page"] = {
            **new.to_json(),
            "webhooks_accepted": accepted,
            "pages_called": drain["called"],
            "calls_received_by_simulator": len(calls),
            "every_call_placed": len(calls) >= drain["called"] and drain["called"] > 0 and drain["drained"],
            "last_call_after_load_end_s": round(max(0.0, last - load_end), 3),
            "sustained_rps": round(sustained, 1),
            "server_cpu_ms_per_webhook": _per(new_cpu * 1000, accepted),
            "simulator_cpu_ms_per_call": _per(sim_cpu * 1000, len(calls)),
            "provider_non_202": drain["provider_other"],
        }
        say(f"  new-page path: {new.rps:,.0f} webhooks/s answered; {len(calls):,} of {drain['called']:,} calls "
            f"placed, the last {max(0.0, last - load_end):.2f} s after the load -> {sustained:,.0f}/s sustained")

        # 3b. the relay floor: the same load through a bridge that does nothing but one provider request
        if self.relay is None:
            self.start_relay()
        await self.reset_simulator(NUMBER)
        await self.load(f"{self.relay_url}/alerts", template=template, mode="distinct", duration=p.warmup,
                        prefix="rw")
        await self.reset_simulator(NUMBER)
        assert self.relay is not None
        cpu0 = self.relay.cpu_s()
        load_start = time.time()
        relay = await self.load(f"{self.relay_url}/alerts", template=template, mode="distinct",
                                duration=p.duration, prefix="rl")
        span = time.time() - load_start
        relay_cpu = self.relay.cpu_s() - cpu0
        relay_calls = await self.sim_calls()  # answered only after the provider's 202: all placed by now
        self.results["relay_floor"] = {
            **relay.to_json(),
            "calls_received_by_simulator": len(relay_calls),
            "sustained_rps": round(len(relay_calls) / span, 1) if span > 0 else 0.0,
            "server_cpu_ms_per_webhook": _per(relay_cpu * 1000, relay.requests),
        }
        say(f"  relay floor: {relay.rps:,.0f} webhooks/s, each one provider call "
            f"({len(relay_calls):,} placed)")

        new_r = self.results["new_page"]
        new_r["ratio"] = round(new_r["sustained_rps"] / rps, 3) if rps else None
        new_r["accepted_ratio"] = round(new_r["rps"] / rps, 3) if rps else None
        floor = self.results["relay_floor"]
        floor["ratio"] = round(floor["rps"] / rps, 3) if rps else None
        new_r["ratio_to_relay_floor"] = round(new_r["sustained_rps"] / floor["rps"], 3) if floor["rps"] else None
        say(f"  ceiling, median of {len(ceiling_runs)}: {rps:,.0f} requests/s -> duplicate "
            f"{self.results['duplicate']['ratio']:.2f} x ceiling (median of the rounds), new-page "
            f"{new_r['ratio']:.2f} x ceiling, relay floor {floor['ratio']:.2f} x ceiling")

    async def measure_ceiling(self, body: str) -> dict[str, Any]:
        assert self.ceiling is not None
        cpu0 = self.ceiling.cpu_s()
        run = await self.load(f"{self.ceiling_url}/alerts", template=body, mode="fixed", duration=self.plan.duration)
        cpu = self.ceiling.cpu_s() - cpu0
        return {**run.to_json(), "server_cpu_ms_per_request": _per(cpu * 1000, run.requests)}

    # --- 4: time to call -------------------------------------------------------------------------------

    async def time_to_call(self, svc: Service) -> None:
        rate = 100.0
        count = int(rate * self.plan.ttc_seconds)
        await self.reset_simulator(NUMBER)
        await settle()
        # Every webhook waits for one SQLite commit (fdatasync of the WAL) before its call is placed.
        fsync = await asyncio.to_thread(fsync_probe, self.workdir)
        say(f"  host fdatasync of 4 KiB at 100/s, nothing of ours running: p50 {fsync['p50'] or 0:.2f} ms, "
            f"p99 {fsync['p99'] or 0:.2f} ms, max {fsync['max'] or 0:.2f} ms")
        template = self.body(loadgen.MARKER)
        bodies = [template.replace(loadgen.MARKER, f"ttc{i}").encode() for i in range(count)]
        before = await self.metrics(svc)
        sent = await self.profiled("time_to_call", svc.proc, self.plan.ttc_seconds, loadgen.open_loop(
            f"{svc.url}/alerts", token=self.token, bodies=bodies, rate=rate))
        drain = await self.wait_placed(svc, before, route="bench", within=self.plan.drain_timeout)
        after = await self.metrics(svc)
        by_correlation: dict[str, loadgen.Sent] = {}
        for s in sent:
            pages = (s.body or {}).get("pages", []) if isinstance(s.body, dict) else []
            called = [p for p in pages if p.get("result") == "called"]
            if s.status == 200 and called:
                by_correlation[f"a2v-{called[0]['page_key'][:32]}-1"] = s
        arrivals: dict[str, float] = {}
        for c in await self.sim_calls():
            arrivals.setdefault(c["correlationId"], c["time"])
        latencies = [arrivals[k] - s.sent_wall for k, s in by_correlation.items() if k in arrivals]
        # The slowest calls, to tell a cold start (the first indices) from stalls during the run.
        first = sent[0].sent if sent else 0.0
        slowest = sorted(((arrivals[k] - s.sent_wall, s) for k, s in by_correlation.items() if k in arrivals),
                         key=lambda pair: pair[0], reverse=True)[:10]
        lateness = [s.sent - s.scheduled for s in sent]
        responses = [s.response_time for s in sent if s.response_time is not None]
        ttc_sum = after.delta(before, "alert2voice_time_to_call_seconds_sum")
        ttc_count = after.delta(before, "alert2voice_time_to_call_seconds_count")
        summary = loadgen.latency_summary(latencies)
        self.results["time_to_call"] = {
            "rate_per_s": rate,
            "webhooks": count,
            "answered_200": sum(1 for s in sent if s.status == 200),
            "calls_matched": len(latencies),
            "missing": len(by_correlation) - len(latencies),
            "ms": summary,
            "webhook_response_ms": loadgen.latency_summary(responses),
            "send_lateness_ms": loadgen.latency_summary(lateness),
            "service_metric_mean_ms": round(ttc_sum / ttc_count * 1000, 2) if ttc_count else None,
            "host_fdatasync_ms": fsync,
            "slowest": [{"ms": round(latency * 1000, 1), "index": s.index, "at_s": round(s.sent - first, 2),
                         "answered_ms": round((s.done - s.sent) * 1000, 1) if s.done is not None else None}
                        for latency, s in slowest],
            "simulator_time_resolution_ms": 1,
            "drain": drain,
        }
        say(f"  time to call at {rate:g}/s: p50 {summary['p50'] or 0:.1f} ms, p99 {summary['p99'] or 0:.1f} ms, "
            f"max {summary['max'] or 0:.1f} ms ({len(latencies)} of {count} calls matched)")

    # --- 5: storms -------------------------------------------------------------------------------------

    async def storms(self) -> Service:
        svc = self.start_service("storm", STORM)
        await self.reset_simulator(STORM_BIG_NUMBER, STORM_BURST_NUMBER)
        before = await self.metrics(svc)
        out: dict[str, Any] = {"config": STORM["throttle"]}

        # One webhook with 5,000 alerts: first as a new page, then resent (a duplicate).
        big = loadgen.webhook("Big", starts_at=self.starts_at, alerts=5000, extra_labels={"storm": "big"},
                              name_prefix="Storm")
        body = loadgen.dumps(big).encode()
        sent_wall = time.time()
        status1, answer1, first_s = await self.post(f"{svc.url}/alerts", body)
        status2, answer2, again_s = await self.post(f"{svc.url}/alerts", body)
        results = [p.get("result") for p in (answer1.get("pages", []) if isinstance(answer1, dict) else [])]
        out["big_webhook"] = {"alerts": 5000, "bytes": len(body), "status": status1, "result": results,
                              "response_s": round(first_s, 4), "resend_status": status2,
                              "resend_result": [p.get("result") for p in (answer2.get("pages", [])
                                                                         if isinstance(answer2, dict) else [])],
                              "resend_response_s": round(again_s, 4)}
        say(f"  5,000-alert webhook ({len(body) / 1e6:.1f} MB): answered {status1} in {first_s * 1000:.0f} ms "
            f"({', '.join(map(str, results))}); resent: {status2} in {again_s * 1000:.0f} ms")

        # 1,000 distinct groups within one second.
        template = loadgen.dumps(loadgen.webhook(loadgen.MARKER, starts_at=self.starts_at,
                                                 extra_labels={"storm": "burst"}, name_prefix="Storm"))
        bodies = [template.replace(loadgen.MARKER, f"Burst{i}").encode() for i in range(1000)]
        t0 = time.monotonic()
        sent = await loadgen.open_loop(f"{svc.url}/alerts", token=self.token, bodies=bodies, rate=1000.0)
        burst_span = max((s.done or t0) for s in sent) - t0
        statuses: dict[str, int] = {}
        for s in sent:
            key = str(s.status) if s.status is not None else (s.error or "error").split(":")[0]
            statuses[key] = statuses.get(key, 0) + 1
        responses = [s.response_time for s in sent if s.response_time is not None]
        sending_s = sent[-1].sent - sent[0].sent if sent else 0.0

        # Let the dispatcher place what the limits allow, then count (bounded).
        settle_deadline = time.monotonic() + 15
        last_count, stable_since = -1.0, time.monotonic()
        while time.monotonic() < settle_deadline:
            m = await self.metrics(svc)
            placed = m.delta(before, "alert2voice_provider_requests_total", endpoint="messages")
            if placed != last_count:
                last_count, stable_since = placed, time.monotonic()
            elif time.monotonic() - stable_since >= 2.0:
                break
            await asyncio.sleep(0.2)
        after = await self.metrics(svc)
        calls = await self.sim_calls()
        per_number: dict[str, int] = {}
        for c in calls:
            per_number[c["dialedNumber"]] = per_number.get(c["dialedNumber"], 0) + 1
        big_arrival = min((c["time"] for c in calls if c["dialedNumber"] == STORM_BIG_NUMBER), default=None)
        throttle = STORM["throttle"]
        # Everything happens within every window, so the smallest tier binds; the big page's call counts globally.
        allowed_by_throttle = min(min(t["calls"] for t in throttle["per_number"]),
                                  throttle["global"]["calls"] - per_number.get(STORM_BIG_NUMBER, 0))
        allowed_by_storm = throttle["storm"]["pages"] + 1
        burst_calls = per_number.get(STORM_BURST_NUMBER, 0)
        burst_summary = loadgen.latency_summary(responses)
        out["burst"] = {
            "groups": 1000,
            "sent_within_s": round(sending_s, 3),
            "all_answered_within_s": round(burst_span, 3),
            "statuses": statuses,
            "response_ms": burst_summary,
            "pages_called": int(after.delta(before, "alert2voice_pages_total", route="storm-burst", result="called")),
            "pages_throttled": int(after.delta(before, "alert2voice_pages_total", route="storm-burst",
                                               result="throttled")),
            "calls_placed": burst_calls,
            "calls_allowed_by_throttle": allowed_by_throttle,
            "calls_allowed_by_storm_rule": allowed_by_storm,
            "throttle_respected": 0 < burst_calls <= allowed_by_throttle,
            "storm_rule_respected": 0 < burst_calls <= allowed_by_storm,
        }
        out["big_webhook"]["calls_placed"] = per_number.get(STORM_BIG_NUMBER, 0)
        out["big_webhook"]["time_to_call_s"] = round(big_arrival - sent_wall, 3) if big_arrival else None
        out["rss_mb_after"] = round(svc.proc.rss_mb() or 0, 1)
        self.results["storms"] = out
        say(f"  1,000 groups sent in {sending_s:.2f} s: {statuses}; answers p50 {burst_summary['p50'] or 0:.0f} ms, "
            f"p99 {burst_summary['p99'] or 0:.0f} ms, all within {burst_span:.2f} s")
        say(f"  storm calls to the burst number: {burst_calls} placed (throttle allows {allowed_by_throttle}, "
            f"storm rule {throttle['storm']['pages']} pages/{throttle['storm']['per']} allows {allowed_by_storm})")
        return svc

    # --- 6: memory -------------------------------------------------------------------------------------

    async def memory(self) -> Service:
        svc = self.start_service("memory")
        await self.reset_simulator(NUMBER)
        await asyncio.sleep(1.0)
        idle = svc.proc.rss_mb() or 0.0
        total = self.plan.memory_webhooks
        new_every, dup_groups = NEW_EVERY, 50
        samples: list[tuple[float, float, float]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            t0 = time.monotonic()
            while not stop.is_set():
                with contextlib.suppress(OSError, aiohttp.ClientError):
                    m = await self.metrics(svc)
                    samples.append((round(time.monotonic() - t0, 1), m.sum("alert2voice_webhooks_total"),
                                    round(svc.proc.rss_mb() or 0, 1)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)

        before = await self.metrics(svc)
        sampler = asyncio.create_task(sample())
        template = self.body(loadgen.MARKER)
        # Bounded by count (limit) and by time (at most 200 s, or 60 s with --quick).
        cap = 60.0 if self.plan.name == "quick" else 200.0

        async def enough() -> bool:
            return (await self.metrics(svc)).delta(before, "alert2voice_webhooks_total") >= total

        try:
            result = await self.load(f"{svc.url}/alerts", template=template, mode="mixed", duration=cap, prefix="m",
                                     limit=total, new_every=new_every, dup_groups=dup_groups, until=enough)
            drain = await self.wait_placed(svc, before, route="bench", within=self.plan.drain_timeout)
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await sampler
        after = await self.metrics(svc)
        rss = svc.proc.rss_mb() or 0.0
        webhooks = int(after.delta(before, "alert2voice_webhooks_total"))
        store = _store_stats(svc.db)
        self.results["memory"] = {
            "rss_idle_mb": round(idle, 1),
            "rss_after_mb": round(rss, 1),
            "rss_growth_mb": round(rss - idle, 1),
            "rss_peak_mb": round(svc.proc.hwm_mb() or 0, 1),
            "webhooks": webhooks,
            "share_new_pages": 1 / new_every,
            "duplicate_groups": dup_groups,
            "pages_called": int(after.delta(before, "alert2voice_pages_total", result="called")),
            "pages_duplicate": int(after.delta(before, "alert2voice_pages_total", result="duplicate")),
            "load": result.to_json(),
            "drain": drain,
            "store": store,
            "dedup_window": "1m",
            "samples_t_webhooks_rss": samples,
        }
        say(f"  memory: RSS {idle:.1f} MB idle -> {rss:.1f} MB after {webhooks:,} webhooks "
            f"(+{rss - idle:.1f} MB; {store.get('pages', '?')} pages, {store.get('claims', '?')} claims, "
            f"{store.get('bytes', 0) / 1e6:.1f} MB on disk)")
        return svc


def _py_spy() -> str | None:
    venv = Path(sys.executable).with_name("py-spy")
    return str(venv) if venv.exists() else shutil.which("py-spy")


def _hot_frames(raw: Path, top: int = 25) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the frames with the most samples, on-CPU (self) and inclusive."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    try:
        lines = raw.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return {"error": str(exc)}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + count

    def rank(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"file": str(raw), "samples": total, "self_pct": rank(own), "inclusive_pct": rank(inclusive)}


def _per(total: float, count: int) -> float | None:
    return round(total / count, 4) if count else None


def _store_stats(path: Path) -> dict[str, Any]:
    """Rows in the SQLite store (read-only, from outside the process) and its size on disk."""
    out: dict[str, Any] = {"bytes": sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            out["pages"] = conn.execute("SELECT count(*) FROM pages").fetchone()[0]
            out["active_pages"] = conn.execute("SELECT count(*) FROM pages WHERE state = 'active'").fetchone()[0]
            out["claims"] = conn.execute("SELECT count(*) FROM claims").fetchone()[0]
            out["calls"] = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        out["error"] = str(exc)
    return out


# ----------------------------------------------------------------------------------------------- report


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def table(results: dict[str, Any]) -> list[dict[str, str]]:
    """Rows: figure, value, target, ratio, result (ok / MISSED / info)."""
    rows: list[dict[str, str]] = []

    def row(figure: str, value: str, target: str = "", ratio: str = "", ok: bool | None = None) -> None:
        rows.append({"figure": figure, "value": value, "target": target, "ratio": ratio,
                     "result": "" if ok is None else ("ok" if ok else "MISSED")})

    c = results.get("ceiling")
    if c:
        runs = " / ".join(_fmt(r["rps"]) for r in c["runs"])
        row("ceiling (bare aiohttp + json.loads), median", _fmt(c["rps"], " req/s"), "", "1.00")
        row("  ceiling runs", f"{runs} req/s")
    d = results.get("duplicate")
    if d:
        row("duplicate path", _fmt(d["rps"], " req/s"), f">= {TARGETS['duplicate_ratio']} x ceiling",
            f"{d['ratio']:.2f}", d["ratio"] is not None and d["ratio"] >= TARGETS["duplicate_ratio"])
    n = results.get("new_page")
    if n:
        row("new-page path, webhooks answered", _fmt(n["rps"], " req/s"), "", f"{n['accepted_ratio']:.2f}")
        row("new-page path, sustained with every call placed", _fmt(n["sustained_rps"], " webhooks/s"),
            f">= {TARGETS['new_page_ratio']} x ceiling", f"{n['ratio']:.2f}",
            bool(n["every_call_placed"]) and n["ratio"] is not None and n["ratio"] >= TARGETS["new_page_ratio"])
        row("  calls placed / pages called", f"{n['calls_received_by_simulator']:,} / {n['pages_called']:,}",
            "all", "", bool(n["every_call_placed"]))
        f = results.get("relay_floor")
        if f:
            row("  relay floor (webhook -> one provider call, nothing else)", _fmt(f["rps"], " webhooks/s"), "",
                f"{f['ratio']:.2f}")
            row("  new-page path / relay floor", f"{n['ratio_to_relay_floor']:.2f}")
    t = results.get("time_to_call")
    if t:
        ms = t["ms"]
        row("time to call p50 at 100 webhooks/s", _fmt(ms["p50"], " ms", 1))
        row("time to call p99 at 100 webhooks/s", _fmt(ms["p99"], " ms", 1),
            f"<= {TARGETS['time_to_call_p99_ms']:g} ms", "",
            ms["p99"] is not None and ms["p99"] <= TARGETS["time_to_call_p99_ms"] and t["missing"] == 0
            and t["calls_matched"] == t["webhooks"])
        if t.get("host_fdatasync_ms"):
            f = t["host_fdatasync_ms"]
            row("  host fdatasync (4 KiB) p50 / p99, just before",
                f"{_fmt(f['p50'], ' ms', 2)} / {_fmt(f['p99'], ' ms', 2)}")
    s = results.get("storms")
    if s:
        b = s["big_webhook"]
        row("5,000-alert webhook answered in", _fmt(b["response_s"] * 1000, " ms"),
            f"<= {TARGETS['big_webhook_s'] * 1000:g} ms", "",
            b["status"] == 200 and b["response_s"] <= TARGETS["big_webhook_s"])
        row("  resent (duplicate) answered in", _fmt(b["resend_response_s"] * 1000, " ms"),
            f"<= {TARGETS['big_webhook_s'] * 1000:g} ms", "",
            b["resend_status"] == 200 and b["resend_response_s"] <= TARGETS["big_webhook_s"])
        row("  its call placed after", _fmt((b["time_to_call_s"] or 0) * 1000, " ms"), "", "",
            None if b["time_to_call_s"] is not None else False)
        u = s["burst"]
        ok200 = u["statuses"].get("200", 0)
        row("1,000 groups in 1 s: answered 200", f"{ok200:,} / 1,000", "all", "", ok200 == 1000)
        row("  answer time p50 / p99 (from scheduled send)",
            f"{_fmt(u['response_ms']['p50'], ' ms')} / {_fmt(u['response_ms']['p99'], ' ms')}",
            f"< {TARGETS['storm_answer_s']:g} s", "",
            u["response_ms"]["max"] is not None and u["response_ms"]["max"] < TARGETS["storm_answer_s"] * 1000)
        row("  calls placed vs throttle (per number)",
            f"{u['calls_placed']} (allowed {u['calls_allowed_by_throttle']})", "<= allowed", "",
            bool(u["throttle_respected"]))
        row("  calls placed vs storm rule", f"{u['calls_placed']} (allowed {u['calls_allowed_by_storm_rule']})",
            "<= allowed", "", bool(u["storm_rule_respected"]))
    m = results.get("memory")
    if m:
        row("RSS at idle", _fmt(m["rss_idle_mb"], " MB", 1), f"<= {TARGETS['rss_idle_mb']:g} MB", "",
            m["rss_idle_mb"] <= TARGETS["rss_idle_mb"])
        row(f"RSS growth after {m['webhooks']:,} webhooks", _fmt(m["rss_growth_mb"], " MB", 1),
            f"<= {TARGETS['rss_growth_mb']:g} MB", "", m["rss_growth_mb"] <= TARGETS["rss_growth_mb"])
        st = m["store"]
        row("  store after the memory run", f"{st.get('pages', '?'):,} pages, {st.get('claims', '?'):,} claims, "
            f"{st.get('bytes', 0) / 1e6:.1f} MB")
    st = results.get("startup")
    if st:
        row("startup to /-/ready (median / max)", f"{_fmt(st['median_s'] * 1000, ' ms')} / "
            f"{_fmt(st['max_s'] * 1000, ' ms')}", f"<= {TARGETS['startup_s'] * 1000:g} ms", "",
            st["max_s"] <= TARGETS["startup_s"])
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    cols = ("figure", "value", "target", "ratio", "result")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    say(line)
    say("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        say("  ".join(r[c].ljust(widths[c]) for c in cols))


# ------------------------------------------------------------------------------------------------- main


async def run(bench: Bench, only: set[str]) -> None:
    p = bench.plan
    say("starting the simulator and the ceiling")
    bench.start_simulator()
    bench.start_ceiling()
    await bench.script_numbers(NUMBER)
    startups: list[float] = []
    if only & {"throughput", "ttc"}:
        say("[1-4] throughput and time to call")
        svc = bench.start_service("main")
        startups.append(svc.startup_s)
        bench.results["main_rss_idle_mb"] = round(svc.proc.rss_mb() or 0, 1)
        if "throughput" in only:
            await bench.throughput(svc)
        bench.results["main_rss_end_mb"] = round(svc.proc.rss_mb() or 0, 1)
        bench.stop(svc.proc)
        if "ttc" in only:
            # Its own process, like the storms and the memory run: the throughput loads leave thousands
            # of pages awaiting callbacks behind them, which are not what a latency figure is about.
            # Their files' writeback goes first, so that neither this start nor its latencies wait on it.
            await settle()
            svc = bench.start_service("ttc")
            startups.append(svc.startup_s)
            await bench.time_to_call(svc)
            bench.stop(svc.proc)
    if "storms" in only:
        say("[5] storms")
        svc = await bench.storms()
        startups.append(svc.startup_s)
        bench.stop(svc.proc)
    if "memory" in only:
        say(f"[6] memory: {p.memory_webhooks:,} webhooks, 1 in {NEW_EVERY} a new page, dedup window 1m")
        svc = await bench.memory()
        startups.append(svc.startup_s)
        bench.stop(svc.proc)
    say("[7] startup")
    while len(startups) < 3:
        svc = bench.start_service(f"startup{len(startups)}")
        startups.append(svc.startup_s)
        bench.stop(svc.proc)
    bench.results["startup"] = {"samples_s": [round(s, 3) for s in startups],
                                "median_s": round(statistics.median(startups), 3), "max_s": round(max(startups), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure alert2voice against a bare aiohttp ceiling (make bench).")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk is there")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--callbacks", choices=("off", "instant"), default="off",
                        help="simulator callbacks: off (default) or instant (4 receipts per call back to alert2voice)")
    parser.add_argument("--only", default="throughput,ttc,storms,memory",
                        help="comma-separated subset of throughput,ttc,storms,memory (startup is always measured)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, logs, databases)")
    parser.add_argument("--profile", action="store_true",
                        help="sample alert2voice with py-spy during the duplicate, new-page and time-to-call loads "
                             "(pip install py-spy; figures of a profiled run are slightly lower)")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    plan = QUICK if args.quick else FULL

    # SIGTERM ends the run like Ctrl-C: every process is stopped on the way out.
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    info = machine()
    wrk = None if args.no_wrk else ensure_wrk(allow_install=not args.no_install)
    info["wrk"] = loadgen.wrk_version(wrk) if wrk else None
    info["load_generator"] = "wrk" if wrk else "python (aiohttp)"
    say(f"alert2voice bench ({plan.name}) on {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB, "
        f"Python {info['python']}, aiohttp {info['aiohttp']}, load: {info['load_generator']} {info['wrk'] or ''}")
    say("note: load generator, simulator and servers share this machine's cores: compare ratios, not absolutes")
    if not wrk:
        say("note: the Python load generator saturates before the ceiling does, so the ceiling reads low and every "
            "ratio reads high; install wrk (make bench does) for figures to compare")
    workdir = Path(tempfile.mkdtemp(prefix="a2v-bench-"))
    started = time.time()
    bench_ref: list[Bench] = []
    failed = interrupted = False

    async def go() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            bench = Bench(plan=plan, workdir=workdir, wrk=wrk, session=session, callbacks=args.callbacks,
                          profile_dir=args.out.parent if args.profile else None)
            bench_ref.append(bench)
            await run(bench, only)

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        interrupted = True
    except Exception:
        failed = True
        raise
    finally:
        if interrupted:
            say("interrupted: stopping every process")
        for bench in bench_ref:
            if failed:
                for proc in bench.procs:
                    say(proc.log_tail(15))
            for proc in reversed(bench.procs):
                with contextlib.suppress(KeyboardInterrupt):
                    proc.stop()
        if args.keep or failed:
            say(f"logs, configs and databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130
    bench = bench_ref[0]
    rows = table(bench.results)
    say("")
    print_table(rows)
    missed = [r["figure"].strip() for r in rows if r["result"] == "MISSED"]
    report = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": plan.name,
        "elapsed_s": round(time.time() - started, 1),
        "machine": info,
        "settings": {"duration_s": plan.duration, "warmup_s": plan.warmup, "connections": plan.connections,
                     "ttc_seconds": plan.ttc_seconds, "memory_webhooks": plan.memory_webhooks,
                     "simulator_callbacks": args.callbacks, "config": "bench/config.yaml", "storm": STORM},
        "targets": TARGETS,
        "results": bench.results,
        "table": rows,
        "missed": missed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    say("")
    say(f"{len(missed)} target(s) MISSED: {'; '.join(missed)}" if missed else "every target met")
    say(f"wrote {args.out} ({report['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
