"""Authentication and bounds over real HTTP: callback credentials and rotation, callback body caps, admin endpoints."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from alert2voice.auth import is_loopback
from alert2voice.config import WebhookAuth
from alert2voice.provider import CallStatus
from alert2voice.provider.base import MAX_BODY_BYTES
from alert2voice.web import create_app
from alert2voice.web.keys import DISPATCHER, SILENCER
from alert2voice.web.ops import admin_refusal, handle_pages
from tests.e2e_support import Process, Samples, alert2voice_command, eventually, free_port, stop_all, wait_http_ok
from tests.harness import JSON, Harness
from tests.harness import JSON_AUTH as AUTH
from tests.harness import JSON_CB_AUTH as CB_AUTH
from tests.harness import receipt as webex_receipt
from tests.support import CONFIG, PAYMENTS, alert, make_config, payload

CALLBACK = "  callback: {auth_id: A2V, bearer_token: cb-token-secret, deadline: 2m}\n"
ADMIN = "Bearer adm-token-secret"


@pytest.fixture
def env(harness: Harness) -> Harness:
    return harness


async def start(aiohttp_client, env: Harness, config, **kw):
    return await env.start(config, **kw)


def metric(env: Harness, name, **labels) -> float:
    return env.metric(name, **labels)


def receipt(status: str, correlation: str, *, code: str = "7519") -> dict[str, Any]:
    return webex_receipt(status, correlation=correlation, code=code)


async def placed_call(client, env) -> str:
    """Page alice through /alerts and let the dispatcher call her; the call's correlationId."""
    assert (await client.post("/alerts", data=json.dumps(payload(alert(PAYMENTS))), headers=AUTH)).status == 200
    await client.app[DISPATCHER].settled()
    return env["provider"].requests[-1].correlation_id


async def still_escalates(client, env) -> None:
    """Nothing ended the page: the status poll finds the call unanswered and alice gets her second attempt."""
    before = len(env["provider"].requests)
    env["provider"].set_status(env["provider"].accepted[-1].message_id, CallStatus("REJECTED", None, None, {}))
    env["clock"].advance(timedelta(minutes=2))  # provider.callback.deadline: no final callback, so it polls
    await client.app[DISPATCHER].settled()
    env["clock"].advance(timedelta(minutes=3))  # the step's interval
    await client.app[DISPATCHER].settled()
    assert len(env["provider"].requests) == before + 1
    [page] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert page["state"] == "active"


async def stalled(first: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    """A request body whose rest never comes until `release` is set (after the response)."""
    yield first
    await release.wait()
    yield b"}"


# ----------------------------------------------------------------------------------- callback tokens


async def test_two_tokens_from_a_file_are_both_accepted_and_a_third_is_refused(aiohttp_client, env, tmp_path):
    tokens = tmp_path / "callback-tokens"
    tokens.write_text("# the new token\ncb-new-secret\n\n# the old one, until the tenant is switched\ncb-old-secret\n")
    config = make_config(**{CALLBACK: f"  callback: {{auth_id: A2V, bearer_tokens_file: {tokens}}}\n"})
    client = await start(aiohttp_client, env, config)
    cid = await placed_call(client, env)

    for token in ("cb-new-secret", "cb-old-secret"):
        resp = await client.post("/callbacks/webex", data=json.dumps(receipt("OFFERED", cid)),
                                 headers={**JSON, "Authorization": f"Bearer {token}"})
        assert resp.status == 200, token
    resp = await client.post("/callbacks/webex", data=json.dumps(receipt("ANSWERED", cid)),
                             headers={**JSON, "Authorization": "Bearer cb-third-secret"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="callbacks"'
    assert metric(env, "alert2voice_callbacks_total", event="offered", result="ok") == 2
    assert metric(env, "alert2voice_callbacks_total", event="unknown", result="unauthorized") == 1
    await still_escalates(client, env)


async def test_single_token_and_token_list_are_accepted_together(aiohttp_client, env):
    config = make_config(**{CALLBACK: "  callback: {auth_id: A2V, bearer_token: cb-one-secret,"
                                      " bearer_tokens: [cb-two-secret]}\n"})
    client = await start(aiohttp_client, env, config)
    statuses = []
    for token in ("cb-one-secret", "cb-two-secret", "cb-one-secretX", "cb-two"):
        resp = await client.post("/callbacks/webex", data=json.dumps(receipt("OFFERED", "nope")),
                                 headers={**JSON, "Authorization": f"Bearer {token}"})
        statuses.append(resp.status)
    assert statuses == [200, 200, 401, 401]


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-credentials"),
    pytest.param({"Authorization": "Bearer cb-token-wrong"}, id="wrong-token"),
    pytest.param({"Authorization": "Basic " + base64.b64encode(b"x:cb-token-secret").decode()}, id="basic-scheme"),
    pytest.param({"Authorization": "cb-token-secret"}, id="no-scheme"),
    pytest.param({"X-Authorization": "Bearer cb-token-secret"}, id="other-header"),
])
async def test_forged_answered_receipt_changes_nothing(aiohttp_client, env, headers):
    client = await start(aiohttp_client, env, make_config())
    cid = await placed_call(client, env)
    resp = await client.post("/callbacks/webex", data=json.dumps(receipt("ANSWERED", cid)),
                             headers={**JSON, **headers})
    assert resp.status == 401
    assert (await resp.json())["status"] == "error"
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="answered") == 0
    await still_escalates(client, env)


