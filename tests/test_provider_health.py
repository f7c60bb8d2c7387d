"""Provider health: probes at start and periodically, fed by calls too; reported (metrics, status page, /-/ready's
text), never a reason to refuse webhooks. The simulator stands in for the platform as a real HTTP server."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from alert2voice.config_file import load_config
from alert2voice.metrics import Metrics
from alert2voice.provider import AuthFailed, NetworkError, RateLimited, Rejected, Unavailable
from alert2voice.provider.health import PROBE_INTERVAL, PROBE_INTERVAL_AFTER_FAILURE, ProviderHealth, status_of
from alert2voice.simulator import create_simulator_app
from alert2voice.store.memory import MemoryStore
from alert2voice.web import create_app
from alert2voice.web.keys import HEALTH
from bench.procs import free_port
from tests.harness import CB_AUTH, receipt
from tests.harness import JSON_AUTH as AUTH
from tests.support import CONFIG, PAYMENTS, T0, FakeClock, alert, payload

SIM_KEY = "the-right-service-key"


class Sleeps:
    """An injected sleep that returns only when the test says so: the probe loop's clock, driven by hand."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._asleep = asyncio.Event()
        self.called = asyncio.Event()  # set at each sleep asked for

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.called.set()
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._asleep.set()
        try:
            await future
        finally:
            if future in self._waiting:
                self._waiting.remove(future)
            if not self._waiting:
                self._asleep.clear()

    async def elapse(self) -> None:
        """Let the sleep in progress (once there is one) end, as if its time had passed."""
        await self._asleep.wait()
        self._waiting.pop(0).set_result(None)
        if not self._waiting:
            self._asleep.clear()


@pytest.mark.parametrize(("error", "status"), [
    (None, "ok"),  # 404 for the probe's unknown id: the key was taken
    (RateLimited(1.0), "ok"),  # the tenant's own limit: the platform knew whose key it was
    (AuthFailed("7001"), "auth"),
    (AuthFailed("7127", status=403), "auth"),  # source IP not allowed
    (NetworkError("connect: refused", connected=False), "unreachable"),
    (NetworkError("timed out after 10s", timeout=True), "unreachable"),
    (Unavailable(503), "error"),
    (Rejected(None, status=301), "error"),  # a redirect: a wrong base_url
])
def test_status_of_a_probe(error, status):
    assert status_of(error) == status


def _health(sleeps: Sleeps) -> tuple[ProviderHealth, Metrics]:
    metrics = Metrics(CollectorRegistry())
    clock = FakeClock()
    return ProviderHealth(metrics, target=lambda: "https://api.us.webexconnect.io", now=clock.now, sleep=sleeps,
                          rng=random.Random(7)), metrics


async def test_the_injected_sleep_drives_the_periodic_probe():
    """A probe at once, the next about a minute later while healthy, about 15 s later after a failure."""
    sleeps, answers = Sleeps(), [None, AuthFailed("7001"), None]

    async def probe() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    health, metrics = _health(sleeps)
    assert health.current.status == "unknown" and health.healthy
    task = asyncio.create_task(health.run(probe))
    try:
        await health.checked.wait()
        assert health.current.status == "ok"
        health.checked.clear()
        await sleeps.elapse()
        await health.checked.wait()
        assert health.current.status == "auth" and not health.healthy
        assert metrics.registry.get_sample_value("alert2voice_provider_healthy") == 0
        assert metrics.registry.get_sample_value("alert2voice_provider_status", {"status": "auth"}) == 1
        assert metrics.registry.get_sample_value("alert2voice_provider_status", {"status": "ok"}) == 0
        health.checked.clear()
        await sleeps.elapse()
        await health.checked.wait()
        assert health.current.status == "ok"
        assert metrics.registry.get_sample_value("alert2voice_provider_probes_total", {"status": "ok"}) == 2
        # jittered ±10 %: a minute after a success, 15 s after a failure
        assert PROBE_INTERVAL * 0.9 <= sleeps.asked[0] <= PROBE_INTERVAL * 1.1
        assert PROBE_INTERVAL_AFTER_FAILURE * 0.9 <= sleeps.asked[1] <= PROBE_INTERVAL_AFTER_FAILURE * 1.1
        assert health.probes == 3
    finally:
        task.cancel()


async def test_a_failed_call_brings_the_next_probe_closer():
    sleeps = Sleeps()

    async def probe() -> None:
        return None

    health, _ = _health(sleeps)
    task = asyncio.create_task(health.run(probe))
    try:
        await sleeps.called.wait()
        sleeps.called.clear()
        assert len(sleeps.asked) == 1 and sleeps.asked[0] > PROBE_INTERVAL_AFTER_FAILURE * 1.1
        health.call_failed(NetworkError("connect: refused", connected=False))
        assert (health.current.status, health.current.via) == ("unreachable", "call")
        await sleeps.called.wait()  # the minute's sleep is cut short: the next one is the short one
        assert sleeps.asked[1] <= PROBE_INTERVAL_AFTER_FAILURE * 1.1
        health.call_failed(Rejected("7102"))  # one call's number: says nothing about the provider
        assert health.current.status == "unreachable"
    finally:
        task.cancel()


# ------------------------------------------------------------------------- the app, against the simulator


async def _serve(aiohttp_client, tmp_path, *, base_url: str, key: str):
    (tmp_path / "key").write_text(key + "\n")
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("service_key: svc-key-secret", "service_key_file: key")
                    .replace("base_url: http://127.0.0.1:1", f"base_url: {base_url}"))
    registry = CollectorRegistry()
    app = create_app(load_config(path), config_path=path, store=MemoryStore(), clock=FakeClock(), registry=registry)
    sleeps = app[HEALTH].sleep = Sleeps()
    client = await aiohttp_client(app)
    await app[HEALTH].checked.wait()  # the probe at start, before any page
    client.registry, client.sleeps = registry, sleeps
    return client


