"""Heartbeats (the dead-man's switch) with the injected clock: arming, missing, paging once, resolving."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from alert2voice.admission import Admission
from alert2voice.alertmanager import parse_payload
from alert2voice.config import Config
from alert2voice.config_file import ConfigError
from alert2voice.heartbeats import Heartbeats, heartbeat_of, outage_page
from alert2voice.live import LiveConfig
from alert2voice.metrics import Metrics
from alert2voice.pages import CallState, PageState
from alert2voice.routing import plan
from alert2voice.store.memory import MemoryStore
from alert2voice.web.keys import DISPATCHER, LIVE
from alert2voice.web.keys import HEARTBEATS as HEARTBEATS_KEY
from tests.harness import AUTH, config_changes
from tests.support import CONFIG, PAYMENTS, FakeClock, alert, make_config, payload, settle
from tests.test_dispatcher import make_dispatcher
from tests.test_speech import spoken

HEARTBEATS = """
heartbeats:
  - name: alertmanager-watchdog
    matchers: ['alertname="Watchdog"']
    timeout: 6s
    escalation: [{call: bob, attempts: 1, interval: 1m}]
  - name: nightly-backup
    timeout: 1h
    escalation: [{call: alice}]
"""
WATCHDOG = {"alertname": "Watchdog", "severity": "none", "prometheus": "monitoring/k8s"}
BOB = "+442071838750"


def config_with(heartbeats: str = HEARTBEATS, **replace: str) -> Config:
    return make_config(CONFIG + heartbeats, **replace)


class Replica:
    """One replica's dispatcher, admission and heartbeat watcher, on a store it may share with others."""

    def __init__(self, config: Config, *, store: MemoryStore | None = None, clock: FakeClock | None = None) -> None:
        self.config = config
        self.dispatcher, self.store, self.provider, self.clock = make_dispatcher(
            config, store=store, clock=clock)
        self.dispatcher.ctx.config = lambda: self.config  # a reload swaps self.config
        metrics = self.dispatcher.metrics
        self.admission = Admission(LiveConfig(config, metrics), self.store, metrics, self.dispatcher)
        self.heartbeats = Heartbeats(config=lambda: self.config, store=self.store, dispatcher=self.dispatcher,
                                     metrics=metrics, resolve=self.admission.resolve, clock=self.clock)
        self.task: asyncio.Task[None] | None = None

    async def settle(self) -> None:
        """Let the watcher open what is missing now, then the dispatcher place what is due now."""
        if self.task is None:
            self.task = asyncio.create_task(self.heartbeats.run())
        await self.heartbeats.settled()
        await settle(self.dispatcher)

    async def stop(self) -> None:
        if self.task is not None:
            self.heartbeats.stopping = True
            self.heartbeats.poke()
            await asyncio.wait_for(self.task, 5)

    async def refresh(self, name: str = "alertmanager-watchdog") -> int:
        return await self.heartbeats.refresh(name, self.clock.now())

    def calls(self, kind: str = "page") -> list:
        return [r for r in self.provider.requests if ("-r" in r.correlation_id) == (kind == "resolved")]


@pytest.fixture
async def replica():
    r = Replica(config_with())
    yield r
    await r.stop()


async def heartbeat_pages(store: MemoryStore) -> list:
    return [p for p in await store.recent(100) if heartbeat_of(p) is not None]


# ------------------------------------------------------------------------------------------- the check


async def test_refreshed_no_call_stopped_one_call_speaking_its_name_resumed_resolved(replica):
    for _ in range(10):  # refreshed every second for 10 s, timeout 6s
        await replica.refresh()
        replica.clock.advance(1)
        await replica.settle()
    assert replica.provider.requests == []
    last_refresh = replica.clock.now() - timedelta(seconds=1)
    while not replica.provider.requests and replica.clock.now() - last_refresh < timedelta(seconds=11):
        replica.clock.advance(1)
        await replica.settle()
    [request] = replica.provider.requests
    assert replica.clock.now() - last_refresh <= timedelta(seconds=6 + 5)
    assert request.dialed_number == BOB
    spoken = "".join(ET.fromstring(request.audio.text).itertext())
    assert "No heartbeat from alertmanager-watchdog within 6 seconds" in spoken
    [page] = await heartbeat_pages(replica.store)
    assert page.route == "heartbeat:alertmanager-watchdog" and page.state is PageState.ACTIVE
    # Refreshes resume: the page resolves, and nothing more is placed however long we wait.
    assert await replica.refresh() == 1
    for _ in range(5):
        replica.clock.advance(timedelta(minutes=1))
        await replica.refresh()
        await replica.settle()
    assert len(replica.provider.requests) == 1
    [page] = await heartbeat_pages(replica.store)
    assert page.state is PageState.RESOLVED