async def test_forged_digit_acknowledges_nothing_and_silences_nothing(aiohttp_client, env, aiohttp_server):
    silences: list[Any] = []

    async def post_silence(request: web.Request) -> web.Response:
        silences.append(await request.json())
        return web.json_response({"silenceID": "s-1"})

    am = web.Application()
    am.router.add_post("/api/v2/silences", post_silence)
    server = await aiohttp_server(am, host="127.0.0.1")
    config = make_config(CONFIG + f"acknowledgement: {{silence: {{alertmanager_url: 'http://127.0.0.1:{server.port}'}}}}\n",
                         **{'  caller_id: "+15550001234"\n': '  caller_id: "+15550001234"\n  mode: interactive\n'})
    client = await start(aiohttp_client, env, config)
    await placed_call(client, env)
    session = env["provider"].accepted[-1].message_id
    for event in ({"event": "ANSWERED", "sessionId": session},
                  {"event": "COLLECTED_DIGITS", "sessionId": session, "digitsReceived": "1"}):
        resp = await client.post("/callbacks/webex", data=json.dumps(event),
                                 headers={**JSON, "Authorization": "Bearer forged"})
        assert resp.status == 401
    await client.app[SILENCER].idle()
    assert silences == []
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="acknowledged") == 0
    await still_escalates(client, env)


async def test_header_credential(aiohttp_client, env):
    config = make_config(**{CALLBACK: "  callback: {auth_id: A2V, header: {name: X-Callback-Key, value: hk-secret}}\n"})
    client = await start(aiohttp_client, env, config)
    body = json.dumps(receipt("OFFERED", "nope"))
    ok = await client.post("/callbacks/webex", data=body, headers={**JSON, "X-Callback-Key": "hk-secret"})
    wrong = await client.post("/callbacks/webex", data=body, headers={**JSON, "X-Callback-Key": "hk-secreT"})
    assert (ok.status, wrong.status) == (200, 401)


HUB_SECRET = "hub-secret-value"


