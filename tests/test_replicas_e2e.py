"""Two `serve` replicas on one real redis-server behave as one: real processes on loopback, end to end.

Every test starts its own redis-server (appendonly, appendfsync always), the simulator, two
`alert2voice serve` processes sharing that Redis and, where Alertmanager sends the alerts, one
unclustered real Alertmanager per replica (an HA pair that does not gossip: both send every group).
Escalation intervals are real but short (3s); nothing sleeps for them: the tests poll the processes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e_support import (
    LOOPBACK,
    Alertmanager,
    Process,
    ProcessLogs,
    Samples,
    Stack,
    alert2voice_command,
    alert2voice_config,
    dumps,
    eventually,
    free_port,
    in_ci,
    one_page,
    require_alertmanager,
    skip_or_fail,
    start_alertmanager,
    stop_all,
    wait_http_ok,
)
from tests.redis_support import RedisServer, redis_server_in
from tests.support import alert, payload

pytestmark = pytest.mark.e2e

ALICE, BOB = "+14155550101", "+14155550102"
ROUTE = "payments-critical"
STEP_INTERVAL = timedelta(seconds=3)  # alice, then bob after this if alice did not answer
ON_TIME = timedelta(seconds=5)  # how late after its due time a step may be placed and still be on time
MESSAGES = "/v1/voice/messages"
# Plenty for one test, none of them deferred; test_the_per_number_tier_holds_across_replicas sets 3 per 15m.
NO_THROTTLE: dict[str, Any] = {"per_number": [{"calls": 1000, "per": "1m"}], "global": {"calls": 1000, "per": "1m"}}


# ------------------------------------------------------------------------------------------- the pair


@dataclass
class Replicas:
    """The simulator and two `serve` replicas on one Redis: replicas[i] is a Stack of its own (same secrets)."""

    workdir: Path
    logs: ProcessLogs
    simulator: Process
    replicas: list[Stack]
    envs: Sequence[Mapping[str, str] | None] = (None, None)  # each replica's environment (None: this one's)
    alertmanagers: list[Alertmanager] = field(default_factory=list)

    @property
    def sim(self) -> Stack:
        """Either replica's Stack: its sim_* helpers read the one simulator."""
        return self.replicas[0]

    def serve(self, i: int) -> Process:
        return self.replicas[i].processes[-1]

    def start_serve(self, i: int, name: str) -> Process:
        """Start replica i's `serve` process on its config (again, after a kill) and wait until it is ready."""
        stack = self.replicas[i]
        env = self.envs[i]
        proc = Process(name, [*alert2voice_command(), "serve", "--config", str(stack.config_path)],
                       self.workdir / f"{name}.log", env=dict(env) if env is not None else None)
        stack.processes.append(proc)
        self.logs.processes.append(proc)
        proc.start()
        wait_http_ok(f"{stack.a2v_url}/-/ready", proc)
        return proc

    def kill_9(self, i: int) -> None:
        """SIGKILL replica i: no drain, no release of what it holds."""
        proc = self.serve(i)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.popen is not None
        proc.popen.wait()

    def start_alertmanagers(self) -> list[Alertmanager]:
        """One unclustered Alertmanager per replica, each sending only to its own replica."""
        for i, stack in enumerate(self.replicas):
            self.alertmanagers.append(start_alertmanager(self.workdir, stack, f"am-{'ab'[i]}"))
        return self.alertmanagers

    def stop(self) -> None:
        stop_all([am.process for am in self.alertmanagers])
        for stack in self.replicas:
            stop_all(stack.processes)
        self.simulator.stop()


def replica_config(base: dict[str, Any], *, port: int, public_port: int, redis: RedisServer, prefix: str,
                   throttle: dict[str, Any], provider_timeout: str) -> dict[str, Any]:
    """The e2e config on the shared Redis: this replica's listener, the public_url the provider calls back."""
    config = {**base, "server": {**base["server"], "listen": f"{LOOPBACK}:{port}",
                                 "public_url": f"http://{LOOPBACK}:{public_port}"}}
    config["provider"] = {**base["provider"], "timeout": provider_timeout}
    config["store"] = {"backend": "redis", "url": redis.url, "key_prefix": prefix}
    config["contacts"] = {"alice": {"number": ALICE, "timezone": "UTC"}, "bob": {"number": BOB, "timezone": "UTC"}}
    config["routes"] = [
        {"name": ROUTE, "matchers": ['team="payments"', 'severity="critical"'],
         "escalation": [{"call": "alice", "attempts": 1, "interval": f"{STEP_INTERVAL.seconds}s"}, {"call": "bob"}]},
        {"name": "everything-else", "matchers": [], "escalation": []},
    ]
    config["throttle"] = throttle
    return config


