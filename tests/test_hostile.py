"""Hostile input: every bad request gets a clear 4xx, never a 500 or a crash; property-based and fuzz tests."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alert2voice.alertmanager import PayloadError, parse_payload
from alert2voice.config import Config
from alert2voice.provider.fake import RecordingProvider
from alert2voice.web.keys import DISPATCHER, PROVIDER
from tests.harness import JSON_AUTH as AUTH
from tests.harness import JSON_CB_AUTH as CB_AUTH
from tests.harness import config_changes
from tests.support import CONFIG, PAYMENTS, alert, make_config, payload


@pytest.fixture
def config(request: pytest.FixtureRequest) -> Config:
    """Room for the big bodies below, and a short read timeout."""
    return make_config(**{"max_body_bytes: 64KiB": "max_body_bytes: 4MiB, read_timeout: 1s"}, **config_changes(request))


async def test_ten_thousand_alerts_in_one_group(client):
    alerts = [alert({**PAYMENTS, "instance": f"node{i}:9100"}) for i in range(10_000)]
    resp = await client.post("/alerts", data=io.BytesIO(json.dumps(payload(*alerts)).encode()), headers=AUTH)
    assert resp.status == 200
    [page] = (await resp.json())["pages"]
    assert page["alerts"] == 10_000
    await client.app[DISPATCHER].settled()
    [request] = client.app[PROVIDER].requests
    assert len(request.audio.text) <= 2000


async def test_huge_label_value_within_limit(client):
    body = json.dumps(payload(alert({**PAYMENTS, "x": "é" * 500_000})), ensure_ascii=False).encode()
    resp = await client.post("/alerts", data=io.BytesIO(body), headers=AUTH)
    assert resp.status == 200
    await client.app[DISPATCHER].settled()
    assert len(client.app[PROVIDER].requests[0].audio.text) <= 2000


async def test_deeply_nested_json_is_400(client):
    body = '{"a":' * 100_000 + "1" + "}" * 100_000
    resp = await client.post("/alerts", data=io.BytesIO(body.encode()), headers=AUTH)
    assert resp.status == 400


async def test_slow_client_gets_408(harness):
    config = make_config(**{"max_body_bytes: 64KiB": "max_body_bytes: 64KiB, read_timeout: 100ms"})
    client = await harness.start(config)
    stalled = asyncio.Event()  # never set: the client sends half a body and then nothing

    async def trickle():
        yield b'{"version": "4",'
        await stalled.wait()
        yield b"}"

    resp = await client.post("/alerts", data=trickle(), headers=AUTH)
    assert resp.status == 408
    assert "server.read_timeout (100ms)" in (await resp.json())["error"]


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/alerts", 405),
    ("PUT", "/alerts", 405),
    ("GET", "/callbacks/webex", 405),
    ("GET", "/nope", 404),
    ("POST", "/metrics", 405),
])
async def test_wrong_methods_and_paths(client, method, path, status):
    resp = await client.request(method, path, headers=AUTH)
    assert resp.status == status


async def test_oversized_callback_is_413(client):
    resp = await client.post("/callbacks/webex", data=io.BytesIO(b"x" * (5 * 1024 * 1024)), headers=CB_AUTH)
    assert resp.status == 413


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_parser_never_crashes_on_any_json(value):
    try:
        parse_payload(json.dumps(value).encode())
    except PayloadError as exc:
        assert str(exc)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_parser_never_crashes_on_any_bytes(body):
    try:
        parse_payload(body)
    except PayloadError as exc:
        assert str(exc)


label_text = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True), label_text, max_size=6),
       st.sampled_from(["firing", "resolved"]))
def test_any_labels_parse_into_a_payload(labels, status):
    parsed = parse_payload(json.dumps(payload(alert(labels, status=status))).encode())
    assert parsed.alerts[0].labels == labels


def mutations():
    base = payload(alert(PAYMENTS))
    keys = st.sampled_from(["receiver", "status", "alerts", "groupLabels", "version", "groupKey", "truncatedAlerts"])
    return st.one_of(
        st.tuples(keys, json_values).map(lambda kv: {**base, kv[0]: kv[1]}),
        st.tuples(keys).map(lambda k: {key: v for key, v in base.items() if key != k[0]}),
        json_values,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutations())
async def test_fuzz_alerts_never_5xx(client, body):
    resp = await client.post("/alerts", data=json.dumps(body), headers=AUTH)
    assert resp.status < 500, await resp.text()


receipt_like = st.fixed_dictionaries({
    "deliveryInfoNotification": st.fixed_dictionaries({
        "deliveryInfo": st.dictionaries(st.sampled_from(["deliveryStatus", "code", "Description"]), json_values),
        "transid": json_values, "correlationid": json_values})})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, receipt_like,
                      st.fixed_dictionaries({"event": json_values, "sessionId": json_values})))
async def test_fuzz_callbacks_never_5xx(client, body):
    resp = await client.post("/callbacks/webex", data=json.dumps(body), headers=CB_AUTH)
    assert resp.status < 500, await resp.text()


class SignallingProvider(RecordingProvider):
    """Keeps the call requests as they arrive and sets `arrived` (a gate, if set, holds them after that)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()
        self.arrivals: list = []

    async def place_call(self, request):
        self.arrivals.append(request)
        self.arrived.set()
        return await super().place_call(request)


