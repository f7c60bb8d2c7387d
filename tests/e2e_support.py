"""Helpers for the end-to-end suite: tools, managed processes (bench.procs), polling, metrics, Alertmanager."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
import pytest
import yaml

from alert2voice.provider.webex import CALLS_PATH, PROBE_PREFIX

# One implementation of child processes for the bench and the tests (the bench must not import tests/).
from bench.procs import LOOPBACK, alert2voice_command, free_port
from bench.procs import Proc as Process
from bench.procs import wait_ready as wait_http_ok
from bench.rig import Samples

ALERTMANAGER = "prometheus-alertmanager"
AMTOOL = "amtool"
T = TypeVar("T")


# ------------------------------------------------------------------------------------------ environment


def in_ci() -> bool:
    """Whether env CI says this is a CI run, where a missing Alertmanager is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_alertmanager() -> tuple[str, str]:
    """The paths of prometheus-alertmanager and amtool; skip without them (fail in CI)."""
    found = shutil.which(ALERTMANAGER), shutil.which(AMTOOL)
    if found[0] and found[1]:
        return found[0], found[1]
    missing = " and ".join(n for n, p in zip((ALERTMANAGER, AMTOOL), found, strict=True) if not p)
    skip_or_fail(f"{missing} not on PATH: the end-to-end tests drive a real Alertmanager; `make test` installs "
                 "Debian's prometheus-alertmanager (or: apt-get install prometheus-alertmanager)")


def skip_or_fail(message: str) -> NoReturn:
    """Skip a test whose tool is missing; under CI, where every tool is installed, fail it."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


# -------------------------------------------------------------------------------------------- processes


class ProcessLogs:
    """Every process of the suite, so a failing test's report carries their logs (a pytest plugin)."""

    def __init__(self) -> None:
        self.processes: list[Process] = []

    def text(self) -> str:
        return "\n\n".join(p.log_tail() for p in self.processes)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        if report.failed and item.get_closest_marker("e2e") is not None:
            report.sections.append(("process logs (alert2voice, simulator, Alertmanager)", self.text()))
        return report


# ------------------------------------------------------------------------------------------------ polling


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, *, within: float = 20.0,
                     interval: float = 0.15) -> T:
    """Poll `probe` until it returns something truthy, for at most `within` seconds.

    This waits for other processes (Alertmanager's group_wait, a webhook, a callback), never for a
    timer of our own; the deadline only bounds a failure.
    """
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(interval)


# ------------------------------------------------------------------------------------------------ metrics


# ----------------------------------------------------------------------------------------- alert2voice