def start_replicas(workdir: Path, logs: ProcessLogs, redis: RedisServer, *, cross_callbacks: bool,
                   throttle: dict[str, Any], provider_timeout: str, extra: Mapping[str, Any] | None = None,
                   envs: Sequence[Mapping[str, str] | None] = (None, None)) -> Replicas:
    """The simulator and two replicas; with `cross_callbacks` each one's public_url is the other's address. `extra`
    replaces top-level sections of both configs; `envs` are the replicas' environments."""
    token, service_key, callback_token, admin_token = (f"e2e-{os.urandom(12).hex()}" for _ in range(4))
    sim_port, ports = free_port(), [free_port(), free_port()]
    sim_url = f"http://{LOOPBACK}:{sim_port}"
    base = alert2voice_config(port=ports[0], sim_url=sim_url, token=token, service_key=service_key,
                              callback_token=callback_token, admin_token=admin_token, number=ALICE,
                              caller_id="+15550001234", store="memory", workdir=workdir)
    prefix = f"e2e{os.urandom(4).hex()}:"
    stacks = []
    for i, port in enumerate(ports):
        public = ports[1 - i] if cross_callbacks else port
        config = replica_config(base, port=port, public_port=public, redis=redis, prefix=prefix,
                                throttle=throttle, provider_timeout=provider_timeout) | dict(extra or {})
        path = workdir / f"replica-{'ab'[i]}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        stacks.append(Stack(a2v_url=f"http://{LOOPBACK}:{port}", sim_url=sim_url, token=token, service_key=service_key,
                            callback_token=callback_token, admin_token=admin_token, number=ALICE,
                            caller_id="+15550001234", config_path=path, workdir=workdir, logs=logs))
    sim = Process("simulator", [*alert2voice_command(), "simulator", "--listen", f"{LOOPBACK}:{sim_port}",
                                "--service-key", service_key,
                                "--callback-auth", f"A2VE2E01=Authorization:Bearer {callback_token}",
                                "--callback-delay", "0.05"], workdir / "simulator.log")
    logs.processes.append(sim)
    pair = Replicas(workdir, logs, sim.start(), stacks, envs)
    try:
        wait_http_ok(f"{sim_url}/_sim/calls", sim)
        for i in range(2):
            pair.start_serve(i, f"replica-{'ab'[i]}")
    except BaseException:
        pair.stop()
        raise
    return pair


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (one test stops and restarts it)."""
    with redis_server_in(tmp_path / "redis") as server:
        yield server


@contextlib.contextmanager
def replica_pairs(request: pytest.FixtureRequest, tmp_path: Path,
                  redis: RedisServer) -> Iterator[Callable[..., Replicas]]:
    """A starter of pairs (keyword arguments as start_replicas'), all stopped on exit; their logs go with a
    failing test's report."""
    logs = ProcessLogs()
    request.config.pluginmanager.register(logs, f"e2e-replica-logs-{id(logs)}")
    started: list[Replicas] = []

    def start(*, cross_callbacks: bool = False, throttle: dict[str, Any] = NO_THROTTLE,
              provider_timeout: str = "5s", extra: Mapping[str, Any] | None = None,
              envs: Sequence[Mapping[str, str] | None] = (None, None)) -> Replicas:
        started.append(start_replicas(tmp_path, logs, redis, cross_callbacks=cross_callbacks, throttle=throttle,
                                      provider_timeout=provider_timeout, extra=extra, envs=envs))
        return started[-1]

    try:
        yield start
    finally:
        for pair in started:
            pair.stop()
        request.config.pluginmanager.unregister(logs)


@pytest.fixture
def replicas(request: pytest.FixtureRequest, tmp_path: Path,
             redis: RedisServer) -> Iterator[Callable[..., Replicas]]:
    """Start the pair (keyword arguments as start_replicas'); its logs go with a failing test's report."""
    if not in_ci():
        require_alertmanager()  # skips before starting anything; in CI the test fails instead
    with replica_pairs(request, tmp_path, redis) as start:
        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


# ---------------------------------------------------------------------------------------------- helpers


def payments(alertname: str) -> dict[str, str]:
    return {"alertname": alertname, "team": "payments", "severity": "critical"}


def webhook(alertname: str) -> dict[str, Any]:
    """The webhook Alertmanager sends for this alert's group (group_by alertname): the same page key."""
    return payload(alert(payments(alertname)), group_key=f'{{}}:{{alertname="{alertname}"}}')


async def post_webhook(http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]) -> tuple[int, Any, float]:
    """POST /alerts as Alertmanager would; (status, body, seconds it took)."""
    start = time.monotonic()
    async with http.post(f"{stack.a2v_url}/alerts", json=body,
                         headers={"Authorization": f"Bearer {stack.token}"}) as resp:
        answer = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, answer, time.monotonic() - start


