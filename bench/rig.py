"""The rig every phase runs on: the simulator, the ceiling, the relay and alert2voice, and how to talk to them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench import loadgen, profile, say
from bench.procs import LOOPBACK, Proc, alert2voice_command, free_port, wait_ready
from bench.redis_server import MISSING, RedisServer, argv, redis_server_path

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
NUMBER = "+14155550101"  # the one contact of bench/config.yaml
SQLITE, REDIS = "sqlite", "redis"
STORES = (SQLITE, REDIS)  # the store backends a run can measure, in the order the table shows them
REDIS_KEY_PREFIX = "a2v:"


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


@dataclass(frozen=True)
class Samples:
    """One scrape of /metrics: sample name plus labels -> value (the tests read it too)."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Samples:
        values = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values[(s.name, frozenset(s.labels.items()))] = s.value
        return cls(values)

    def sum(self, name: str, **labels: str) -> float:
        """The sum over every sample of `name` that has these labels (and maybe others)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and want <= ls)

    def get(self, name: str, **labels: str) -> float:
        """The sample of `name` with exactly these labels, 0 when absent."""
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def delta(self, before: Samples, name: str, **labels: str) -> float:
        """How much sum(name, **labels) grew since `before`."""
        return self.sum(name, **labels) - before.sum(name, **labels)


@dataclass(frozen=True)
class Load:
    """What one closed-loop load measured, as loadgen.LoadResult.to_json() rounds it: Load(**result.to_json())."""

    generator: str
    requests: int
    duration_s: float
    rps: float
    non_2xx: int
    socket_errors: int
    latency_ms: dict[str, float | None]


@dataclass(frozen=True)
class Drain:
    """Waiting for the calls of a load: pages called, provider answers (202 and other), how long it took."""

    called: int
    placed_202: int
    provider_other: int
    drained: bool
    waited_s: float


@dataclass
class Service:
    """One `alert2voice serve` process, its URL, and its store: the SQLite file, or its own redis-server."""

    proc: Proc
    url: str
    db: Path
    startup_s: float
    store: str = SQLITE
    redis: RedisServer | None = None


def _parse_stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Rig:
    """The processes of one run (all stopped by stop_all) and the HTTP helpers the phases share."""

    plan: Plan
    workdir: Path
    wrk: str | None
    session: aiohttp.ClientSession
    callbacks: str = "off"
    profile_dir: Path | None = None
    stores: tuple[str, ...] = (SQLITE,)
    replicas: int = 1           # serve processes on one redis-server in the replicas phase (2+ to run it)
    count_fsyncs: bool = True   # count the store's fsyncs with perf where it can (bench/costs.py)
    procs: list[Proc] = field(default_factory=list)
    startups: dict[str, list[float]] = field(default_factory=dict)  # per store, every alert2voice: s to ready
    profiles: dict[str, Any] = field(default_factory=dict)
    token: str = field(default_factory=lambda: "bench-" + os.urandom(12).hex())
    service_key: str = field(default_factory=lambda: "bench-key-" + os.urandom(12).hex())
    callback_token: str = field(default_factory=lambda: "bench-cb-" + os.urandom(12).hex())
    sim: Proc | None = None
    sim_url: str = ""
    ceiling: Proc | None = None
    ceiling_url: str = ""
    relay: Proc | None = None
    relay_url: str = ""
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

    def stop_all(self) -> None:
        """Every process still running, the last started first."""
        for proc in reversed(self.procs):
            with contextlib.suppress(KeyboardInterrupt):
                proc.stop()

    def start_simulator(self) -> None:
        port = free_port()
        self.sim_url = f"http://{LOOPBACK}:{port}"
        # bench/simulator.py: `alert2voice simulator` with the allocator tuned for the bench's long runs.
        self.sim = self.start("simulator", [sys.executable, str(HERE / "simulator.py"), "--log-level", "warning",
                                            "simulator",
                                            "--listen", f"{LOOPBACK}:{port}", "--service-key", self.service_key,
                                            "--callback-auth", f"A2VBENCH=Authorization:Bearer {self.callback_token}",
                                            "--callback-delay", "0"])
        wait_ready(f"{self.sim_url}/_sim/numbers", self.sim)

    def start_ceiling(self) -> None:
        port = free_port()
        self.ceiling_url = f"http://{LOOPBACK}:{port}"
        self.ceiling = self.start("ceiling", [sys.executable, str(HERE / "ceiling.py"), "--listen",
                                              f"{LOOPBACK}:{port}"])
        wait_ready(f"{self.ceiling_url}/-/ready", self.ceiling)

    def start_relay(self) -> None:
        port = free_port()
        self.relay_url = f"http://{LOOPBACK}:{port}"
        self.relay = self.start("relay", [sys.executable, str(HERE / "relay.py"), "--listen", f"{LOOPBACK}:{port}",
                                          "--provider", self.sim_url, "--service-key", self.service_key,
                                          "--number", NUMBER])
        wait_ready(f"{self.relay_url}/-/ready", self.relay)

    def start_redis(self, name: str) -> RedisServer:
        """A redis-server of its own (folder workdir/name), answering before this returns."""
        binary = redis_server_path()
        if binary is None:
            raise RuntimeError(MISSING)
        port = free_port()
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        server = RedisServer(self.start(name, argv(binary, port, directory)), port)
        try:
            server.wait_ready()
        except BaseException:
            self.stop(server.proc)
            raise
        return server

    def start_service(self, name: str, overrides: dict[str, Any] | None = None, store: str = SQLITE,
                      shared: RedisServer | None = None) -> Service:
        """Write the config (bench/config.yaml plus overrides, and the store), start `alert2voice serve`
        (after its redis-server, for the Redis store; on `shared`, another service's, if given), time it to
        ready. Its name ends in the store's."""
        own = self.start_redis(f"{name}-redis-server") if store == REDIS and shared is None else None
        try:
            return self._serve(f"{name}-{store}", overrides, store, shared or own)
        except BaseException:
            if own is not None:
                self.stop(own.proc)
            raise

    def _serve(self, name: str, overrides: dict[str, Any] | None, store: str, redis: RedisServer | None) -> Service:
        config = yaml.safe_load((HERE / "config.yaml").read_text(encoding="utf-8"))
        config.update(overrides or {})
        if redis is not None:
            config["store"] = {"backend": REDIS, "url": redis.url, "key_prefix": REDIS_KEY_PREFIX}
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port()
        db = self.workdir / f"{name}.db"
        env = {**os.environ, "A2V_BENCH_PORT": str(port), "A2V_BENCH_TOKEN": self.token,
               "A2V_BENCH_SIM_URL": self.sim_url, "A2V_BENCH_SERVICE_KEY": self.service_key,
               "A2V_BENCH_CALLBACK_TOKEN": self.callback_token, "A2V_BENCH_DB": str(db)}
        proc = self.start(name, [*alert2voice_command(), "serve", "--config", str(path)], env=env)
        url = f"http://{LOOPBACK}:{port}"
        try:
            startup = wait_ready(f"{url}/-/ready", proc)
        except BaseException:
            self.stop(proc)
            raise
        self.startups.setdefault(store, []).append(startup)
        say(f"  {name}: alert2voice serve ready {startup * 1000:.0f} ms after start (pid {proc.pid})")
        return Service(proc, url, db, startup, store, redis)

    @contextlib.asynccontextmanager
    async def service(self, name: str, overrides: dict[str, Any] | None = None, store: str = SQLITE,
                      shared: RedisServer | None = None) -> AsyncIterator[Service]:
        """An `alert2voice serve` for the block: its log's tail is printed if the block fails; always stopped
        (and its redis-server after it, unless that is `shared`: its owner stops it)."""
        svc = self.start_service(name, overrides, store, shared)
        try:
            yield svc
        except Exception:
            say(svc.proc.log_tail(15))
            raise
        finally:
            self.stop(svc.proc)
            if svc.redis is not None and svc.redis is not shared:
                self.stop(svc.redis.proc)

    # --- HTTP helpers --------------------------------------------------------------------------------

    async def metrics(self, svc: Service) -> Samples:
        async with self.session.get(f"{svc.url}/metrics") as resp:
            resp.raise_for_status()
            return Samples.parse(await resp.text())

    async def script_numbers(self, *numbers: str, callbacks: bool | None = None) -> None:
        """Simulator callbacks off (or instant: --callbacks instant, or `callbacks`) for these numbers."""
        on = self.callbacks != "off" if callbacks is None else callbacks
        for number in numbers:
            async with self.session.put(f"{self.sim_url}/_sim/numbers/{number}", json={"callbacks": on}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"simulator refused the script for {number}: {await resp.text()}")

    async def reset_simulator(self, *numbers: str, callbacks: bool | None = None) -> None:
        """Forget every request and call (keeps /_sim/requests small), then script the numbers again."""
        async with self.session.post(f"{self.sim_url}/_sim/reset") as resp:
            resp.raise_for_status()
        await self.script_numbers(*numbers, callbacks=callbacks)

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

    async def wait_placed(self, svc: Service, before: Samples, *, route: str, within: float) -> Drain:
        """Wait (at most `within` s) until every page called on `route` since `before` has its provider answer."""
        deadline = time.monotonic() + within
        start = time.monotonic()
        while True:
            m = await self.metrics(svc)
            called = m.delta(before, "alert2voice_pages_total", route=route, result="called")
            placed = m.delta(before, "alert2voice_provider_requests_total", endpoint="messages", code="202")
            other = m.delta(before, "alert2voice_provider_requests_total", endpoint="messages") - placed
            if placed + other >= called or time.monotonic() >= deadline:
                return Drain(called=int(called), placed_202=int(placed), provider_other=int(other),
                             drained=placed + other >= called, waited_s=round(time.monotonic() - start, 3))
            await asyncio.sleep(0.2)

    async def load(self, url: str, *, template: str, mode: str, duration: float, prefix: str = "",
                   limit: int = 0, new_every: int = 10, dup_groups: int = 50,
                   until: Callable[[], Awaitable[bool]] | None = None) -> loadgen.LoadResult:
        """A closed-loop load: wrk when there is one, else the Python generator."""
        kwargs = {"token": self.token, "template": template, "mode": mode, "duration": duration,
                  "connections": self.plan.connections, "prefix": prefix, "new_every": new_every,
                  "dup_groups": dup_groups, "limit": limit, "until": until}
        if self.wrk:
            return await loadgen.run_wrk(self.wrk, url, workdir=self.workdir, **kwargs)
        return await loadgen.closed_loop(url, **kwargs)

    async def profiled(self, name: str, proc: Proc, duration: float, work: Awaitable[T]) -> T:
        """Run `work`; with --profile, sample `proc` with py-spy meanwhile and keep its hottest frames."""
        spy = profile.py_spy()
        if self.profile_dir is None or spy is None:
            return await work
        raw = self.profile_dir / f"profile-{name}.txt"
        result = await profile.sampled(spy, proc.pid, raw, self.workdir / f"py-spy-{name}.log", duration, work)
        self.profiles[name] = profile.hot_frames(raw)
        return result

    def body(self, tag: str, **kwargs: Any) -> str:
        return loadgen.dumps(loadgen.webhook(tag, starts_at=self.starts_at, **kwargs))
