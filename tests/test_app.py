"""The service over real HTTP: webhook status codes, dedup, dispatch, callbacks, escalation, metrics, secrets."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from alert2voice.config_file import secrets_of
from alert2voice.logs import setup_logging
from alert2voice.provider import AuthFailed, CallStatus, NetworkError, Rejected, Unavailable
from alert2voice.provider.fake import RecordingProvider
from alert2voice.store import StoreUnavailable
from alert2voice.store.memory import MemoryStore
from alert2voice.web import create_app
from alert2voice.web.keys import DISPATCHER, HEALTH, SHUTDOWN
from alert2voice.web.ops import readiness
from tests.harness import AUTH, CB_AUTH, Harness, receipt
from tests.support import PAYMENTS, FakeClock, alert, make_config, payload, settle


@pytest.fixture
def env(harness: Harness) -> Harness:
    """The service's parts (tests/harness.py), by the name this module's tests use: env["provider"] and the rest."""
    return harness


async def post(client, body, headers=AUTH, **kw):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return await client.post("/alerts", data=data, headers={"Content-Type": "application/json", **headers}, **kw)


def metric(env: Harness, name, **labels) -> float:
    return env.metric(name, **labels)


async def callback(client, body, headers=CB_AUTH):
    return await client.post("/callbacks/webex", data=json.dumps(body),
                             headers={"Content-Type": "application/json", **headers})


# ----------------------------------------------------------------------------------- status codes


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}, 401),
    ({"Authorization": "Bearer tok-one-secret"}, 200),
    ({"Authorization": "Bearer tok-two-secret"}, 200),  # several tokens, for rotation
])
async def test_webhook_auth(client, env, headers, expected):
    resp = await post(client, payload(alert(PAYMENTS)), headers=headers)
    assert resp.status == expected
    if expected == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert metric(env, "alert2voice_webhooks_total", result="unauthorized") == 1


async def test_basic_auth(aiohttp_client, env):
    config = make_config(**{"  bearer_tokens: [tok-one-secret, tok-two-secret]":
                            "  basic_auth: {username: am, password: pw-secret}"})
    app = create_app(config, provider=env["provider"], store=env["store"], clock=env["clock"],
                     registry=env["registry"])
    c = await aiohttp_client(app)
    good = "Basic " + base64.b64encode(b"am:pw-secret").decode()
    bad = "Basic " + base64.b64encode(b"am:nope").decode()
    assert (await post(c, payload(alert(PAYMENTS)), headers={"Authorization": good})).status == 200
    resp = await post(c, payload(alert(PAYMENTS)), headers={"Authorization": bad})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "malformed JSON"),
    (json.dumps({"version": "4"}), 400, "receiver"),
    (json.dumps(payload({"status": "firing", "labels": "x", "startsAt": "2026-01-01T00:00:00Z"})), 400,
     "alerts.0.labels"),
    (json.dumps({**payload(alert(PAYMENTS)), "version": "3"}), 400, "version"),
    (b"[]", 400, ""),
    (b"\xff\xfe", 400, ""),
])
async def test_bad_payloads_are_400_naming_the_problem(client, env, body, status, needle):
    resp = await post(client, body)
    assert resp.status == status
    assert needle in (await resp.json())["error"]
    assert env["provider"].requests == []


async def test_wrong_content_type_is_415(client):
    resp = await client.post("/alerts", data=json.dumps(payload(alert(PAYMENTS))),
                             headers={**AUTH, "Content-Type": "text/plain"})
    assert resp.status == 415


async def test_oversized_body_is_413(client, env):
    big = payload(alert({**PAYMENTS, "blob": "x" * 70_000}))
    resp = await post(client, big)
    assert resp.status == 413
    assert "max_body_bytes" in (await resp.json())["error"]
    assert metric(env, "alert2voice_webhooks_total", result="too_large") == 1


class FarStore(MemoryStore):
    """Unavailable with what redis-py says: the host and port of the store."""

    async def ping(self) -> None:
        raise StoreUnavailable("redis store: ping failed: Error 111 connecting to redis-0.internal:6379. Refused.")


async def test_ready_names_the_store_only_to_an_admin(aiohttp_client, env):
    guarded = make_config(**{"max_body_bytes: 64KiB}": "max_body_bytes: 64KiB, admin_auth: "
                                                      "{bearer_tokens: [adm-token-secret]}}"})
    c = await aiohttp_client(create_app(guarded, provider=RecordingProvider(), store=FarStore(), clock=FakeClock(),
                                        registry=CollectorRegistry()))
    for path in ("/-/ready", "/-/ready?verbose"):
        resp = await c.get(path)
        text = await resp.text()
        assert resp.status in (503, 401) and "redis-0" not in text and "6379" not in text, text
    resp = await c.get("/-/ready")
    assert resp.status == 503 and (await resp.text()).startswith("not ready: store unavailable\nprovider: ")
    resp = await c.get("/-/ready?verbose", headers={"Authorization": "Bearer adm-token-secret"})
    assert resp.status == 503 and "redis-0.internal:6379" in await resp.text()


async def test_shutting_down_is_503(client):
    client.app[SHUTDOWN].set()
    resp = await post(client, payload(alert(PAYMENTS)))
    assert resp.status == 503


async def test_store_unavailable_is_503_then_recovers(client, env):
    env["store"].available = False
    resp = await post(client, payload(alert(PAYMENTS)))
    assert resp.status == 503
    assert any("store unavailable" in p for p in await readiness(client.app))
    env["store"].available = True
    resp = await post(client, payload(alert(PAYMENTS)))
    assert resp.status == 200
    assert (await resp.json())["pages"][0]["result"] == "called"


async def test_a_callback_while_the_store_is_unavailable_is_503_and_applied_when_sent_again(client, env):
    resp = await post(client, payload(alert(PAYMENTS)))
    await settle(client.app[DISPATCHER])
    [request] = env["provider"].requests
    env["store"].available = False
    resp = await callback(client, receipt("ANSWERED", correlation=request.correlation_id))
    assert resp.status == 503 and "store unavailable" in (await resp.json())["error"]
    assert metric(env, "alert2voice_callbacks_total", event="answered", result="unavailable") == 1
    env["store"].available = True
    resp = await callback(client, receipt("ANSWERED", correlation=request.correlation_id))  # the provider's retry
    assert resp.status == 200
    [page] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert page["state"] == "answered"


# ------------------------------------------------------------------------------------ dedup and calls


async def test_one_call_per_page_and_duplicates_suppressed(client, env):
    body = payload(alert(PAYMENTS, summary="CPU high on node1"))
    resp = await post(client, body)
    assert resp.status == 200
    summary = await resp.json()
    assert summary["pages"][0]["result"] == "called"
    await client.app[DISPATCHER].settled()
    [req] = env["provider"].requests
    assert req.dialed_number == "+14155550101"
    assert req.caller_id == "+15550001234"
    assert req.callback_url == "http://127.0.0.1:9095/callbacks/webex"
    assert req.callback_auth_id == "A2V"
    assert re.fullmatch(rf"a2v-{summary['pages'][0]['page_key'][:24]}-[0-9a-f]{{8}}-1", req.correlation_id)
    ET.fromstring(req.audio.text)
    assert "CPU high on node1" in "".join(ET.fromstring(req.audio.text).itertext())
    # Alertmanager's resend, and an HA replica's copy with another replica label: no second call.
    for again in (body, payload(alert({**PAYMENTS, "replica": "b"}, summary="CPU high on node1"))):
        resp = await post(client, again)
        assert (await resp.json())["pages"][0]["result"] == "duplicate"
        await client.app[DISPATCHER].settled()
    assert len(env["provider"].requests) == 1
    assert metric(env, "alert2voice_pages_total", route="payments", result="called") == 1
    assert metric(env, "alert2voice_pages_total", route="payments", result="duplicate") == 2


async def test_webhook_line_is_info_when_it_changed_something_and_debug_for_pure_resends(client, env, caplog):
    caplog.set_level(logging.DEBUG, logger="alert2voice.webhook")
    body = payload(alert(PAYMENTS, summary="CPU high on node1"))

    def lines() -> list[tuple[int, list[str]]]:
        out = [(r.levelno, [p["result"] for p in r.pages]) for r in caplog.records
               if r.name == "alert2voice.webhook" and r.getMessage() == "webhook accepted"]
        caplog.clear()
        return out

    assert (await post(client, body)).status == 200
    assert lines() == [(logging.INFO, ["called"])]
    assert (await post(client, body)).status == 200  # Alertmanager's resend: nothing changed
    assert lines() == [(logging.DEBUG, ["duplicate"])]
    resolved = payload(alert(PAYMENTS, summary="CPU high on node1", status="resolved"))
    assert (await post(client, resolved)).status == 200  # resolving the page is a change again
    assert lines() == [(logging.INFO, ["resolved"])]


async def test_a_newline_in_the_group_key_cannot_forge_a_text_log_line(client):
    out = io.StringIO()
    handler = setup_logging("text", "info", stream=out)
    try:
        body = payload(alert(PAYMENTS, summary="CPU high"))
        body["groupKey"] = '{}:{alertname="X"}\nlevel=error msg=forged\r\x1b[2J\u2028x'
        body["receiver"] = "voice\nforged receiver"
        assert (await post(client, body)).status == 200
        handler.flush()
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = [t for t in out.getvalue().splitlines() if "webhook accepted" in t]
    assert len(out.getvalue().splitlines()) == len([t for t in out.getvalue().split("\n") if t]), out.getvalue()
    assert not any(t.startswith("level=error") or t.startswith("forged") for t in out.getvalue().splitlines())
    assert "\\nlevel=error msg=forged\\r\\x1b[2J\\u2028x" in line and "receiver=voice\\nforged receiver" in line


async def test_a_resent_body_is_planned_once_and_still_follows_the_store(client, env, monkeypatch):
    import alert2voice.web.webhook as app_module

    parsed = []
    real = app_module.parse_payload
    monkeypatch.setattr(app_module, "parse_payload", lambda body: parsed.append(body) or real(body))
    firing = json.dumps(payload(alert(PAYMENTS)))
    results = [(await (await post(client, firing)).json())["pages"][0]["result"] for _ in range(3)]
    assert results == ["called", "duplicate", "duplicate"]
    assert len(parsed) == 1  # the resends came from the plan cache
    # The cached plan is only the plan: what happens to it still comes from the store. Once resolved, the
    # same bytes page again.
    await client.app[DISPATCHER].settled()
    resolved = payload(alert(PAYMENTS, status="resolved"))
    assert (await (await post(client, resolved)).json())["pages"][0]["result"] == "resolved"
    assert (await (await post(client, firing)).json())["pages"][0]["result"] == "called"
    assert len(parsed) == 2
    # An HA peer's copy differs in externalURL: other bytes, planned anew, the same page.
    peer = payload(alert(PAYMENTS), externalURL="http://am-2")
    assert (await (await post(client, peer)).json())["pages"][0]["result"] == "duplicate"
    assert len(parsed) == 3


async def test_new_alert_joining_group_is_a_new_page(client, env):
    await post(client, payload(alert(PAYMENTS)))
    await client.app[DISPATCHER].settled()
    resp = await post(client, payload(alert(PAYMENTS), alert({**PAYMENTS, "instance": "node2:9100"})))
    assert (await resp.json())["pages"][0]["result"] == "called"
    await client.app[DISPATCHER].settled()
    assert len(env["provider"].requests) == 2


async def test_dedup_window_expires(client, env):
    await post(client, payload(alert(PAYMENTS)))
    await client.app[DISPATCHER].settled()
    await callback(client, receipt("ANSWERED", correlation=env["provider"].requests[0].correlation_id))
    env["clock"].advance(timedelta(hours=4, seconds=1))
    resp = await post(client, payload(alert(PAYMENTS)))
    assert (await resp.json())["pages"][0]["result"] == "called"


async def test_no_route_and_no_contacts(client, env):
    resp = await post(client, payload(alert({"alertname": "Other"})))
    assert (await resp.json())["pages"][0]["result"] == "no_contacts"
    assert metric(env, "alert2voice_pages_total", route="catch-all", result="no_contacts") == 1
    await client.app[DISPATCHER].settled()
    assert env["provider"].requests == []


# ------------------------------------------------------------------------------- callbacks, escalation


async def test_callback_auth_required(client):
    resp = await callback(client, receipt("ANSWERED", correlation="x"), headers={})
    assert resp.status == 401
    resp = await callback(client, receipt("ANSWERED", correlation="x"), headers={"Authorization": "Bearer no"})
    assert resp.status == 401


async def test_refused_callbacks_are_counted_and_logged_once_a_minute_with_how_many(client, env, caplog):
    caplog.set_level(logging.INFO, logger="alert2voice.callbacks")
    body = json.dumps(receipt("ANSWERED", correlation="x"))
    for _ in range(1000):  # 100 s of 10 a second
        resp = await client.post("/callbacks/webex", data=body, headers={"Authorization": "Bearer no"})
        assert resp.status == 401
        env["clock"].advance(0.1)
    refused = [r for r in caplog.records if r.getMessage().startswith("callback refused")]
    assert len(refused) == 2, [r.__dict__ for r in refused]  # the first, then one a minute later
    assert not hasattr(refused[0], "repeated") and refused[1].repeated in (599, 600)
    assert refused[1].remote == "127.0.0.1"
    assert metric(env, "alert2voice_callbacks_total", event="unknown", result="unauthorized") == 1000


@pytest.mark.parametrize("body", [b"garbage", b"[]", b"{}", json.dumps({"deliveryInfoNotification": {}}).encode()])
async def test_callback_garbage_is_400(client, body):
    resp = await client.post("/callbacks/webex", data=body, headers=CB_AUTH)
    assert resp.status == 400


async def test_answered_ends_the_page(client, env):
    await post(client, payload(alert(PAYMENTS)))
    await client.app[DISPATCHER].settled()
    [req] = env["provider"].requests
    for status in ("OFFERED", "ACCEPTED", "ANSWERED", "DROPPED", "Released"):
        resp = await callback(client, receipt(status, correlation=req.correlation_id, transid="msg-1"))
        assert resp.status == 200
    env["clock"].advance(timedelta(hours=1))
    await client.app[DISPATCHER].settled()
    assert len(env["provider"].requests) == 1
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="answered") == 1
    pages = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert pages[0]["state"] == "answered"


async def test_receipt_matched_by_transid_when_correlationid_missing(client, env):
    # Known platform bug: some receipts lack correlationid; transid is our messageId.
    await post(client, payload(alert(PAYMENTS)))
    await client.app[DISPATCHER].settled()
    await callback(client, receipt("ANSWERED", transid="msg-1"))
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="answered") == 1


async def test_unanswered_escalates_through_attempts_and_steps(client, env):
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    await settle(d)
    cid1 = env["provider"].requests[0].correlation_id
    await callback(client, receipt("REJECTED", correlation=cid1, code="7401"))
    await settle(d)
    assert len(env["provider"].requests) == 1  # waits the step's 3m interval
    env["clock"].advance(timedelta(minutes=3))
    await settle(d)
    second = env["provider"].requests[1]
    assert second.dialed_number == "+14155550101"
    assert second.correlation_id.endswith("-2")
    await callback(client, receipt("REJECTED", correlation=second.correlation_id, code="7402"))
    env["clock"].advance(timedelta(minutes=3))
    await settle(d)
    third = env["provider"].requests[2]
    assert third.dialed_number == "+442071838750"  # next step: bob
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="no_answer") == 1
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="busy") == 1
    assert metric(env, "alert2voice_escalations_total", route="payments") == 2
    await callback(client, receipt("REJECTED", correlation=third.correlation_id, code="7401"))
    env["clock"].advance(timedelta(minutes=5))
    await settle(d)
    assert len(env["provider"].requests) == 3
    pages = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert pages[0]["state"] == "exhausted"


async def test_no_callback_polls_status(client, env):
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    await settle(d)
    env["provider"].set_status("msg-1", CallStatus("REJECTED", None, None, {}))
    env["clock"].advance(timedelta(minutes=2))
    await settle(d)
    assert env["provider"].status_queries == ["msg-1"]
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="no_answer") == 1


# ---------------------------------------------------------------------------------- provider errors


async def test_retryable_errors_reuse_correlation_and_idempotency_key(client, env):
    env["provider"].fail_next(Unavailable(503), times=2)
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    await settle(d)
    assert len(env["provider"].requests) == 1
    for _ in range(2):
        env["clock"].advance(timedelta(minutes=1))
        await settle(d)
    reqs = env["provider"].requests
    assert len(reqs) == 3
    assert len({r.correlation_id for r in reqs}) == 1
    assert len({r.idempotency_key for r in reqs}) == 1
    assert len(env["provider"].accepted) == 1
    assert metric(env, "alert2voice_provider_errors_total", reason="unavailable") == 2


async def test_permanent_rejection_moves_to_next_contact_without_retry(client, env):
    env["provider"].fail_next(Rejected("7102", message="invalid destination"))
    await post(client, payload(alert(PAYMENTS)))
    await client.app[DISPATCHER].settled()
    reqs = env["provider"].requests
    assert [r.dialed_number for r in reqs] == ["+14155550101", "+14155550101"]  # attempt 2 of step 1
    assert reqs[0].correlation_id != reqs[1].correlation_id
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="failed") == 1
    assert metric(env, "alert2voice_provider_errors_total", reason="rejected") == 1


async def test_auth_failure_keeps_call_queued_and_is_reported_but_ready(client, env):
    """A refused key is the provider's health (the status page, the metrics), never /-/ready's: a revoked key must
    not take every replica out of the Service, or the webhooks that should wait in the store are refused."""
    env["provider"].fail_next(AuthFailed("7001", message="Authentication failed."))
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    await settle(d)
    assert await readiness(client.app) == []
    ready = await client.get("/-/ready")
    assert ready.status == 200 and (await ready.text()).endswith("\nprovider: service key refused\n")
    verbose = await (await client.get("/-/ready?verbose")).text()  # loopback: an admin without admin_auth
    assert "provider: service key refused (auth HTTP" in verbose and "check provider.service_key" in verbose
    assert metric(env, "alert2voice_provider_healthy") == 0
    assert metric(env, "alert2voice_provider_status", status="auth") == 1
    assert (client.app[HEALTH].current.status, client.app[HEALTH].current.via) == ("auth", "call")
    assert metric(env, "alert2voice_provider_errors_total", reason="auth") == 1
    assert metric(env, "alert2voice_calls_total", route="payments", outcome="failed") == 0
    assert (await post(client, payload(alert(PAYMENTS)))).status == 200  # still taking webhooks
    env["clock"].advance(timedelta(minutes=1))
    await settle(d)
    assert len(env["provider"].accepted) == 1
    assert metric(env, "alert2voice_provider_healthy") == 1
    assert metric(env, "alert2voice_provider_status", status="ok") == 1


@pytest.mark.parametrize(("error", "outcome"), [
    # Nothing reached the provider (no connection): the attempt failed, for sure.
    (NetworkError("connect: refused", connected=False), "failed"),
    # A 500 after the body was sent: the call may have gone out; at the end it counts as not reached.
    (Unavailable(500), "no_answer"),
], ids=["refused-connection-fails", "5xx-is-unknown-then-no-answer"])
async def test_retries_give_up_then_next_contact(client, env, error, outcome):
    env["provider"].fail_next(error, times=1000)
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    for _ in range(80):
        await settle(d)
        env["clock"].advance(timedelta(minutes=1))
    assert metric(env, "alert2voice_calls_total", route="payments", outcome=outcome) >= 1
    numbers = {r.dialed_number for r in env["provider"].requests}
    assert "+442071838750" in numbers  # escalated past alice after giving up
    first = [r for r in env["provider"].requests if r.correlation_id == env["provider"].requests[0].correlation_id]
    assert len(first) > 1 and len(set(first)) == 1, "every try of an attempt is the same request"


# ----------------------------------------------------------------------------------------- resolved


async def test_resolved_cancels_pending_and_sends_resolved_call(client, env):
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    await settle(d)
    first = env["provider"].requests[0]
    await callback(client, receipt("ANSWERED", correlation=first.correlation_id))
    resp = await post(client, payload(alert(PAYMENTS, status="resolved")))
    assert resp.status == 200
    await settle(d)
    reqs = env["provider"].requests
    assert len(reqs) == 2
    assert reqs[1].dialed_number == first.dialed_number
    assert "resolved" in "".join(ET.fromstring(reqs[1].audio.text).itertext()).lower()


async def test_resolved_before_anyone_answered_stops_escalation(client, env):
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    await settle(d)
    await callback(client, receipt("REJECTED", correlation=env["provider"].requests[0].correlation_id, code="7401"))
    await post(client, payload(alert(PAYMENTS, status="resolved")))
    env["clock"].advance(timedelta(minutes=10))
    await settle(d)
    # Only the resolved notice to the person last called; no further escalation.
    kinds = [r.correlation_id.rsplit("-", 1)[1] for r in env["provider"].requests]
    assert kinds == ["1", "r2"]
    # The same alert firing again later is a new incident: it pages again.
    resp = await post(client, payload(alert(PAYMENTS)))
    assert (await resp.json())["pages"][0]["result"] == "called"


# --------------------------------------------------------------------------------- GET /api/v1/pages/{key}


async def page_api(client, key: str) -> dict:
    """GET /api/v1/pages/{key}: 200, and the page as /api/v1/pages lists it, plus its next_call."""
    resp = await client.get(f"/api/v1/pages/{key}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    listed = {p["key"]: p for p in (await (await client.get("/api/v1/pages")).json())["pages"]}
    assert {k: v for k, v in body.items() if k != "next_call"} == listed[key]
    return body


@pytest.mark.config(**{"per_number: [{calls: 3, per: 15m}]": "per_number: [{calls: 3, per: 15m}]\n  max_hold: 20m"})
async def test_page_api_shows_a_throttled_call_and_when_it_goes(client, env):
    # The tier allows alice 3 calls per 15 minutes: a fourth incident's call to her waits for the first to age out
    # (throttle.max_hold is longer than that wait: the call is held, not passed on to bob).
    for n in range(4):
        labels = {**PAYMENTS, "instance": f"node{n}:9100"}
        assert (await post(client, payload(alert(labels), group_key=f'{{}}:{{n="{n}"}}'))).status == 200
        await settle(client.app[DISPATCHER])
    assert len(env["provider"].requests) == 3
    [held] = [p for p in (await (await client.get("/api/v1/pages")).json())["pages"]
              if p["calls"][0]["state"] == "queued"]
    page = await page_api(client, held["key"])
    assert page["calls"][0]["error"] == "throttled"
    assert page["next_call"] == {"state": "queued", "attempt": 1, "kind": "page", "contact": "alice",
                                 "number": "+14*****0101", "step": 1, "reason": None,
                                 "at": "2026-11-26T15:15:00+00:00", "held": "throttled until 2026-11-26 15:15:00 UTC"}


async def test_page_api_shows_the_next_attempt_after_the_interval(client, env):
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    await settle(d)
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    page = await page_api(client, listed["key"])
    assert page["next_call"] == {"state": "accepted", "attempt": 1, "kind": "page", "contact": "alice",
                                 "number": "+14*****0101", "step": 1, "reason": None,
                                 "at": "2026-11-26T15:02:00+00:00",
                                 "held": "waiting for the outcome until 2026-11-26 15:02:00 UTC"}
    await callback(client, receipt("REJECTED", correlation=env["provider"].requests[0].correlation_id, code="7401"))
    await settle(d)
    page = await page_api(client, listed["key"])
    assert page["next_call"] == {"state": "planned", "attempt": None, "kind": "page", "contact": "alice",
                                 "number": "+14*****0101", "step": 1, "reason": "named in step 1",
                                 "at": "2026-11-26T15:03:00+00:00",
                                 "held": "next attempt after the interval at 2026-11-26 15:03:00 UTC"}
    env["clock"].advance(timedelta(minutes=3))
    await settle(d)
    second = env["provider"].requests[1]
    assert (await page_api(client, listed["key"]))["next_call"]["attempt"] == 2
    await callback(client, receipt("ANSWERED", correlation=second.correlation_id))
    assert (await page_api(client, listed["key"]))["next_call"] is None


async def test_page_api_unknown_page_is_404_and_an_unavailable_store_503(client, env):
    resp = await client.get("/api/v1/pages/no-such-page")
    assert resp.status == 404 and (await resp.json())["error"] == "no such page"
    env["store"].available = False
    resp = await client.get("/api/v1/pages/no-such-page")
    assert resp.status == 503 and (await resp.json())["error"].startswith("store unavailable: ")


# ---------------------------------------------------------------------------------- ops endpoints


async def test_metrics_endpoint(client):
    await post(client, payload(alert(PAYMENTS)))
    text = await (await client.get("/metrics")).text()
    for name in ("alert2voice_webhooks_total", "alert2voice_alerts_received_total", "alert2voice_pages_total",
                 "alert2voice_calls_total", "alert2voice_queue_depth", "alert2voice_build_info",
                 "alert2voice_config_last_reload_successful", "alert2voice_time_to_call_seconds"):
        assert name in text
    assert 'alert2voice_queue_depth 1.0' in text


async def test_health_and_render(client):
    assert (await client.get("/-/healthy")).status == 200
    body = json.dumps(payload(alert(PAYMENTS, summary='a <b>&"c"')))
    resp = await client.post("/-/render", data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 200
    [call] = (await resp.json())["calls"]
    assert call["contact"] == "alice"
    assert 'a <b>&"c"' in "".join(ET.fromstring(call["ssml"]).itertext())
    # An admin endpoint: without server.admin_auth a loopback client needs no webhook token.
    resp = await client.post("/-/render", data="{}", headers={"Content-Type": "application/json"})
    assert resp.status == 400


async def test_secrets_never_leak(aiohttp_client, env, tmp_path):
    (tmp_path / "cb-tokens").write_text("cb-file-token-secret\n")
    config = make_config(**{
        "max_body_bytes: 64KiB}": "max_body_bytes: 64KiB, admin_auth: {bearer_tokens: [adm-token-secret],"
                                  " basic_auth: {username: ops, password: adm-password-secret}}}",
        "bearer_token: cb-token-secret,": f"bearer_token: cb-token-secret, bearer_tokens_file: {tmp_path}/cb-tokens,"})
    env["config"] = config
    app = create_app(config, provider=env["provider"], store=env["store"], clock=env["clock"],
                     registry=env["registry"])
    client = await aiohttp_client(app)
    admin = {"Authorization": "Bearer adm-token-secret"}
    stream = io.StringIO()
    handler = setup_logging("json", "debug", stream=stream)
    try:
        env["provider"].fail_next(Unavailable(503, message="svc-key-secret echoed by a proxy"))
        await post(client, payload(alert(PAYMENTS)), headers={"Authorization": "Bearer tok-nope-secret"})
        await post(client, payload(alert(PAYMENTS)))
        await app[DISPATCHER].settled()
        await callback(client, receipt("ANSWERED", correlation="x"), headers={"Authorization": "Bearer cb-token-no"})
        await callback(client, receipt("OFFERED", correlation="x"),
                       headers={"Authorization": "Bearer cb-file-token-secret"})
        refused = [await client.get("/api/v1/pages", headers={"Authorization": "Bearer adm-token-nope"}),
                   await client.post("/-/reload", headers={"Authorization": "Basic b3BzOm5vcGU="})]
        assert [r.status for r in refused] == [401, 401]
        outputs = [stream.getvalue(),
                   await (await client.get("/metrics")).text(),
                   await (await client.get("/api/v1/pages", headers=admin)).text(),
                   await (await client.post("/-/render", data=json.dumps(payload(alert(PAYMENTS))),
                                            headers={**admin, "Content-Type": "application/json"})).text(),
                   await (await post(client, b"{bad")).text(),
                   *[await r.text() for r in refused]]
    finally:
        logging.getLogger().removeHandler(handler)
    secrets = secrets_of(config)
    assert {"tok-one-secret", "svc-key-secret", "cb-token-secret", "cb-file-token-secret", "adm-token-secret",
            "adm-password-secret"} <= set(secrets)
    for text in outputs:
        for secret in secrets:
            assert secret not in text
        assert "+14155550101" not in text  # numbers are masked
    assert "+14*****0101" in outputs[0]


async def test_sqlite_store_failure_is_503_and_recovers_by_itself(aiohttp_client, env, tmp_path):
    from alert2voice.store.sqlite import SQLiteStore

    state = tmp_path / "state"
    store = SQLiteStore(state / "a2v.db")
    app = create_app(env["config"], provider=env["provider"], store=store, clock=env["clock"],
                     registry=env["registry"])
    c = await aiohttp_client(app)
    assert (await post(c, payload(alert(PAYMENTS)))).status == 200
    # Root ignores file modes, so break the path itself: the state directory becomes a plain file.
    state.rename(tmp_path / "moved")
    state.write_text("not a directory")
    other_group = payload(alert({**PAYMENTS, "alertname": "DiskFull"}), group_key='{}:{alertname="DiskFull"}')
    resp = await post(c, other_group)
    assert resp.status == 503
    assert any("store unavailable" in p for p in await readiness(app))
    assert metric(env, "alert2voice_webhooks_total", result="unavailable") == 1
    state.unlink()
    (tmp_path / "moved").rename(state)
    assert not any("store" in p for p in await readiness(app))
    resp = await post(c, other_group)
    assert resp.status == 200
    await app[DISPATCHER].settled()
    assert len(env["provider"].accepted) == 2  # the page accepted before the failure was not lost