async def serving(harness, config, provider):
    """The app as it serves, its dispatcher running."""
    harness.provider = provider
    return await harness.start(config)


async def healthy_throughout(client, done: asyncio.Event) -> int:
    """Ask /-/healthy until `done`; each answer must come within 2 s: a blocked event loop fails this."""
    answers = 0
    while not done.is_set():
        resp = await asyncio.wait_for(client.get("/-/healthy"), timeout=2)
        assert resp.status == 200
        answers += 1
    return answers


async def test_hostile_annotation_does_not_freeze_the_event_loop(harness):
    # 300,000 spaces and "://": minutes of work for the URL pattern the speakable filter once had.
    config = make_config(**{"max_body_bytes: 64KiB": "max_body_bytes: 4MiB"})
    provider = SignallingProvider()
    provider.gate = asyncio.Event()  # the call stays in flight while /-/healthy is asked
    client = await serving(harness, config, provider)
    hostile = {**alert(PAYMENTS), "annotations": {"summary": "Disk full", "description": " " * 300_000 + "://"}}
    polling = asyncio.create_task(healthy_throughout(client, provider.arrived))
    resp = await asyncio.wait_for(client.post("/alerts", data=json.dumps(payload(hostile)), headers=AUTH), timeout=2)
    assert resp.status == 200
    await asyncio.wait_for(provider.arrived.wait(), timeout=2)
    assert await polling >= 1
    assert (await asyncio.wait_for(client.get("/-/healthy"), timeout=2)).status == 200
    [request] = provider.arrivals
    assert "Disk full" in request.audio.text
    provider.gate.set()


async def test_a_template_failing_on_a_real_alert_still_calls_over_http(harness, tmp_path):
    # Passes check-config (the critical sample alert has an instance), fails on a critical alert without one.
    (tmp_path / "mine.txt.j2").write_text('{% if alerts[0].severity == "critical" %}{{ alerts[0].labels.instance }}'
                                          "{% endif %}")
    config = make_config(CONFIG + f"templates: {{directory: {tmp_path}}}\n",
                         **{"    send_resolved: true\n": "    send_resolved: true\n    template: mine.txt.j2\n"})
    provider = SignallingProvider()
    client = await serving(harness, config, provider)
    metric = 'alert2voice_template_errors_total{route="payments"}'
    assert f"{metric} 0.0" in await (await client.get("/metrics")).text()
    labels = {key: value for key, value in PAYMENTS.items() if key != "instance"}
    resp = await client.post("/alerts", data=json.dumps(payload(alert(labels))), headers=AUTH)
    assert resp.status == 200
    await asyncio.wait_for(provider.arrived.wait(), timeout=10)
    [request] = provider.arrivals
    assert request.audio.text_format == "TEXT"
    assert request.audio.text.startswith("High CPU, critical.")  # the built-in firing.txt.j2 instead
    assert f"{metric} 1.0" in await (await client.get("/metrics")).text()