async def _simulator(aiohttp_server) -> str:
    sim = await aiohttp_server(create_simulator_app(service_key=SIM_KEY, callback_delay=0, callback_retry_delays=()))
    return str(sim.make_url("")).rstrip("/")


async def _says(client, words: str) -> None:
    status = await (await client.get("/")).text()
    assert words in status, status
    ready = await client.get("/-/ready?verbose")  # an admin (loopback): the provider's words in full
    assert ready.status == 200 and words in await ready.text()
    terse = await (await client.get("/-/ready")).text()  # anyone: neither its URL nor its answer
    assert words not in terse and "http" not in terse and terse.startswith("alert2voice is ready.\nprovider: ")
    resp = await client.post("/alerts", data=json.dumps(payload(alert(PAYMENTS, starts=T0))), headers=AUTH)
    assert resp.status == 200  # stored; it waits for the provider


async def test_a_wrong_service_key_is_known_at_start_and_the_service_stays_ready(aiohttp_client, aiohttp_server,
                                                                                 tmp_path):
    base = await _simulator(aiohttp_server)
    client = await _serve(aiohttp_client, tmp_path, base_url=base, key="a-revoked-key")
    assert client.registry.get_sample_value("alert2voice_provider_healthy") == 0
    assert client.registry.get_sample_value("alert2voice_provider_status", {"status": "auth"}) == 1
    assert client.registry.get_sample_value("alert2voice_provider_requests_total",
                                            {"endpoint": "probe", "code": "403"}) == 1
    await _says(client, "service key refused (auth HTTP 403 code 7001")
    shown = await (await client.get("/")).text() + await (await client.get("/-/ready?verbose")).text()
    assert "a-revoked-key" not in shown + await (await client.get("/metrics")).text()
    # While refused, the next probe is planned 15 s on; the key is fixed and reloaded: a probe at once sees it.
    assert PROBE_INTERVAL_AFTER_FAILURE * 0.9 <= client.sleeps.asked[-1] <= PROBE_INTERVAL_AFTER_FAILURE * 1.1
    health = client.app[HEALTH]
    health.checked.clear()
    (tmp_path / "key").write_text(SIM_KEY + "\n")
    assert (await client.post("/-/reload")).status == 200
    await health.checked.wait()
    assert health.current.status == "ok"
    assert client.registry.get_sample_value("alert2voice_provider_healthy") == 1
    assert client.registry.get_sample_value("alert2voice_provider_status", {"status": "ok"}) == 1
    assert "healthy: the service key is accepted" in await (await client.get("/")).text()


async def test_an_unreachable_provider_is_known_at_start_and_the_service_stays_ready(aiohttp_client, tmp_path):
    port = free_port()
    client = await _serve(aiohttp_client, tmp_path, base_url=f"http://127.0.0.1:{port}", key=SIM_KEY)
    assert client.registry.get_sample_value("alert2voice_provider_healthy") == 0
    assert client.registry.get_sample_value("alert2voice_provider_status", {"status": "unreachable"}) == 1
    await _says(client, f"cannot connect to http://127.0.0.1:{port}")


async def test_a_provider_answering_errors_is_error(aiohttp_client, aiohttp_server, tmp_path):
    base = await _simulator(aiohttp_server)
    async with aiohttp.ClientSession() as http:
        await http.put(f"{base}/_sim/fail", json={"status": 503})
    client = await _serve(aiohttp_client, tmp_path, base_url=base, key=SIM_KEY)
    assert client.registry.get_sample_value("alert2voice_provider_status", {"status": "error"}) == 1
    await _says(client, f"{base} answers with an error (unavailable HTTP 503")


async def test_a_test_calls_receipts_show_on_the_status_page(client, harness):
    """`alert2voice test-call` places its call from another process; its receipts find no page, and are shown."""
    assert "none received by this replica" in await (await client.get("/")).text()
    for status, code in (("OFFERED", "7407"), ("ANSWERED", "7519"), ("DROPPED", "7409")):
        body = receipt(status, correlation="a2v-test-0123456789abcdef01234567", transid="msg-x", code=code)
        resp = await client.post("/callbacks/webex", json=body, headers=CB_AUTH)
        assert resp.status == 200
    html = await (await client.get("/")).text()
    assert "<code>a2v-test-0123456789abcdef01234567</code>: offered, answered, dropped" in html
    assert harness.metric("alert2voice_callbacks_total", event="answered", result="test_call") == 1


async def test_failing_calls_never_make_probes_more_frequent_than_after_a_failure():
    sleeps, clock = Sleeps(), FakeClock()
    health = ProviderHealth(Metrics(CollectorRegistry()), target=lambda: "https://x", now=clock.now, sleep=sleeps,
                            rng=random.Random(3))

    async def probe() -> None:
        raise NetworkError("connect: refused", connected=False)

    task = asyncio.create_task(health.run(probe))
    try:
        await sleeps.called.wait()
        sleeps.called.clear()
        first = sleeps.asked[0]
        assert first <= PROBE_INTERVAL_AFTER_FAILURE * 1.1
        clock.advance(first - 1)  # a call fails a second before the planned probe: the wait is not restarted
        health.call_failed(NetworkError("connect: refused", connected=False))
        await sleeps.called.wait()
        assert sleeps.asked[1] == pytest.approx(1)
        assert health.probes == 1
    finally:
        task.cancel()