def sign(body: bytes, secret: str = HUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_hub_signature(aiohttp_client, env):
    config = make_config(**{CALLBACK: "  callback: {auth_id: A2V, hub_secret: hub-secret-value}\n"})
    client = await start(aiohttp_client, env, config)
    cid = await placed_call(client, env)
    forged = json.dumps(receipt("ANSWERED", cid)).encode()
    resp = await client.post("/callbacks/webex", data=forged, headers={**JSON, "x-hub-signature": sign(forged, "x")})
    assert resp.status == 401
    # Signed, but over the callback cap: refused before more than 64 KiB is read.
    big = json.dumps(receipt("ANSWERED", cid)).encode() + b" " * MAX_BODY_BYTES
    resp = await client.post("/callbacks/webex", data=big, headers={**JSON, "x-hub-signature": sign(big)})
    assert resp.status == 413
    await still_escalates(client, env)
    good = json.dumps(receipt("OFFERED", cid)).encode()
    resp = await client.post("/callbacks/webex", data=good, headers={**JSON, "x-hub-signature": sign(good)})
    assert resp.status == 200


# ------------------------------------------------------------------------------------ callback bounds


def padded(body: dict[str, Any], size: int) -> bytes:
    """The JSON body with trailing whitespace to exactly `size` bytes (still valid JSON)."""
    raw = json.dumps(body).encode()
    return raw + b" " * (size - len(raw))


async def test_callback_of_exactly_64_kib_is_applied(aiohttp_client, env):
    client = await start(aiohttp_client, env, make_config())
    cid = await placed_call(client, env)
    resp = await client.post("/callbacks/webex", data=padded(receipt("ANSWERED", cid), MAX_BODY_BYTES),
                             headers=CB_AUTH)
    assert resp.status == 200
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="answered") == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_callback_over_64_kib_is_413_and_applies_nothing(aiohttp_client, env, chunked):
    # The app's client_max_size is server.max_body_bytes (64 KiB in tests/support.py, 4 MiB by default):
    # a bigger limit here shows the callback cap is separate from it.
    client = await start(aiohttp_client, env, make_config(**{"max_body_bytes: 64KiB": "max_body_bytes: 4MiB"}))
    cid = await placed_call(client, env)
    body = padded(receipt("ANSWERED", cid), MAX_BODY_BYTES + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    resp = await client.post("/callbacks/webex", data=chunks() if chunked else body, headers=CB_AUTH)
    assert resp.status == 413
    assert str(MAX_BODY_BYTES) in (await resp.json())["error"]
    assert metric(env, "alert2voice_callbacks_total", event="unknown", result="too_large") == 1
    await still_escalates(client, env)


async def test_slow_callback_is_408_and_applies_nothing(aiohttp_client, env):
    # server.read_timeout is a real timer inside aiohttp's server; the test only waits for the answer.
    client = await start(aiohttp_client, env, make_config(**{"max_body_bytes: 64KiB": "read_timeout: 100ms"}))
    cid = await placed_call(client, env)
    release = asyncio.Event()
    try:
        async with asyncio.timeout(30):
            resp = await client.post("/callbacks/webex", headers=CB_AUTH,
                                     data=stalled(json.dumps(receipt("ANSWERED", cid))[:-1].encode(), release))
        assert resp.status == 408
    finally:
        release.set()
    assert metric(env, "alert2voice_callbacks_total", event="unknown", result="timeout") == 1
    await still_escalates(client, env)


async def test_callback_credentials_are_checked_before_the_body_is_read(aiohttp_client, env):
    # read_timeout 1h: had the handler waited for this body, the request would hang instead of a 401.
    client = await start(aiohttp_client, env, make_config(**{"max_body_bytes: 64KiB": "read_timeout: 1h"}))
    release = asyncio.Event()
    try:
        async with asyncio.timeout(30):
            resp = await client.post("/callbacks/webex", data=stalled(b'{"event": "ANSWERED"', release),
                                     headers={**JSON, "Authorization": "Bearer forged"})
        assert resp.status == 401
    finally:
        release.set()


async def test_reload_into_unauthenticated_callbacks_warns(aiohttp_client, env, tmp_path, caplog):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    client = await start(aiohttp_client, env, make_config(), config_path=path)
    path.write_text(CONFIG.replace(CALLBACK, "  callback: {auth_id: A2V, allow_unauthenticated: true}\n"))
    with caplog.at_level(logging.WARNING, logger="alert2voice.reload"):
        assert (await client.post("/-/reload")).status == 200
    assert [r.getMessage() for r in caplog.records if "allow_unauthenticated" in r.getMessage()] == [
        "provider.callback.allow_unauthenticated is true: anyone who can reach /callbacks/webex"
        " can end escalations and acknowledge pages"]
    # And now an uncredentialed callback is taken.
    resp = await client.post("/callbacks/webex", data=json.dumps(receipt("OFFERED", "nope")), headers=JSON)
    assert resp.status == 200


# ------------------------------------------------------------------------------- live: make run, serve

REPO = Path(__file__).resolve().parents[1]


def run_sh_callback_auth() -> str:
    """The --callback-auth argument scripts/run.sh (`make run`) gives the simulator."""
    [arg] = re.findall(r'--callback-auth "([^"]+)"', (REPO / "scripts" / "run.sh").read_text(encoding="utf-8"))
    return arg


def example_on_free_ports(tmp_path: Path, sim_port: int, a2v_port: int) -> dict[str, Any]:
    """config.example.yaml as `make run` serves it, on free loopback ports and the memory store."""
    config = yaml.safe_load((REPO / "config.example.yaml").read_text(encoding="utf-8"))
    config["server"].update(listen=f"127.0.0.1:{a2v_port}", public_url=f"http://127.0.0.1:{a2v_port}",
                            shutdown_grace="2s")
    config["provider"]["base_url"] = f"http://127.0.0.1:{sim_port}"
    config["store"] = {"backend": "memory"}
    return config


def serve(tmp_path: Path, config: dict[str, Any], a2v_port: int) -> Process:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    a2v = Process("alert2voice", [*alert2voice_command(), "serve", "--config", str(path)],
                  tmp_path / "alert2voice.log").start()
    wait_http_ok(f"http://127.0.0.1:{a2v_port}/-/ready", a2v)
    return a2v


async def test_make_run_wiring_authenticates_the_simulators_callbacks(tmp_path):
    """The example config against the simulator started as scripts/run.sh does: every receipt is accepted."""
    sim_port, a2v_port = free_port(), free_port()
    sim = Process("simulator", [*alert2voice_command(), "simulator", "--listen", f"127.0.0.1:{sim_port}",
                                "--callback-auth", run_sh_callback_auth(), "--callback-delay", "0"],
                  tmp_path / "simulator.log").start()
    processes = [sim]
    try:
        wait_http_ok(f"http://127.0.0.1:{sim_port}/_sim/calls", sim)
        processes.append(serve(tmp_path, example_on_free_ports(tmp_path, sim_port, a2v_port), a2v_port))
        url = f"http://127.0.0.1:{a2v_port}"
        async with aiohttp.ClientSession() as http:
            body = payload(alert({"alertname": "MakeRun", "team": "payments", "severity": "critical"}))
            async with http.post(f"{url}/alerts", json=body,
                                 headers={"Authorization": "Bearer example-webhook-token"}) as resp:
                assert resp.status == 200, await resp.text()

            async def answered():
                async with http.get(f"{url}/metrics") as resp:
                    samples = Samples.parse(await resp.text())
                return samples if samples.get("alert2voice_calls_total", route="payments-critical",
                                              outcome="answered") == 1 else None

            samples = await eventually(answered, "the simulator's ANSWERED receipt to be accepted")
        assert samples.get("alert2voice_callbacks_total", event="unknown", result="unauthorized") == 0
        assert samples.get("alert2voice_callbacks_total", event="answered", result="ok") == 1
    finally:
        stop_all(processes)


def test_serve_warns_at_start_when_callbacks_are_unauthenticated(tmp_path):
    a2v_port = free_port()
    config = example_on_free_ports(tmp_path, free_port(), a2v_port)
    callback = config["provider"]["callback"]
    callback.pop("bearer_token")
    callback["allow_unauthenticated"] = True
    a2v = serve(tmp_path, config, a2v_port)
    a2v.stop()
    log = a2v.log_path.read_text(encoding="utf-8")
    [line] = [line for line in log.splitlines() if "allow_unauthenticated" in line]
    assert "WARNING" in line.upper() and "/callbacks/webex" in line


# ----------------------------------------------------------------------------------- admin endpoints


def admin_config(tmp_path, auth: str = "{bearer_tokens: [adm-token-secret]}"):
    text = CONFIG.replace("max_body_bytes: 64KiB}", f"max_body_bytes: 64KiB, admin_auth: {auth}}}")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path, make_config(text)


ADMIN_REQUESTS = [("POST", "/-/reload", None), ("POST", "/-/render", payload(alert(PAYMENTS))),
                  ("GET", "/api/v1/pages", None)]


async def admin_statuses(client, headers: dict[str, str]) -> list[int]:
    out = []
    for method, path, body in ADMIN_REQUESTS:
        resp = await client.request(method, path, data=json.dumps(body) if body else None, headers={**JSON, **headers})
        out.append(resp.status)
        if resp.status == 401:
            assert resp.headers["WWW-Authenticate"].startswith(("Bearer", "Basic"))
    return out


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param({}, 401, id="no-credentials"),
    pytest.param({"Authorization": "Bearer adm-token-wrong"}, 401, id="wrong-token"),
    pytest.param({"Authorization": "Bearer tok-one-secret"}, 401, id="webhook-token"),
    pytest.param({"Authorization": ADMIN}, 200, id="admin-token"),
])
async def test_admin_auth_guards_reload_render_and_pages(aiohttp_client, env, tmp_path, headers, expected):
    path, config = admin_config(tmp_path)
    client = await start(aiohttp_client, env, config, config_path=path)
    assert await admin_statuses(client, headers) == [expected] * 3