async def test_a_heartbeat_never_seen_never_pages(replica):
    replica.clock.advance(timedelta(days=2))
    await replica.settle()
    assert replica.provider.requests == [] and await heartbeat_pages(replica.store) == []


async def test_a_refresh_from_another_replica_counts(replica):
    other = Replica(replica.config, store=replica.store, clock=replica.clock)
    await replica.refresh()
    for _ in range(4):  # the other replica is the one fed; this one only watches
        replica.clock.advance(5)
        await other.refresh()
        await replica.settle()
    assert replica.provider.requests == []
    replica.clock.advance(6)
    await replica.settle()
    assert len(replica.provider.requests) == 1


async def test_send_resolved_calls_whoever_was_called_once_the_heartbeat_is_back():
    replica = Replica(config_with(HEARTBEATS.replace("interval: 1m}]", "interval: 1m}]\n    send_resolved: true", 1)))
    try:
        await replica.refresh()
        replica.clock.advance(6)
        await replica.settle()
        assert len(replica.calls()) == 1
        await replica.refresh()
        await replica.settle()
        [resolved] = replica.calls("resolved")
        assert resolved.dialed_number == BOB
        assert len(replica.provider.requests) == 2
    finally:
        await replica.stop()


async def test_the_calls_say_how_long_the_heartbeat_has_been_silent_and_how_long_it_was_out():
    # Timeout 5m; the last refresh, then silence for 5.5 minutes: the page opens at 5 minutes, a refresh at 5.5
    # resolves it. Its alert starts at the last refresh, so the firing call says the silence so far and the
    # resolved call (queued by the refresh) how long it was out, not "less than a minute".
    timeout_5m = HEARTBEATS.replace("timeout: 6s", "timeout: 5m", 1)
    replica = Replica(config_with(timeout_5m.replace("interval: 1m}]", "interval: 1m}]\n    send_resolved: true", 1)))
    try:
        await replica.refresh()
        replica.clock.advance(timedelta(minutes=5))
        await replica.settle()
        replica.clock.advance(timedelta(seconds=30))
        await replica.refresh()
        await replica.settle()
        [firing], [resolved] = replica.calls(), replica.calls("resolved")
    finally:
        await replica.stop()
    said = "No heartbeat from alertmanager-watchdog within 5 minutes."
    route = "Route heartbeat:alertmanager watchdog."
    assert spoken(firing.audio.text) == (
        f"Heartbeat Missing: {said} Firing for 5 minutes. {route} Again: Heartbeat Missing: {said}")
    assert spoken(resolved.audio.text) == (
        f"Resolved: Heartbeat Missing: {said} {route} It lasted for 5 minutes. Again: Resolved: Heartbeat Missing: "
        f"{said}")


async def test_a_refresh_cancels_the_call_not_yet_placed(replica):
    replica.provider.gate = asyncio.Event()  # the provider does not answer: the call stays queued
    await replica.refresh()
    replica.clock.advance(6)
    await replica.heartbeats.check(replica.clock.now())
    [page] = await heartbeat_pages(replica.store)
    assert [c.state for c in page.calls] == [CallState.QUEUED]
    await replica.refresh()
    replica.provider.gate.set()
    await replica.settle()
    [page] = await heartbeat_pages(replica.store)
    assert page.state is PageState.RESOLVED
    assert [c.state for c in page.calls] == [CallState.CANCELLED]
    assert replica.provider.requests == []