@dataclass
class Stack:
    """The simulator and alert2voice, running as processes on loopback."""

    a2v_url: str
    sim_url: str
    token: str
    service_key: str
    callback_token: str
    admin_token: str
    number: str
    caller_id: str
    config_path: Path
    workdir: Path
    logs: ProcessLogs
    processes: list[Process] = field(default_factory=list)

    @property
    def secrets(self) -> dict[str, str]:
        return {"webhook token": self.token, "service key": self.service_key,
                "callback token": self.callback_token, "admin token": self.admin_token}

    @property
    def admin(self) -> dict[str, str]:
        """The header server.admin_auth asks for on /-/reload, /-/render and /api/v1/pages."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def get_json(self, session: aiohttp.ClientSession, url: str) -> Any:
        headers = self.admin if url.startswith(self.a2v_url) else None
        async with session.get(url, headers=headers) as resp:
            if resp.status == 503:
                raise StoreAnswered503(f"GET {url}: 503 {await resp.text()}")
            assert resp.status == 200, f"GET {url}: {resp.status} {await resp.text()}"
            return await resp.json()

    async def metrics(self, session: aiohttp.ClientSession) -> Samples:
        async with session.get(f"{self.a2v_url}/metrics") as resp:
            assert resp.status == 200
            return Samples.parse(await resp.text())

    async def pages(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        return (await self.get_json(session, f"{self.a2v_url}/api/v1/pages?limit=500"))["pages"]

    async def pages_for(self, session: aiohttp.ClientSession, alertname: str) -> list[dict[str, Any]]:
        """The pages whose alerts carry this alertname."""
        return [p for p in await self.pages(session)
                if any(a["labels"].get("alertname") == alertname for a in p["alerts"])]

    async def sim_calls(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        return await self.get_json(session, f"{self.sim_url}/_sim/calls")

    async def sim_requests(self, session: aiohttp.ClientSession, *, probes: bool = False) -> list[dict[str, Any]]:
        """The simulator's request log; without the service's health probes (provider/health.py) unless `probes`."""
        logged = await self.get_json(session, f"{self.sim_url}/_sim/requests")
        return [r for r in logged if probes or not r["path"].startswith(f"{CALLS_PATH}/{PROBE_PREFIX}")]

    async def script_number(self, session: aiohttp.ClientSession, number: str, script: dict[str, Any]) -> None:
        async with session.put(f"{self.sim_url}/_sim/numbers/{number}", json=script) as resp:
            assert resp.status == 200, await resp.text()

    def reset_simulator(self) -> None:
        req = urllib.request.Request(f"{self.sim_url}/_sim/reset", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 204


def alert2voice_config(*, port: int, sim_url: str, token: str, service_key: str, callback_token: str,
                       admin_token: str, number: str, caller_id: str, store: str, workdir: Path,
                       heartbeats: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """config.example.yaml cut down to the e2e needs: one paging route, one catch-all calling nobody (and the
    heartbeats given)."""
    store_cfg: dict[str, Any] = {"backend": store}
    if store == "sqlite":
        store_cfg["path"] = str(workdir / "alert2voice.db")
    return {
        "server": {"listen": f"{LOOPBACK}:{port}", "public_url": f"http://{LOOPBACK}:{port}",
                   "shutdown_grace": "2s", "admin_auth": {"bearer_tokens": [admin_token]}},
        "webhook_auth": {"bearer_tokens": [token]},
        "provider": {
            "type": "webex", "base_url": sim_url, "service_key": service_key, "caller_id": caller_id,
            "mode": "message",
            "callback": {"auth_id": "A2VE2E01", "bearer_token": callback_token, "deadline": "2m"},
            "timeout": "5s", "rate_limit": "50/s", "retry": {"initial": "200ms", "max": "2s", "give_up_after": "1m"},
        },
        "store": store_cfg,
        "dedup": {"window": "4h", "ignore_labels": ["replica", "prometheus_replica"]},
        "contacts": {"alice": {"number": number, "timezone": "UTC"}},
        "routes": [
            {"name": "payments-critical", "matchers": ['team="payments"', 'severity="critical"'],
             # A long interval: an unanswered call leaves the page active for the whole test.
             "escalation": [{"call": "alice", "attempts": 2, "interval": "3m"}],
             "send_resolved": True},
            {"name": "everything-else", "matchers": [], "escalation": []},
        ],
        # Every test calls the same number; the default carrier-safe tiers (3 per 15m) would defer calls.
        "throttle": {"per_number": [{"calls": 1000, "per": "1m"}], "global": {"calls": 1000, "per": "1m"}},
        **({"heartbeats": [dict(hb) for hb in heartbeats]} if heartbeats else {}),
    }


def start_stack(workdir: Path, logs: ProcessLogs, *, store: str, simulator_args: Sequence[str] = (),
                heartbeats: Sequence[Mapping[str, Any]] = (), tls: Mapping[str, str] | None = None,
                trust: ssl.SSLContext | None = None,
                configure: Callable[[dict[str, Any]], None] | None = None, serve_prefix: Sequence[str] = ()) -> Stack:
    """Start the simulator and `alert2voice serve` (over HTTPS with `tls`, readiness checked trusting `trust`);
    `configure` changes the config (a dict, as alert2voice_config() made it) before it is written; `serve_prefix`
    runs before `serve` (a shell setting a limit, say)."""
    token, service_key, callback_token, admin_token = (f"e2e-{os.urandom(12).hex()}" for _ in range(4))
    number, caller_id = "+14155550101", "+15550001234"
    sim_port, a2v_port = free_port(), free_port()
    sim_url, a2v_url = f"http://{LOOPBACK}:{sim_port}", f"http{'s' if tls else ''}://{LOOPBACK}:{a2v_port}"
    config = alert2voice_config(port=a2v_port, sim_url=sim_url, token=token, service_key=service_key,
                                callback_token=callback_token, admin_token=admin_token, number=number,
                                caller_id=caller_id, store=store, workdir=workdir, heartbeats=heartbeats)
    if tls:
        config["server"] |= {"tls": dict(tls), "public_url": a2v_url}
        if "client_ca_file" in tls:
            del config["webhook_auth"]  # the client certificate is the credential
    if configure is not None:
        configure(config)
    config_path = workdir / "alert2voice.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    stack = Stack(a2v_url=a2v_url, sim_url=sim_url, token=token, service_key=service_key,
                  callback_token=callback_token, admin_token=admin_token, number=number, caller_id=caller_id,
                  config_path=config_path, workdir=workdir, logs=logs)
    cmd = alert2voice_command()
    sim = Process("simulator", [*cmd, "simulator", "--listen", f"{LOOPBACK}:{sim_port}", "--service-key", service_key,
                                "--callback-auth", f"A2VE2E01=Authorization:Bearer {callback_token}",
                                "--callback-delay", "0.05", *simulator_args], workdir / "simulator.log")
    a2v = Process("alert2voice", [*serve_prefix, *cmd, "serve", "--config", str(config_path)], workdir / "alert2voice.log")
    for proc in (sim, a2v):
        stack.processes.append(proc)
        logs.processes.append(proc)
        proc.start()
    try:
        wait_http_ok(f"{sim_url}/_sim/calls", sim)
        wait_http_ok(f"{a2v_url}/-/ready", a2v, context=trust)
    except BaseException:
        stop_all(stack.processes)
        raise
    return stack


@contextlib.contextmanager
def running_stack(request: pytest.FixtureRequest, workdir: Path, *, store: str,
                  simulator_args: Sequence[str] = (), heartbeats: Sequence[Mapping[str, Any]] = (),
                  tls: Mapping[str, str] | None = None, trust: ssl.SSLContext | None = None,
                  configure: Callable[[dict[str, Any]], None] | None = None,
                  serve_prefix: Sequence[str] = ()) -> Iterator[Stack]:
    """The simulator and `alert2voice serve` for a fixture: started, logs attached to failing tests, stopped."""
    logs = ProcessLogs()
    request.config.pluginmanager.register(logs, f"e2e-process-logs-{id(logs)}")
    try:
        stack = start_stack(workdir, logs, store=store, simulator_args=simulator_args, heartbeats=heartbeats,
                            tls=tls, trust=trust, configure=configure, serve_prefix=serve_prefix)
        try:
            yield stack
        finally:
            stop_all(stack.processes)
    finally:
        request.config.pluginmanager.unregister(logs)


def stop_all(processes: Sequence[Process]) -> None:
    for proc in reversed(processes):
        proc.stop()


# ---------------------------------------------------------------------------------------- Alertmanager


@dataclass
class Alertmanager:
    """A real, unclustered Alertmanager on loopback whose only receiver is alert2voice."""

    url: str
    amtool: str
    process: Process

    async def post_alerts(self, session: aiohttp.ClientSession, alerts: list[dict[str, Any]]) -> None:
        async with session.post(f"{self.url}/api/v2/alerts", json=alerts) as resp:
            assert resp.status == 200, f"POST /api/v2/alerts: {resp.status} {await resp.text()}"

    async def fire(self, session: aiohttp.ClientSession, labels: Mapping[str, str],
                   annotations: Mapping[str, str] | None = None) -> None:
        # No endsAt: Alertmanager keeps the alert firing for resolve_timeout (5m), far longer than a test.
        await self.post_alerts(session, [{"labels": dict(labels), "annotations": dict(annotations or {})}])

    async def resolve(self, session: aiohttp.ClientSession, labels: Mapping[str, str],
                      annotations: Mapping[str, str] | None = None) -> None:
        # Same labels, only endsAt in the past: sending startsAt again would overwrite the original one.
        ended = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        await self.post_alerts(session, [{"labels": dict(labels), "annotations": dict(annotations or {}),
                                          "endsAt": ended}])

    async def silence(self, session: aiohttp.ClientSession, labels: Mapping[str, str], minutes: int = 10) -> str:
        """Silence the alerts with these labels (POST /api/v2/silences, as amtool silence add does); its id."""
        now = datetime.now(UTC)
        body = {"matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in labels.items()],
                "startsAt": now.isoformat().replace("+00:00", "Z"),
                "endsAt": (now + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
                "createdBy": "e2e", "comment": "working on it"}
        async with session.post(f"{self.url}/api/v2/silences", json=body) as resp:
            assert resp.status == 200, f"POST /api/v2/silences: {resp.status} {await resp.text()}"
            return (await resp.json())["silenceID"]

    async def amtool_add(self, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
        """`amtool alert add`, as an operator would fire a test alert."""
        argv = [self.amtool, "alert", "add", *(f"{k}={v}" for k, v in labels.items()),
                *(f"--annotation={k}={v}" for k, v in annotations.items()), f"--alertmanager.url={self.url}"]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}: {text}"
        return text


def alertmanager_config(webhook_url: str, token: str, tls_config: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One webhook receiver: the bearer token, or with `tls_config` (ca_file, cert_file, key_file) a client certificate."""
    http_config: dict[str, Any] = {"tls_config": dict(tls_config)} if tls_config else {
        "authorization": {"credentials": token}}
    # Short timers so that repeats (repeat_interval) happen within a test.
    return {
        "route": {"receiver": "voice", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "2s",
                  "repeat_interval": "3s"},
        "receivers": [{"name": "voice", "webhook_configs": [
            {"url": webhook_url, "send_resolved": True,
             "http_config": http_config}]}],
    }