async def listed(http: aiohttp.ClientSession, stack: Stack) -> list[dict[str, Any]]:
    """The replica's /api/v1/pages, empty while it answers 503 (the store failing it: see the test's checks)."""
    async with http.get(f"{stack.a2v_url}/api/v1/pages?limit=500", headers=stack.admin) as resp:
        if resp.status == 503:
            return []
        assert resp.status == 200, f"/api/v1/pages: {resp.status} {await resp.text()}"
        return (await resp.json())["pages"]


async def ready_status(http: aiohttp.ClientSession, stack: Stack) -> int:
    async with http.get(f"{stack.a2v_url}/-/ready") as resp:
        return resp.status


async def placed(http: aiohttp.ClientSession, stack: Stack) -> float:
    """How many calls this replica placed: the provider's 202s it counted."""
    return (await stack.metrics(http)).sum("alert2voice_provider_requests_total", code="202")


async def accepted_messages(http: aiohttp.ClientSession, stack: Stack) -> list[dict[str, Any]]:
    """The simulator's POST /v1/voice/messages requests it answered 202."""
    return [r for r in await stack.sim_requests(http)
            if (r["method"], r["path"], r["status"]) == ("POST", MESSAGES, 202)]


async def calls_of(http: aiohttp.ClientSession, stack: Stack, page: dict[str, Any]) -> list[dict[str, Any]]:
    """The simulator's calls whose correlationId belongs to this page."""
    prefix = f"a2v-{page['key'][:24]}-"
    return [c for c in await stack.sim_calls(http) if c["correlation_id"].startswith(prefix)]


def first_call_unanswered(page: dict[str, Any]) -> bool:
    return [c["state"] for c in page["calls"]] == ["no_answer"] and page["due_at"] is not None


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------------------------ tests


PAGES = 100