async def test_admin_basic_auth_with_a_password_file(aiohttp_client, env, tmp_path):
    (tmp_path / "admin-password").write_text("adm-password-secret\n")
    path, config = admin_config(tmp_path, f"{{basic_auth: {{username: ops, password_file: {tmp_path}/admin-password}}}}")
    client = await start(aiohttp_client, env, config, config_path=path)
    good = "Basic " + base64.b64encode(b"ops:adm-password-secret").decode()
    bad = "Basic " + base64.b64encode(b"ops:adm-password-secreT").decode()
    assert await admin_statuses(client, {"Authorization": good}) == [200, 200, 200]
    assert await admin_statuses(client, {"Authorization": bad}) == [401, 401, 401]


async def test_metrics_health_and_ready_stay_open_with_admin_auth(aiohttp_client, env, tmp_path):
    path, config = admin_config(tmp_path)
    client = await start(aiohttp_client, env, config, config_path=path)
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/-/healthy")).status == 200
    # Not running the dispatcher loop, /-/ready says so (503): still no credentials asked.
    ready = await client.get("/-/ready")
    assert ready.status in (200, 503) and "WWW-Authenticate" not in ready.headers


async def test_without_admin_auth_loopback_clients_are_answered(aiohttp_client, env, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    client = await start(aiohttp_client, env, make_config(), config_path=path)
    assert await admin_statuses(client, {}) == [200, 200, 200]


@pytest.mark.parametrize(("remote", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("::ffff:127.0.0.1", True), ("localhost", True),
    ("10.0.0.7", False), ("192.168.1.2", False), ("::ffff:10.0.0.7", False), ("fe80::1%eth0", False),
    ("2001:db8::1", False), ("0.0.0.0", False), ("", False), (None, False), ("not-an-address", False),
    ("128.0.0.1", False),
])
def test_is_loopback(remote, loopback):
    assert is_loopback(remote) is loopback


ADMIN_AUTH = WebhookAuth(bearer_tokens=["adm-token-secret"])


@pytest.mark.parametrize(("auth", "remote", "header", "expected"), [
    (None, "127.0.0.1", "", None),
    (None, "::ffff:127.0.0.1", "", None),
    (None, "10.0.0.7", "", 403),
    (None, "10.0.0.7", ADMIN, 403),  # no admin_auth: no token opens it to the network
    (None, None, "", 403),
    (ADMIN_AUTH, "127.0.0.1", "", 401),  # with admin_auth, loopback is no exception
    (ADMIN_AUTH, "10.0.0.7", "Bearer nope", 401),
    (ADMIN_AUTH, "10.0.0.7", ADMIN, None),
])
def test_admin_refusal(auth, remote, header, expected):
    assert admin_refusal(auth, remote, header) == expected


async def test_pages_refused_to_a_non_loopback_peer(aiohttp_client, env):
    """The handler itself, on a request whose transport peer is 10.0.0.7 (no such address on the test host)."""
    client = await start(aiohttp_client, env, make_config())
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("10.0.0.7", 40000) if name == "peername" else default)
    request = make_mocked_request("GET", "/api/v1/pages", app=client.app, transport=transport)
    assert request.remote == "10.0.0.7"
    resp = await handle_pages(request)
    assert resp.status == 403
    assert json.loads(resp.body)["error"].startswith("this endpoint answers loopback clients only")