def readme_alertmanager_config() -> dict[str, Any]:
    """The README's Alertmanager example: its one yaml block with both a `route` and `receivers`."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    found = [b for b in blocks if isinstance(b, dict) and {"route", "receivers"} <= b.keys()]
    assert len(found) == 1, "the README has one complete alertmanager.yml example"
    return found[0]


def start_alertmanager(workdir: Path, stack: Stack, name: str, tls_config: Mapping[str, str] | None = None,
                       config: Mapping[str, Any] | None = None, port: int | None = None) -> Alertmanager:
    """Start an unclustered Alertmanager (`--cluster.listen-address=` empty) and wait for /-/ready; its
    configuration is `config`, or else alertmanager_config()'s; on `port` when given (chosen before
    alert2voice started, which asks it about silences), else a free one."""
    binary, amtool = require_alertmanager()
    home = workdir / name
    home.mkdir()
    config_path = home / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(dict(config) if config is not None else
                                          alertmanager_config(f"{stack.a2v_url}/alerts", stack.token, tls_config)),
                           encoding="utf-8")
    port = port or free_port()
    url = f"http://{LOOPBACK}:{port}"
    proc = Process(name, [binary, f"--config.file={config_path}", f"--storage.path={home / 'data'}",
                          f"--web.listen-address={LOOPBACK}:{port}", "--cluster.listen-address=",
                          f"--web.external-url={url}"], home / "alertmanager.log")
    stack.logs.processes.append(proc)
    proc.start()
    try:
        wait_http_ok(f"{url}/-/ready", proc)
    except BaseException:
        proc.stop()
        raise
    return Alertmanager(url=url, amtool=amtool, process=proc)


@contextlib.contextmanager
def alertmanagers(workdir: Path, stack: Stack) -> Iterator[Callable[[str], Alertmanager]]:
    """A factory of Alertmanagers that are all stopped (and dropped from the logs) on exit."""
    started: list[Alertmanager] = []

    def start(name: str, config: Mapping[str, Any] | None = None) -> Alertmanager:
        am = start_alertmanager(workdir, stack, name, config=config)
        started.append(am)
        return am

    try:
        yield start
    finally:
        for am in started:
            am.process.stop()
            with contextlib.suppress(ValueError):
                stack.logs.processes.remove(am.process)


def dumps(obj: Any) -> str:
    """Compact JSON for assertion messages."""
    return json.dumps(obj, ensure_ascii=False)[:2000]


class StoreAnswered503(AssertionError):
    """alert2voice answered 503 (store unavailable, retry later) to a read."""


async def one_page(stack: Stack, http: aiohttp.ClientSession, alertname: str,
                   ready: Callable[[dict[str, Any]], bool], what: str, *, within: float = 20.0) -> dict[str, Any]:
    """Wait until the store (through this stack's alert2voice) holds exactly one page for this alertname and
    `ready(page)` holds."""
    async def probe() -> dict[str, Any] | None:
        try:
            pages = await stack.pages_for(http, alertname)
        except StoreAnswered503:
            return None  # "retry later", as while Redis comes back (a stale pooled connection fails once)
        assert len(pages) <= 1, f"more than one page for {alertname}: {dumps(pages)}"
        return pages[0] if pages and ready(pages[0]) else None

    try:
        return await eventually(probe, f"{what} ({alertname})", within=within)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; pages: {dumps(await stack.pages_for(http, alertname))}") from None