async def test_each_outage_is_a_page_of_its_own(replica):
    for _ in range(2):
        await replica.refresh()
        replica.clock.advance(7)
        await replica.settle()
    assert len(replica.calls()) == 2
    assert len(await heartbeat_pages(replica.store)) == 2


async def test_a_heartbeat_removed_by_a_reload_is_no_longer_checked(replica):
    await replica.refresh()
    replica.config = config_with(HEARTBEATS.split("  - name: nightly-backup")[0].replace(
        "alertmanager-watchdog", "renamed"))
    replica.clock.advance(timedelta(minutes=5))
    await replica.settle()
    assert replica.provider.requests == []


async def test_a_reload_that_shortens_the_timeout_applies_to_the_armed_heartbeat(replica):
    await replica.refresh("nightly-backup")
    replica.clock.advance(timedelta(minutes=10))
    await replica.settle()
    assert replica.provider.requests == []
    replica.config = config_with(HEARTBEATS.replace("timeout: 1h", "timeout: 5m"))
    await replica.settle()
    assert [r.dialed_number for r in replica.provider.requests] == ["+14155550101"]


# ------------------------------------------------------------------------------------------- replicas


async def test_two_replicas_on_one_store_open_one_page():
    a = Replica(config_with())
    b = Replica(a.config, store=a.store, clock=a.clock)
    try:
        await a.refresh()
        a.clock.advance(6)
        await asyncio.gather(a.settle(), b.settle())
        assert len(a.provider.requests) + len(b.provider.requests) == 1
        assert len(await heartbeat_pages(a.store)) == 1
        # Both keep watching the missing heartbeat: neither opens another page for the same outage.
        for _ in range(3):
            a.clock.advance(5)
            await asyncio.gather(a.settle(), b.settle())
        assert len(await heartbeat_pages(a.store)) == 1
        assert len(a.provider.requests) + len(b.provider.requests) == 1
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_refresh_on_another_replica_while_the_page_opens_resolves_it_before_anyone_is_called(replica):
    await replica.refresh()
    replica.clock.advance(6)
    admit = replica.store.admit

    async def refreshed_meanwhile(*args, **kwargs):
        # Replica B takes the Watchdog between this watcher's read of the beats and its admit: B finds no
        # page to resolve yet.
        await replica.store.beat("alertmanager-watchdog", replica.clock.now())
        return await admit(*args, **kwargs)

    replica.store.admit = refreshed_meanwhile
    await replica.settle()
    assert replica.provider.requests == []
    [page] = await heartbeat_pages(replica.store)
    assert page.state is PageState.RESOLVED


async def test_a_restart_while_missing_keeps_one_page():
    first = Replica(config_with())
    await first.refresh()
    first.clock.advance(6)
    await first.settle()
    assert len(first.provider.requests) == 1
    await first.stop()
    # The process dies (nothing of it but the store is left) and a new one starts on the same store.
    restarted = Replica(first.config, store=first.store, clock=first.clock)
    try:
        restarted.clock.advance(10)
        await restarted.settle()
        assert restarted.provider.requests == []
        assert len(await heartbeat_pages(restarted.store)) == 1
    finally:
        await restarted.stop()


async def test_a_restart_after_a_refresh_does_not_page(replica):
    await replica.refresh()
    await replica.stop()
    restarted = Replica(replica.config, store=replica.store, clock=replica.clock)
    try:
        replica.clock.advance(5)
        await restarted.settle()
        assert restarted.provider.requests == []
    finally:
        await restarted.stop()


# ------------------------------------------------------------------------------------------- routing, pages


def test_an_alert_matching_a_heartbeat_refreshes_it_and_is_not_routed():
    config = config_with()
    body = payload(alert(WATCHDOG), alert({**WATCHDOG, "alertname": "Other"}), alert(PAYMENTS))
    the_plan = plan(config, parse_payload(body))
    assert the_plan.beats == ["alertmanager-watchdog"]
    routed = {p.route.name: [a.labels["alertname"] for a in p.firing] for p in the_plan.pages}
    assert routed == {"payments": ["HighCPU"], "catch-all": ["Other"]}