async def test_two_replicas_behind_two_alertmanagers_place_one_call_per_page(replicas, http) -> None:
    pair = replicas(cross_callbacks=True)
    a, b = pair.replicas
    names = [f"HAOneCall{i:03d}" for i in range(PAGES)]
    alerts = [{"labels": payments(n), "annotations": {"summary": f"one call {n}"}} for n in names]
    for am in pair.start_alertmanagers():
        await am.post_alerts(http, alerts)

    async def every_page_answered() -> list[dict[str, Any]] | None:
        pages = [p for p in await listed(http, a) if p["alerts"][0]["labels"]["alertname"] in names]
        return pages if len(pages) == PAGES and all(p["state"] == "answered" for p in pages) else None

    pages = await eventually(every_page_answered, f"{PAGES} pages answered", within=40)

    async def both_sent_every_group() -> list[Samples] | None:
        samples = [await stack.metrics(http) for stack in (a, b)]
        duplicates = sum(m.sum("alert2voice_pages_total", route=ROUTE, result="duplicate") for m in samples)
        return samples if duplicates >= PAGES else None

    # Both Alertmanagers sent every group: one replica admitted it, the other (or a resend) found a duplicate.
    samples = await eventually(both_sent_every_group, "the second webhook of every group")
    assert sum(m.sum("alert2voice_pages_total", route=ROUTE, result="called") for m in samples) == PAGES
    # Every attempt was sent once, by one replica (the simulator's request list, whatever it answered).
    sent = [r for r in await pair.sim.sim_requests(http) if (r["method"], r["path"]) == ("POST", MESSAGES)]
    per_id = collections.Counter(r["body"]["correlationId"] for r in sent)
    twice = [(r["body"]["correlationId"], r["body"]["callbackUrl"], r["status"]) for r in sent
             if per_id[r["body"]["correlationId"]] > 1]
    assert len(per_id) == PAGES and not twice, f"attempts sent more than once (id, callbackUrl, status): {twice}"
    calls = await pair.sim.sim_calls(http)
    assert len(calls) == PAGES and {c["dialed_number"] for c in calls} == {ALICE}, "a second step was called"
    assert {c["correlation_id"] for c in calls} == {p["calls"][0]["correlation_id"] for p in pages}
    for page in pages:
        assert [(c["contact"], c["state"]) for c in page["calls"]] == [("alice", "answered")], dumps(page)

    # Each replica's public_url is the other's address, and an attempt's request is frozen by the replica that
    # created it (here: admitted the page), whichever then placed it: a page admitted by A is called back on B.
    placed_by = {stack.a2v_url: await placed(http, stack) for stack in (a, b)}
    assert sum(placed_by.values()) == PAGES, placed_by
    admitted_by = {stack.a2v_url: m.sum("alert2voice_pages_total", route=ROUTE, result="called")
                   for stack, m in zip((a, b), samples, strict=True)}
    called_back = {a.a2v_url: f"{b.a2v_url}/callbacks/webex", b.a2v_url: f"{a.a2v_url}/callbacks/webex"}
    for admitter, url in called_back.items():
        assert sum(c["callback_url"] == url for c in calls) == admitted_by[admitter], (admitter, admitted_by)
    callbacks = await pair.sim.get_json(http, f"{pair.sim.sim_url}/_sim/callbacks")
    assert callbacks and all(cb["status"] == 200 for cb in callbacks), dumps([c for c in callbacks
                                                                             if c["status"] != 200])
    # No call needed its status polled: the receipts, taken by the other replica, ended every escalation.
    assert not [r for r in await pair.sim.sim_requests(http) if r["method"] == "GET"]
    # Redis was up all along: no webhook of the burst (each Alertmanager sends its groups at once) was refused.
    refused = [m.sum("alert2voice_webhooks_total", result="unavailable") for m in samples]
    assert refused == [0, 0], f"webhooks answered 503 with Redis up (replica A, B): {refused}"