async def test_admin_endpoints_over_http_from_a_rewritten_peer(aiohttp_client, env, tmp_path):
    """Real HTTP; a test-only middleware sets request.remote from X-Test-Peer, as a far client would have it."""

    @web.middleware
    async def peer(request: web.Request, handler):
        return await handler(request.clone(remote=request.headers.get("X-Test-Peer", request.remote)))

    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    app = create_app(make_config(), config_path=path, provider=env["provider"], store=env["store"],
                     clock=env["clock"], registry=env["registry"])
    app.middlewares.append(peer)
    client = await aiohttp_client(app)
    far = await admin_statuses(client, {"X-Test-Peer": "10.0.0.7"})
    mapped = await admin_statuses(client, {"X-Test-Peer": "::ffff:127.0.0.1"})
    assert (far, mapped) == ([403] * 3, [200] * 3)
    assert (await client.get("/metrics", headers={"X-Test-Peer": "10.0.0.7"})).status == 200


# ----------------------------------------------------------------------------------------- /api/v1/pages


async def test_pages_list_the_first_20_alerts_and_count_them_all(aiohttp_client, env):
    client = await start(aiohttp_client, env, make_config())
    alerts = [alert({**PAYMENTS, "instance": f"node{i}:9100"}) for i in range(25)]
    assert (await client.post("/alerts", data=json.dumps(payload(*alerts)), headers=AUTH)).status == 200
    [page] = (await (await client.get("/api/v1/pages?limit=100000")).json())["pages"]
    assert (len(page["alerts"]), page["alerts_total"]) == (20, 25)