def test_a_resolved_heartbeat_alert_is_neither_routed_nor_a_refresh():
    the_plan = plan(config_with(), parse_payload(payload(alert(WATCHDOG, status="resolved"))))
    assert (the_plan.beats, the_plan.pages, the_plan.unrouted) == ([], [], [])


def test_a_heartbeat_without_matchers_matches_no_alert():
    the_plan = plan(config_with(), parse_payload(payload(alert({"alertname": "nightly-backup"}))))
    assert the_plan.beats == [] and [p.route.name for p in the_plan.pages] == ["catch-all"]


def test_the_outage_page_is_the_same_on_every_replica_and_new_for_each_outage():
    hb = config_with().heartbeat("alertmanager-watchdog")
    clock = FakeClock()
    one, two = outage_page(hb, clock.now(), clock.now()), outage_page(hb, clock.now(), clock.now() + timedelta(1))
    assert (one.key, one.claims) == (two.key, two.claims)
    later = outage_page(hb, clock.now() + timedelta(seconds=1), clock.now())
    assert later.key != one.key and later.claims != one.claims
    assert one.alerts[0]["labels"] == {"alertname": "HeartbeatMissing", "heartbeat": "alertmanager-watchdog"}
    assert one.alerts[0]["annotations"] == {"summary": "No heartbeat from alertmanager-watchdog within 6 seconds"}


async def test_metrics_precreate_the_heartbeat_routes():
    registry = CollectorRegistry()
    LiveConfig(config_with(), Metrics(registry))
    assert registry.get_sample_value("alert2voice_pages_total",
                                     {"route": "heartbeat:alertmanager-watchdog", "result": "called"}) == 0


# ------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(("text", "problem"), [
    (HEARTBEATS.replace("alertmanager-watchdog", "nightly-backup"), "heartbeats.1.name: duplicate heartbeat name"),
    (HEARTBEATS.replace("call: bob", "call: carol"), "heartbeats.0.escalation.0.call: unknown contact 'carol'"),
    (HEARTBEATS.replace("call: alice", "call: rotation:nope"), "heartbeats.1.escalation.0.call: unknown rotation"),
    (HEARTBEATS.replace('alertname="Watchdog"', 'alertname=~"('), "heartbeats.0.matchers"),
    (HEARTBEATS.replace("alertmanager-watchdog", "a/b"), "heartbeats.0.name"),
    (HEARTBEATS.replace("alertmanager-watchdog", "a:b"), "heartbeats.0.name"),
    (HEARTBEATS.replace("timeout: 6s", "timeout: 500ms"), "heartbeats.0.timeout: timeout must be at least 1s"),
    (HEARTBEATS.replace("    timeout: 6s\n", ""), "heartbeats.0.timeout: required key is missing"),
    (HEARTBEATS.replace("escalation: [{call: alice}]", "escalation: []"), "heartbeats.1.escalation"),
    (HEARTBEATS.replace("    timeout: 1h", "    timeout: 1h\n    continue: true"), "heartbeats.1.continue: unknown key"),
])
def test_heartbeat_config_problems(text, problem):
    with pytest.raises(ConfigError) as err:
        config_with(text)
    assert problem in str(err.value), str(err.value)


def test_a_route_may_not_take_a_heartbeat_route_name():
    with pytest.raises(ConfigError, match=r"routes\.1\.name: route names starting with 'heartbeat:'"):
        config_with(**{"name: catch-all": "name: 'heartbeat:catch-all'"})


# ------------------------------------------------------------------------------------------- over HTTP

@pytest.fixture
def config(request: pytest.FixtureRequest) -> Config:
    return config_with(**config_changes(request))


async def settle_app(client) -> None:
    await client.app[HEARTBEATS_KEY].settled()
    await settle(client.app[DISPATCHER])