async def test_the_per_number_tier_holds_across_replicas(replicas, http) -> None:
    # max_hold past the window: the tier's holds are what is tested here, not the move to bob past max_hold
    # (tests/test_dispatcher.py has that).
    pair = replicas(throttle={"per_number": [{"calls": 3, "per": "15m"}], "global": {"calls": 1000, "per": "1m"},
                              "max_hold": "20m"})
    names = [f"HATier{i}" for i in range(6)]
    am_a, am_b = pair.start_alertmanagers()
    for i, name in enumerate(names):  # three groups to each replica
        await (am_a, am_b)[i % 2].fire(http, payments(name), {"summary": f"tier {name}"})

    def split(pages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        mine = [p for p in pages if p["alerts"][0]["labels"]["alertname"] in names]
        called = [p for p in mine if p["calls"] and p["calls"][0]["state"] == "answered"]
        later = datetime.now(UTC) + timedelta(minutes=10)  # a new page is queued too, but due now
        deferred = [p for p in mine if [c["state"] for c in p["calls"]] == ["queued"]
                    and p["due_at"] and at(p["due_at"]) > later]
        return (called, deferred) if len(mine) == 6 and len(called) + len(deferred) == 6 else None

    async def settled() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        return split(await pair.replicas[0].pages(http))

    called, deferred = await eventually(settled, "six pages, each called or deferred")
    assert len(called) == 3, dumps(called)
    window_ends = min(at(c["accepted_at"]) for p in called for c in p["calls"]) + timedelta(minutes=15)
    for page in deferred:  # due again when the oldest of the three calls leaves the 15 minutes
        assert page["state"] == "active", dumps(page)
        assert window_ends - timedelta(seconds=1) <= at(page["due_at"]) <= window_ends + ON_TIME, dumps(page)
    # Admitted on both replicas, and either lists all six: none dropped.
    for stack in pair.replicas:
        assert split(await stack.pages(http)) is not None, stack.a2v_url
        samples = await stack.metrics(http)
        assert samples.sum("alert2voice_pages_total", route=ROUTE, result="called") >= 1, stack.a2v_url
    assert len(await pair.sim.sim_calls(http)) == 3
    assert len(await accepted_messages(http, pair.sim)) == 3


async def test_a_replica_killed_mid_escalation_the_other_places_the_next_step_once(replicas, http) -> None:
    # Each replica is its own public_url: the receipts of alice's call reach the replica that placed it, so the
    # survivor learns that the next step is due from the store alone. A short provider timeout keeps the
    # dispatcher's leases short (they are sized from it).
    pair = replicas(provider_timeout="2s")
    await pair.sim.script_number(http, ALICE, {"outcome": "no_answer"})
    for am in pair.start_alertmanagers():
        await am.fire(http, payments("HAKilled"), {"summary": "killed mid-escalation"})
    page = await one_page(pair.replicas[0], http, "HAKilled", first_call_unanswered, "alice not answering")
    by = [await placed(http, stack) for stack in pair.replicas]
    assert sorted(by) == [0, 1], by
    killed = by.index(1)
    survivor = pair.replicas[1 - killed]
    due = at(page["due_at"])
    pair.kill_9(killed)
    assert datetime.now(due.tzinfo) < due, "the kill came after the step was due"

    async def bob_called() -> list[dict[str, Any]] | None:
        calls = [c for c in await calls_of(http, survivor, page) if c["dialed_number"] == BOB]
        return calls or None

    # Waiting past ON_TIME only tells how late it was; twice that bounds the wait.
    until = (due + 2 * ON_TIME - datetime.now(due.tzinfo)).total_seconds()
    [second] = await eventually(bob_called, "the survivor to call bob, the second step", within=until)
    late = at(second["accepted_time"]) - due
    assert timedelta(0) <= late <= ON_TIME, f"the second step was placed {late.total_seconds():.1f}s after it was due"
    assert await placed(http, survivor) == 1
    page = await one_page(survivor, http, "HAKilled", lambda p: p["state"] == "answered", "bob answering")
    assert [(c["contact"], c["state"]) for c in page["calls"]] == [("alice", "no_answer"), ("bob", "answered")]

    # The killed replica comes back: it takes work again (a new page is called) and adds no call to the old one.
    restarted = pair.replicas[killed]
    pair.start_serve(killed, f"replica-{'ab'[killed]}-restarted")
    status, answer, _ = await post_webhook(http, restarted, webhook("HAAfterRestart"))
    assert status == 200 and answer["pages"][0]["result"] == "called", answer

    async def restarted_placed() -> float:
        return await placed(http, restarted)

    await eventually(restarted_placed, "the restarted replica to place the new page's call")
    calls = await calls_of(http, survivor, page)
    assert [c["dialed_number"] for c in calls] == [ALICE, BOB], dumps(calls)
    ids = collections.Counter(r["body"]["correlationId"] for r in await accepted_messages(http, pair.sim))
    assert [ids[c["correlation_id"]] for c in calls] == [1, 1], ids


async def test_redis_stopped_and_started_again_from_its_aof(replicas, redis: RedisServer, http) -> None:
    pair = replicas()
    await pair.sim.script_number(http, ALICE, {"outcome": "no_answer"})
    for am in pair.start_alertmanagers():
        await am.fire(http, payments("HABeforeOutage"), {"summary": "paged before the outage"})
    page = await one_page(pair.replicas[0], http, "HABeforeOutage", first_call_unanswered, "alice not answering")
    due = at(page["due_at"])

    redis.stop()
    for stack in pair.replicas:
        status, answer, seconds = await post_webhook(http, stack, webhook("HADuringOutage"))
        assert status == 503 and seconds < 2.0, (status, answer, f"{seconds:.2f}s")

    async def neither_ready() -> bool:
        return all([await ready_status(http, stack) == 503 for stack in pair.replicas])

    await eventually(neither_ready, "/-/ready false on both replicas", within=5)

    redis.start()
    deadline = time.monotonic() + 10  # accepting again within 10s of the restart
    for stack in pair.replicas:
        async def resend_accepted(stack: Stack = stack) -> Any:
            status, answer, _ = await post_webhook(http, stack, webhook("HABeforeOutage"))
            return answer if status == 200 else None

        answer = await eventually(resend_accepted, "the resend accepted after Redis restarted",
                                  within=deadline - time.monotonic())
        assert [p["result"] for p in answer["pages"]] == ["duplicate"], answer

    async def both_ready() -> bool:
        return all([await ready_status(http, stack) == 200 for stack in pair.replicas])

    await eventually(both_ready, "/-/ready true on both replicas", within=deadline - time.monotonic())
    back = datetime.now(UTC)

    # The page accepted before the outage is escalated: its second step, bob, is called once.
    page = await one_page(pair.replicas[1], http, "HABeforeOutage", lambda p: p["state"] == "answered",
                            "bob answering after the outage")
    assert [(c["contact"], c["state"]) for c in page["calls"]] == [("alice", "no_answer"), ("bob", "answered")]
    calls = await calls_of(http, pair.sim, page)
    assert [c["dialed_number"] for c in calls] == [ALICE, BOB], dumps(calls)
    # The escalation timer survived the restart: the step went out when due (or as soon as Redis was back).
    late = at(calls[1]["accepted_time"]) - max(due, back)
    assert late <= ON_TIME, f"the second step was placed {late.total_seconds():.1f}s late"
    assert await pair.replicas[0].pages_for(http, "HADuringOutage") == []


# ------------------------------------------------------------------------- a replica's wall clock 30s ahead


SKEW = 30.0  # seconds replica B's wall clock runs ahead (libfaketime); more than a lease and a heartbeat's timeout
CLOCK_STEP = timedelta(seconds=8)  # alice, then bob after this
EARLY = timedelta(seconds=2)  # how much before its interval a step may go and still count as on time
BEATS = {"via-a": 0, "via-b": 1}  # heartbeat name -> the replica it is refreshed through
BEAT_TIMEOUT, BEAT_EVERY = 6, 2.0  # seconds


def faketime_env(offset: float) -> dict[str, str]:
    """This environment plus what `faketime -f +OFFSETs` gives a program (libfaketime preloaded), the monotonic
    clock left alone. The process is started with it directly: the faketime wrapper stays in between and does not
    pass SIGTERM on to its child. Checked: Python started with it sees time.time() shifted."""
    binary = shutil.which("faketime")
    if binary is None:
        skip_or_fail("faketime not on PATH: a replica whose wall clock is wrong runs under libfaketime; `make test` "
                     "installs Debian's faketime (or: apt-get install faketime)")
    show = "import json, os; print(json.dumps({k: os.environ[k] for k in ('LD_PRELOAD', 'FAKETIME')}))"
    given = json.loads(subprocess.run([binary, "-f", f"+{offset:g}s", sys.executable, "-c", show], check=True,
                                      capture_output=True, text=True, timeout=30).stdout)
    env = {**os.environ, **given, "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    probe = "import datetime, time; print(time.time(), datetime.datetime.now(datetime.UTC).timestamp())"
    before = time.time()
    seen = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True,
                          timeout=30).stdout.split()
    shifts = [float(t) - before for t in seen]
    assert all(offset - 1 < s < offset + 5 for s in shifts), f"libfaketime did not shift Python's time: {shifts}"
    return env


async def refresh_heartbeats(http: aiohttp.ClientSession, pair: Replicas, rounds: int) -> None:
    """POST every heartbeat through its replica, `rounds` times BEAT_EVERY seconds apart, as a sender would."""
    for n in range(rounds):
        for name, i in BEATS.items():
            stack = pair.replicas[i]
            async with http.post(f"{stack.a2v_url}/heartbeats/{name}",
                                 headers={"Authorization": f"Bearer {stack.token}"}) as resp:
                assert resp.status == 200, f"POST /heartbeats/{name}: {resp.status} {await resp.text()}"
        if n < rounds - 1:
            await asyncio.sleep(BEAT_EVERY)


async def test_a_replica_whose_wall_clock_is_30s_ahead_keeps_the_others_leases_intervals_and_heartbeats(
        replicas, http) -> None:
    heartbeats = [{"name": name, "matchers": [f'alertname="ClockBeat{name}"'], "timeout": f"{BEAT_TIMEOUT}s",
                   "escalation": [{"call": "alice"}]} for name in BEATS]
    routes = [{"name": ROUTE, "matchers": ['team="payments"', 'severity="critical"'],
               "escalation": [{"call": "alice", "attempts": 1, "interval": f"{CLOCK_STEP.seconds}s"}, {"call": "bob"}]},
              {"name": "everything-else", "matchers": [], "escalation": []}]
    # A short provider timeout makes the leases short (2 x 3s + 5s = 11s): well within B's 30s of skew.
    pair = replicas(provider_timeout="3s", extra={"routes": routes, "heartbeats": heartbeats},
                    envs=(None, faketime_env(SKEW)))
    a, b = pair.replicas
    skews = [(await stack.metrics(http)).get("alert2voice_clock_skew_seconds") for stack in (a, b)]
    assert abs(skews[0]) < 1 and abs(skews[1] - SKEW) < 2, f"measured skew of A, B: {skews}"

    # Refreshed for three timeouts, through A and through B, while the pages escalate.
    beating = asyncio.create_task(refresh_heartbeats(http, pair, rounds=int(3 * BEAT_TIMEOUT / BEAT_EVERY) + 1))
    try:
        # Each attempt's request takes 1.5s: attempts are in flight, under their placer's lease, when the other
        # replica looks at the due work.
        await pair.sim.script_number(http, ALICE, {"outcome": "no_answer", "delay": 1.5})
        await pair.sim.script_number(http, BOB, {"outcome": "answer", "delay": 1.5})
        names = [f"ClockSkew{i}" for i in range(10)]
        for i, name in enumerate(names):
            status, answer, _ = await post_webhook(http, pair.replicas[i % 2], webhook(name))
            assert status == 200 and answer["pages"][0]["result"] == "called", answer

        async def every_page_answered() -> list[dict[str, Any]] | None:
            pages = [p for p in await listed(http, a) if p["alerts"][0]["labels"]["alertname"] in names]
            return pages if len(pages) == len(names) and all(p["state"] == "answered" for p in pages) else None

        pages = await eventually(every_page_answered, "every page answered by bob", within=40)
        await beating
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating

    # No attempt was sent twice: neither replica took a page the other held.
    sent = collections.Counter(r["body"]["correlationId"] for r in await pair.sim.sim_requests(http)
                               if (r["method"], r["path"]) == ("POST", MESSAGES))
    assert len(sent) == 2 * len(names) and set(sent.values()) == {1}, f"attempts sent more than once: {sent}"
    # No step went early: bob was called no sooner than the interval after alice (by the simulator's clock).
    for page in pages:
        assert [(c["contact"], c["state"]) for c in page["calls"]] == [("alice", "no_answer"), ("bob", "answered")]
        alice, bob = sorted(await calls_of(http, pair.sim, page), key=lambda c: c["accepted_time"])
        gap = at(bob["accepted_time"]) - at(alice["accepted_time"])
        assert gap >= CLOCK_STEP - EARLY, f"bob called {gap.total_seconds():.1f}s after alice: {dumps(page)}"
    # Neither heartbeat was missing on either replica, whichever replica it was refreshed through.
    for stack in (a, b):
        samples = await stack.metrics(http)
        assert [samples.get("alert2voice_heartbeat_up", heartbeat=name) for name in BEATS] == [1, 1], stack.a2v_url
    outages = [p for p in await a.pages(http) if p["route"].startswith("heartbeat:")]
    assert not outages, f"heartbeat pages opened: {dumps(outages)}"
    assert len(await pair.sim.sim_calls(http)) == 2 * len(names)