@pytest.mark.parametrize(("headers", "name", "status"), [
    ({}, "alertmanager-watchdog", 401),
    ({"Authorization": "Bearer wrong"}, "alertmanager-watchdog", 401),
    ({}, "no-such-heartbeat", 401),  # credentials first: names are not told to strangers
    (AUTH, "no-such-heartbeat", 404),
    (AUTH, "alertmanager-watchdog", 200),
    (AUTH, "nightly-backup", 200),
])
async def test_post_heartbeat_is_authenticated_like_alerts(client, harness, headers, name, status):
    resp = await client.post(f"/heartbeats/{name}", headers=headers)
    assert resp.status == status
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    beats = await harness.store.beats()
    assert (name in beats) is (status == 200)
    if status == 200:
        assert await resp.json() == {"status": "ok", "heartbeat": name, "pages_resolved": 0}
        assert beats[name] == harness.clock.now()


async def test_a_watchdog_in_a_webhook_refreshes_its_heartbeat_and_rings_nobody(client, harness):
    resp = await client.post("/alerts", json=payload(alert(WATCHDOG), group_key='{}:{alertname="Watchdog"}'),
                             headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["heartbeats"] == ["alertmanager-watchdog"] and body["pages"] == []
    assert await harness.store.beats() == {"alertmanager-watchdog": harness.clock.now()}
    await settle_app(client)
    assert harness.provider.requests == []


async def test_the_whole_round_over_http_with_metrics_and_the_pages_api(client, harness):
    clock = harness.clock
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    # Configured, never seen: not armed (it does not page), and not shown as fine either.
    assert harness.sample("alert2voice_heartbeat_up", heartbeat="alertmanager-watchdog") == 0
    assert harness.sample("alert2voice_heartbeat_last_seen_timestamp_seconds", heartbeat="alertmanager-watchdog") == 0
    assert (await client.post("/heartbeats/alertmanager-watchdog", headers=AUTH)).status == 200
    seen = clock.now().timestamp()
    await client.get("/metrics")
    assert harness.sample("alert2voice_heartbeat_up", heartbeat="alertmanager-watchdog") == 1
    assert harness.sample("alert2voice_heartbeat_last_seen_timestamp_seconds", heartbeat="alertmanager-watchdog") == seen
    clock.advance(6)
    await settle_app(client)
    [request] = harness.provider.requests
    assert request.dialed_number == BOB
    await client.get("/metrics")
    assert harness.sample("alert2voice_heartbeat_up", heartbeat="alertmanager-watchdog") == 0
    assert harness.sample("alert2voice_pages_total", route="heartbeat:alertmanager-watchdog", result="called") == 1
    pages = (await (await client.get("/api/v1/pages")).json())["pages"]
    [page] = [p for p in pages if p["heartbeat"] == "alertmanager-watchdog"]
    assert page["route"] == "heartbeat:alertmanager-watchdog" and page["state"] == "active"
    assert page["alerts"][0]["labels"] == {"alertname": "HeartbeatMissing", "heartbeat": "alertmanager-watchdog"}
    resp = await client.post("/heartbeats/alertmanager-watchdog", headers=AUTH)
    assert (await resp.json())["pages_resolved"] == 1
    pages = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert [p["state"] for p in pages if p["heartbeat"]] == ["resolved"]
    await client.get("/metrics")
    assert harness.sample("alert2voice_heartbeat_up", heartbeat="alertmanager-watchdog") == 1


async def test_a_heartbeat_removed_by_a_reload_leaves_the_metrics(client, harness, tmp_path):
    assert (await client.post("/heartbeats/nightly-backup", headers=AUTH)).status == 200
    await client.get("/metrics")
    assert harness.sample("alert2voice_heartbeat_up", heartbeat="nightly-backup") == 1
    client.app[LIVE].apply(config_with(HEARTBEATS.split("  - name: nightly-backup")[0]))
    await client.get("/metrics")
    assert harness.sample("alert2voice_heartbeat_up", heartbeat="nightly-backup") is None
    assert harness.sample("alert2voice_heartbeat_up", heartbeat="alertmanager-watchdog") == 0
    assert (await client.post("/heartbeats/nightly-backup", headers=AUTH)).status == 404


async def test_post_heartbeat_answers_503_when_the_store_is_down(client, harness):
    harness.store.available = False
    resp = await client.post("/heartbeats/alertmanager-watchdog", headers=AUTH)
    assert resp.status == 503
