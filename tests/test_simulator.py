"""The Webex Connect simulator over real HTTP: validation, receipts, programmable calls, admin API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from alert2voice.simulator import SIMULATOR, create_simulator_app, run_simulator

KEY = "simulator-service-key"
AUTH = {"Authorization": KEY, "Content-Type": "application/json"}
CB_AUTH = {"TNPXXXT09U": {"Authorization": "Bearer cb-secret"}}
HUB_SECRET = "hub-secret"
NUMBER = "+14155550101"
SSML = '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">Disk full</speak>'


def tts(**overrides: Any) -> dict[str, Any]:
    audio = {
        "type": "TTS",
        "style": "NEURAL",
        "language": "en-US",
        "voice": "AriaNeural",
        "gender": "FEMALE",
        "engine": "AZURE",
        "textFormat": "SSML",
        "text": SSML,
    }
    audio.update(overrides)
    return {k: v for k, v in audio.items() if v is not ...}


def message(**overrides: Any) -> dict[str, Any]:
    body = {"callerId": "+15550001234", "dialedNumber": NUMBER, "audio": tts(), "correlationId": "p-3f2a-1"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Receiver:
    """A callback endpoint: records every POST and answers with `respond(payload)`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.respond: Callable[[dict[str, Any]], web.Response] = lambda payload: web.Response()
        self.url = ""
        self._changed = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        payload = json.loads(raw)
        async with self._changed:
            self.received.append({"headers": dict(request.headers), "raw": raw, "json": payload})
            self._changed.notify_all()
        return self.respond(payload)

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.received) >= count), timeout=5)
        return self.received

    def events(self) -> list[str]:
        return [r["json"]["event"] for r in self.received]


@pytest.fixture
async def receiver(aiohttp_server) -> Receiver:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/callbacks/webex", rec.handle)
    server = await aiohttp_server(app)
    rec.url = str(server.make_url("/callbacks/webex"))
    return rec


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(aiohttp_client, clock):
    app = create_simulator_app(callback_auth=CB_AUTH, hub_secret=HUB_SECRET, callback_delay=0, clock=clock)
    return await aiohttp_client(app)


async def post(client, body: Any, headers: dict[str, str] | None = None, path: str = "/v1/voice/messages"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return await client.post(path, data=data, headers=AUTH if headers is None else headers)


async def admin(client, method: str, path: str, body: Any = None) -> Any:
    resp = await client.request(method, path, json=body)
    assert resp.status in (200, 204), await resp.text()
    return await resp.json() if resp.status == 200 else None


# --- validation -----------------------------------------------------------------------------------


def missing(name: str) -> tuple[int, str, str]:
    return 400, "7003", f"Mandatory parameter missing - : {name}"


def invalid(name: str) -> tuple[int, str, str]:
    return 400, "7004", f"Invalid parameter -  : {name}"


NO_KEY = {"Authorization": None}
AUTH_FAILED = (403, "7001", "Authentication failed.")
BAD_JSON = (400, "7000", "Invalid JSON.")
BAD_SENDER = (400, "7101", "Invalid sender id.")
BAD_DESTINATION = (400, "7102", "Invalid destination.")
TOO_LONG = (400, "7107", "Message length exceeded.")
DOCTYPE = '<!DOCTYPE speak [<!ENTITY a "b">]><speak>&a;</speak>'

# id -> (headers to change, body, (HTTP status, code, message))
VALIDATION: dict[str, tuple[dict[str, Any] | None, Any, tuple[int, str, str]]] = {
    "no-key": (NO_KEY, message(), (403, "7002", "Service key missing.")),
    "wrong-key": ({"Authorization": "wrong"}, message(), AUTH_FAILED),
    "bearer-prefix": ({"Authorization": f"Bearer {KEY}"}, message(), AUTH_FAILED),
    "content-type": ({"Content-Type": "text/plain"}, message(), (400, "7126", "Invalid content type.")),
    "bad-json": (None, b"{not json", BAD_JSON),
    "not-utf8": (None, b"\xff\xfe", BAD_JSON),
    "json-array": (None, [message()], BAD_JSON),
    "too-big": (None, message(audio=tts(text="a" * 70_000)), (400, "7022", "JSON size exceeded.")),
    "no-callerId": (None, message(callerId=...), missing("callerId")),
    "no-dialedNumber": (None, message(dialedNumber=...), missing("dialedNumber")),
    "empty-dialedNumber": (None, message(dialedNumber=""), missing("dialedNumber")),
    "no-audio": (None, message(audio=...), missing("audio")),
    "no-audio-type": (None, message(audio={"text": "x"}), missing("audio.type")),
    "no-text": (None, message(audio=tts(text=...)), missing("audio.text")),
    "no-location": (None, message(audio={"type": "URL"}), missing("audio.location")),
    "no-mediaId": (None, message(audio={"type": "MEDIA"}), missing("audio.mediaId")),
    "callerId-number": (None, message(callerId=15550001234), invalid("callerId")),
    "audio-string": (None, message(audio="hello"), invalid("audio")),
    "audio-type-unknown": (None, message(audio=tts(type="SPEECH")), invalid("audio.type")),
    "audio-type-case": (None, message(audio=tts(type="tts")), invalid("audio.type")),
    "text-number": (None, message(audio=tts(text=42)), invalid("audio.text")),
    "textFormat-unknown": (None, message(audio=tts(textFormat="HTML")), invalid("audio.textFormat")),
    "textFormat-list": (None, message(audio=tts(textFormat=["SSML"])), invalid("audio.textFormat")),
    "location-file": (
        None,
        message(audio={"type": "URL", "location": "file:///x.wav"}),
        invalid("audio.location"),
    ),
    "mediaId-number": (None, message(audio={"type": "MEDIA", "mediaId": 7}), invalid("audio.mediaId")),
    "correlationId-51": (None, message(correlationId="x" * 51), invalid("correlationId")),
    "correlationId-charset": (None, message(correlationId="p_1"), invalid("correlationId")),
    "correlationId-newline": (None, message(correlationId="p-1\n"), invalid("correlationId")),
    "correlationId-number": (None, message(correlationId=12), invalid("correlationId")),
    "callbackUrl-scheme": (None, message(callbackUrl="ftp://example.com/cb"), invalid("callbackUrl")),
    "callbackUrl-relative": (None, message(callbackUrl="/callbacks/webex"), invalid("callbackUrl")),
    "authId-number": (None, message(callbackUrlAuthId=5), invalid("callbackUrlAuthId")),
    "callerId-no-plus": (None, message(callerId="15550001234"), BAD_SENDER),
    "callerId-short": (None, message(callerId="+1555"), BAD_SENDER),
    "dialed-no-plus": (None, message(dialedNumber="004155550101"), BAD_DESTINATION),
    "dialed-leading-zero": (None, message(dialedNumber="+0415555010"), BAD_DESTINATION),
    "dialed-too-long": (None, message(dialedNumber="+1415555010123456"), BAD_DESTINATION),
    "dialed-newline": (None, message(dialedNumber="+14155550101\n"), BAD_DESTINATION),
    "text-2001": (None, message(audio=tts(textFormat="TEXT", text="a" * 2001)), TOO_LONG),
    "ssml-6004": (None, message(audio=tts(text="<speak>" + "a" * 5990 + "</speak>")), TOO_LONG),
    "ssml-docs-example": (
        None,
        message(audio=tts(text="<text>Hello, world!!</text>")),
        invalid("audio.text"),
    ),
    "ssml-malformed": (None, message(audio=tts(text="<speak>Disk <b>full</speak>")), invalid("audio.text")),
    "ssml-plain-text": (None, message(audio=tts(text="Disk full")), invalid("audio.text")),
    "ssml-doctype": (None, message(audio=tts(text=DOCTYPE)), invalid("audio.text")),
    "ssml-doctype-lowercase": (None, message(audio=tts(text="<!doctype speak><speak/>")), invalid("audio.text")),
    "ssml-undefined-entity": (None, message(audio=tts(text="<speak>&nbsp;</speak>")), invalid("audio.text")),
    "ssml-unbound-prefix": (None, message(audio=tts(text="<speak><x:b/></speak>")), invalid("audio.text")),
    "ssml-two-roots": (None, message(audio=tts(text="<speak/><speak/>")), invalid("audio.text")),
    "ssml-speak-inside": (None, message(audio=tts(text="<p><speak/></p>")), invalid("audio.text")),
}


@pytest.mark.parametrize(("headers", "body", "expected"), list(VALIDATION.values()), ids=list(VALIDATION))
async def test_validation_errors(sim, headers, body, expected):
    status, code, text = expected
    all_headers = {k: v for k, v in {**AUTH, **(headers or {})}.items() if v is not None}
    resp = await post(sim, body, all_headers)
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert await resp.json() == {"code": code, "message": text}
    log = await admin(sim, "GET", "/_sim/requests")
    assert [(r["status"], r["code"]) for r in log] == [(status, code)]
    assert await admin(sim, "GET", "/_sim/calls") == []


@pytest.mark.parametrize(
    "audio",
    [
        tts(),
        tts(textFormat="TEXT", text="a" * 2000),
        tts(text="<speak>" + "a" * 5985 + "</speak>"),
        tts(text="<speak>Disk &amp; &lt;full&gt;</speak>"),
        tts(text='<?xml version="1.0"?><!-- page --><s:speak xmlns:s="http://www.w3.org/2001/10/synthesis"/>'),
        {"type": "TTS", "text": "Disk full"},
        {"type": "URL", "location": "https://example.com/major-incident.wav"},
        {"type": "MEDIA", "mediaId": "m-42"},
    ],
    ids=["ssml", "text-2000", "ssml-6000", "ssml-escaped", "ssml-prolog-prefixed", "tts-defaults", "url", "media"],
)
async def test_valid_requests_are_accepted(sim, audio):
    resp = await post(sim, message(audio=audio))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert set(body) == {"acceptedTime", "messageId", "correlationId"}
    assert uuid.UUID(body["messageId"]).version == 4
    assert body["correlationId"] == "p-3f2a-1"
    assert body["acceptedTime"] == "2026-01-01T00:00:00.000+00:00"
    assert uuid.UUID(resp.headers["Request-Id"])


async def test_content_type_with_charset_is_json(sim):
    resp = await post(sim, message(), {**AUTH, "Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 202


async def test_invalid_tts_settings_fall_back_to_defaults(sim):
    audio = tts(style="STANDARD", language="english", voice="en-US-AriaNeural", gender="female", engine=3)
    resp = await post(sim, message(audio=audio))
    assert resp.status == 202
    [call] = await admin(sim, "GET", "/_sim/calls")
    assert call["fallbacks"] == ["style", "language", "voice", "gender", "engine"]
    assert call["audio"] == tts()


async def test_request_log_masks_the_service_key(sim):
    await post(sim, message(callbackUrlAuthId="TNPXXXT09U"), {**AUTH, "Idempotency-Key": "k-1"})
    await post(sim, message(), {**AUTH, "Authorization": "Bearer not-the-key"})
    log = await admin(sim, "GET", "/_sim/requests")
    assert log[0]["headers"]["Authorization"] == "<service-key>"
    assert log[0]["headers"]["Idempotency-Key"] == "k-1"
    assert log[0]["body"] == message(callbackUrlAuthId="TNPXXXT09U")
    assert log[0]["method"] == "POST" and log[0]["path"] == "/v1/voice/messages"
    assert log[0]["status"] == 202 and log[0]["messageId"]
    assert log[1]["headers"]["Authorization"] == "Bearer ***"
    assert log[1]["status"] == 403 and log[1]["code"] == "7001"
    assert KEY not in json.dumps(log) and "not-the-key" not in json.dumps(log)


# --- idempotency ----------------------------------------------------------------------------------


async def test_same_idempotency_key_and_body_replays_the_original_call(sim):
    headers = {**AUTH, "Idempotency-Key": "p-3f2a-1"}
    first = await (await post(sim, message(), headers)).json()
    again = await post(sim, message(), headers)
    assert again.status == 202
    assert await again.json() == first
    assert len(await admin(sim, "GET", "/_sim/calls")) == 1
    log = await admin(sim, "GET", "/_sim/requests")
    assert log[1]["replayed"] is True and log[1]["messageId"] == first["messageId"]


async def test_same_idempotency_key_and_body_in_another_key_order_replays(sim):
    headers = {**AUTH, "Idempotency-Key": "p-3f2a-1"}
    first = await (await post(sim, message(), headers)).json()
    reordered = json.dumps(dict(reversed(message().items())), indent=2)
    again = await post(sim, reordered, headers)
    assert again.status == 202
    assert await again.json() == first


async def test_same_idempotency_key_on_another_path_is_refused(sim):
    headers = {**AUTH, "Idempotency-Key": "p-3f2a-1"}
    body = message(callbackUrl="http://127.0.0.1:1/cb")
    assert (await post(sim, body, headers)).status == 202
    resp = await post(sim, body, headers, path="/v1/voice/calls")
    assert resp.status == 400
    assert await resp.json() == {"code": "7004", "message": "Invalid parameter -  : Idempotency-Key"}


async def test_same_idempotency_key_with_another_body_is_refused(sim):
    headers = {**AUTH, "Idempotency-Key": "p-3f2a-1"}
    assert (await post(sim, message(), headers)).status == 202
    resp = await post(sim, message(dialedNumber="+14155550102"), headers)
    assert resp.status == 400
    assert await resp.json() == {"code": "7004", "message": "Invalid parameter -  : Idempotency-Key"}


async def test_idempotency_key_expires_after_an_hour(sim, clock):
    headers = {**AUTH, "Idempotency-Key": "p-3f2a-1"}
    first = await (await post(sim, message(), headers)).json()
    clock.now += 3600
    second = await (await post(sim, message(), headers)).json()
    assert first["messageId"] != second["messageId"]


async def test_a_failed_request_does_not_consume_the_idempotency_key(sim):
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"fail": {"status": 503, "count": 1}})
    headers = {**AUTH, "Idempotency-Key": "p-3f2a-1"}
    assert (await post(sim, message(), headers)).status == 503
    assert (await post(sim, message(), headers)).status == 202
    assert len(await admin(sim, "GET", "/_sim/calls")) == 1


# --- delivery receipts ----------------------------------------------------------------------------

OFFERED, ACCEPTED, ANSWERED = ("OFFERED", "7407"), ("ACCEPTED", "7408"), ("ANSWERED", "7519")
DROPPED, RELEASED, DISCONNECTED = ("DROPPED", "7409"), ("Released", "7405"), ("DISCONNECTED", "7410")
BUSY, NO_ANSWER, FAILED = ("REJECTED", "7402"), ("REJECTED", "7401"), ("Failed", "7005")

# outcome -> (receipts as (deliveryStatus, code), final call status, index of the instant of each receipt)
SEQUENCES = {
    "answer": ([OFFERED, ACCEPTED, ANSWERED, DROPPED, RELEASED], "ANSWERED", [0, 1, 2, 3, 3]),
    "voicemail": ([OFFERED, ACCEPTED, ANSWERED, DROPPED, RELEASED], "ANSWERED", [0, 1, 2, 3, 3]),
    "press": ([OFFERED, ACCEPTED, ANSWERED, DROPPED, RELEASED], "ANSWERED", [0, 1, 2, 3, 3]),
    "hangup_playing": (
        [OFFERED, ACCEPTED, ANSWERED, RELEASED, DISCONNECTED, DROPPED],
        "ANSWERED",
        [0, 1, 2, 3, 3, 3],
    ),
    "busy": ([OFFERED, ACCEPTED, DROPPED, BUSY], "REJECTED", [0, 1, 2, 2]),
    "no_answer": ([OFFERED, ACCEPTED, DROPPED, NO_ANSWER], "REJECTED", [0, 1, 2, 2]),
    "hangup_ringing": ([OFFERED, ACCEPTED, DISCONNECTED, DROPPED, BUSY], "REJECTED", [0, 1, 2, 2, 2]),
    "failed": ([FAILED], "MESSAGE EXPIRED", [0]),
}


@pytest.fixture
async def stepping_sim(aiohttp_client, clock):
    """A simulator whose clock moves one second per step, so bracketed receipts are recognisable."""

    async def sleep(seconds: float) -> None:
        clock.now += 1
        await asyncio.sleep(0)

    app = create_simulator_app(
        callback_auth=CB_AUTH, hub_secret=HUB_SECRET, callback_delay=0, step_delay=1, sleep=sleep, clock=clock
    )
    return await aiohttp_client(app)


@pytest.mark.parametrize("outcome", list(SEQUENCES))
async def test_receipt_sequences(stepping_sim, receiver, outcome):
    sim = stepping_sim
    expected, final_status, instants = SEQUENCES[outcome]
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"outcome": outcome})
    resp = await post(sim, message(callbackUrl=receiver.url, callbackUrlAuthId="TNPXXXT09U"))
    message_id = (await resp.json())["messageId"]

    received = await receiver.wait_for(len(expected))
    notifications = [r["json"]["deliveryInfoNotification"] for r in received]
    assert [(n["deliveryInfo"]["deliveryStatus"], n["deliveryInfo"]["code"]) for n in notifications] == expected
    stamps = [n["deliveryInfo"]["timeStamp"] for n in notifications]
    assert [sorted(set(stamps)).index(s) for s in stamps] == instants
    for r, n in zip(received, notifications, strict=True):
        assert r["headers"]["Authorization"] == "Bearer cb-secret"
        signature = hmac.new(HUB_SECRET.encode(), r["raw"], hashlib.sha256).hexdigest()
        assert r["headers"]["x-hub-signature"] == f"sha256={signature}"
        assert r["headers"]["Content-Type"] == "application/json"
        assert n["transid"] == message_id
        info = n["deliveryInfo"]
        assert set(info) == {"timeStamp", "Description", "code", "deliveryChannel", "additionalInfo",
                             "destination", "destinationType", "deliveryStatus"}  # fmt: skip
        assert info["destination"] == NUMBER and info["deliveryChannel"] == "voice"
        assert info["timeStamp"].endswith("Z")
        if info["deliveryStatus"] == "DISCONNECTED":
            # The documented platform bug: match these on transid.
            assert "correlationid" not in n and "callbackData" not in n
        else:
            assert n["correlationid"] == "p-3f2a-1" and "correlationId" not in n

    await sim.app[SIMULATOR].idle()
    status = await sim.get(f"/v1/voice/calls/{message_id}", headers={"Authorization": KEY})
    assert status.status == 200
    body = await status.json()
    assert set(body) == {"durationSeconds", "statusTime", "offeredTime", "answeredTime", "status"}
    assert body["status"] == final_status
    assert (body["answeredTime"] is not None) == (final_status == "ANSWERED")
    [call] = await admin(sim, "GET", "/_sim/calls")
    assert call["done"] and call["events"] == [e for e, _ in expected]
    callbacks = await admin(sim, "GET", "/_sim/callbacks")
    assert [c["status"] for c in callbacks] == [200] * len(expected)
    assert "cb-secret" not in json.dumps(callbacks)


async def test_unknown_auth_id_sends_no_auth_header(sim, receiver):
    await post(sim, message(callbackUrl=receiver.url, callbackUrlAuthId="UNKNOWN"))
    received = await receiver.wait_for(5)
    assert all("Authorization" not in r["headers"] for r in received)


async def test_without_hub_secret_there_is_no_signature(aiohttp_client, receiver):
    sim = await aiohttp_client(create_simulator_app(callback_delay=0))
    await post(sim, message(callbackUrl=receiver.url))
    received = await receiver.wait_for(5)
    assert all("x-hub-signature" not in r["headers"] for r in received)


async def test_callbacks_false_sends_nothing_but_the_call_completes(sim, receiver):
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"callbacks": False})
    message_id = (await (await post(sim, message(callbackUrl=receiver.url))).json())["messageId"]
    await sim.app[SIMULATOR].idle()
    assert receiver.received == []
    resp = await sim.get(f"/v1/voice/calls/{message_id}", headers={"Authorization": KEY})
    stamp = "2026-01-01T00:00:00.000+00:00"
    assert await resp.json() == {
        "durationSeconds": 0, "statusTime": stamp, "offeredTime": stamp, "answeredTime": stamp, "status": "ANSWERED"
    }  # fmt: skip
    [call] = await admin(sim, "GET", "/_sim/calls")
    assert call == {
        "message_id": message_id, "mode": "message", "caller_id": "+15550001234", "dialed_number": NUMBER,
        "correlation_id": "p-3f2a-1", "callback_url": receiver.url, "callback_auth_id": None, "outcome": "answer",
        "digit": "1", "keys": ["1"], "callbacks": False, "no_input_event": "COLLECTED_DIGITS", "detect_voicemail": False,
        "audio": tts(), "fallbacks": [], "accepted_time": stamp, "status": "ANSWERED", "status_time": stamp,
        "offered_time": stamp, "answered_time": stamp, "duration_seconds": 0, "done": True,
        "events": ["OFFERED", "ACCEPTED", "ANSWERED", "DROPPED", "Released"], "actions": [],
    }  # fmt: skip


async def test_failed_receipts_are_retried_but_not_after_a_4xx(aiohttp_client, receiver):
    app = create_simulator_app(callback_delay=0, callback_retry_delays=(0, 0, 0))
    sim = await aiohttp_client(app)
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"outcome": "failed"})
    receiver.respond = lambda payload: web.Response(status=500)
    await post(sim, message(callbackUrl=receiver.url))
    await receiver.wait_for(4)
    await app[SIMULATOR].idle()
    assert [(c["attempt"], c["status"]) for c in await admin(sim, "GET", "/_sim/callbacks")] == [
        (1, 500), (2, 500), (3, 500), (4, 500)
    ]  # fmt: skip

    await admin(sim, "POST", "/_sim/reset")
    receiver.received.clear()
    receiver.respond = lambda payload: web.Response(status=404)
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"outcome": "failed"})
    await post(sim, message(callbackUrl=receiver.url))
    await receiver.wait_for(1)
    await app[SIMULATOR].idle()
    assert [(c["attempt"], c["status"]) for c in await admin(sim, "GET", "/_sim/callbacks")] == [(1, 404)]


async def test_unreachable_callback_url_is_recorded(aiohttp_client, unused_tcp_port):
    app = create_simulator_app(callback_delay=0, callback_retry_delays=())
    sim = await aiohttp_client(app)
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"outcome": "failed"})
    await post(sim, message(callbackUrl=f"http://127.0.0.1:{unused_tcp_port}/cb"))
    await app[SIMULATOR].idle()
    [callback] = await admin(sim, "GET", "/_sim/callbacks")
    assert callback["status"] is None and callback["error"]


# --- call status ----------------------------------------------------------------------------------


async def test_status_of_unknown_id_is_404_with_empty_body(sim):
    resp = await sim.get("/v1/voice/calls/does-not-exist", headers={"Authorization": KEY})
    assert resp.status == 404
    assert await resp.read() == b""


async def test_the_health_probe_is_answered_as_the_platform_would(sim):
    """alert2voice's probe (provider/health.py): an unknown id is 404 with a good key, 403 7001 with a wrong one."""
    assert (await sim.get("/v1/voice/calls/a2v-probe-0123abcd", headers={"Authorization": KEY})).status == 404
    resp = await sim.get("/v1/voice/calls/a2v-probe-0123abcd", headers={"Authorization": "wrong-key"})
    assert resp.status == 403
    assert await resp.json() == {"code": "7001", "message": "Authentication failed."}


async def test_status_needs_the_service_key(sim):
    resp = await sim.get("/v1/voice/calls/x")
    assert resp.status == 403
    assert await resp.json() == {"code": "7002", "message": "Service key missing."}


async def test_status_before_the_call_is_offered_is_queued(aiohttp_client):
    gate = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await gate.wait()

    sim = await aiohttp_client(create_simulator_app(sleep=sleep))
    message_id = (await (await post(sim, message())).json())["messageId"]
    resp = await sim.get(f"/v1/voice/calls/{message_id}", headers={"Authorization": KEY})
    body = await resp.json()
    assert body["status"] == "QUEUED" and body["offeredTime"] is None and body["durationSeconds"] is None
    gate.set()


# --- admin API: scripted failures and delays ------------------------------------------------------


async def test_number_fail_500_then_success(sim):
    script = await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"fail": {"status": 500, "count": 2}})
    assert script["fail"] == {"status": 500, "count": 2, "retry_after": None, "code": None}
    answers = [await post(sim, message()) for _ in range(3)]
    assert [a.status for a in answers] == [500, 500, 202]
    assert await answers[0].json() == {"code": "7006", "message": "Internal error."}
    other = await post(sim, message(dialedNumber="+14155550199"))
    assert other.status == 202
    assert (await admin(sim, "GET", "/_sim/numbers"))[NUMBER]["fail"] is None


async def test_number_fail_429_carries_retry_after(sim):
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"fail": {"status": 429, "count": 1, "retry_after": 2}})
    resp = await post(sim, message())
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "2"
    assert await resp.json() == {"code": "7020", "message": "Transaction limit reached."}


async def test_number_fail_503(sim):
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"fail": {"status": 503}})
    resp = await post(sim, message())
    assert resp.status == 503 and (await resp.json())["code"] == "7006"
    assert (await post(sim, message())).status == 202


async def test_number_fail_with_a_chosen_code(sim):
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"fail": {"status": 403, "code": "7127"}})
    resp = await post(sim, message())
    assert resp.status == 403
    assert await resp.json() == {"code": "7127", "message": "Source IP not allowed."}


async def test_global_outage_until_cleared(sim):
    await admin(sim, "PUT", "/_sim/fail", {"status": 503})
    assert (await admin(sim, "GET", "/_sim/fail"))["status"] == 503
    for number in (NUMBER, "+442071838750"):
        assert (await post(sim, message(dialedNumber=number))).status == 503
    # An outage comes before authentication, like a load balancer in front of the API.
    assert (await sim.get("/v1/voice/calls/x")).status == 503
    await admin(sim, "DELETE", "/_sim/fail")
    assert await admin(sim, "GET", "/_sim/fail") is None
    assert (await post(sim, message())).status == 202


async def test_global_outage_with_count(sim):
    await admin(sim, "PUT", "/_sim/fail", {"status": 500, "count": 2})
    statuses = [(await post(sim, message(dialedNumber=n))).status for n in (NUMBER, "+442071838750", NUMBER)]
    assert statuses == [500, 500, 202]


async def test_delay_before_answering(aiohttp_client):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    sim = await aiohttp_client(create_simulator_app(callback_delay=0, sleep=sleep))
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"delay": 3.5})
    assert (await post(sim, message())).status == 202
    assert 3.5 in slept
    log = await admin(sim, "GET", "/_sim/requests")
    assert log[0]["delay"] == 3.5


async def test_delay_count_holds_only_the_next_answers(aiohttp_client):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    sim = await aiohttp_client(create_simulator_app(callback_delay=0, sleep=sleep))
    script = await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"outcome": "no_answer", "delay": 3.5,
                                                                 "delay_count": 1})
    assert script["delay_count"] == 1
    headers = {**AUTH, "Idempotency-Key": "p-held-1"}
    first = await post(sim, message(), headers)
    # The try whose answer was held placed the call; its retry (same key, same body) gets the same 202 at once.
    again = await post(sim, message(), headers)
    assert (first.status, again.status) == (202, 202)
    assert (await again.json())["messageId"] == (await first.json())["messageId"]
    assert slept == [3.5]
    log = await admin(sim, "GET", "/_sim/requests")
    assert [(r["delay"], r.get("replayed", False)) for r in log] == [(3.5, False), (0.0, True)]
    assert len(await admin(sim, "GET", "/_sim/calls")) == 1
    # Spent: the script is the number's outcome without a delay, not the default.
    numbers = await admin(sim, "GET", "/_sim/numbers")
    assert (numbers[NUMBER]["delay"], numbers[NUMBER]["delay_count"], numbers[NUMBER]["outcome"]) == (
        0.0, None, "no_answer")


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (f"/_sim/numbers/{NUMBER}", {"outcome": "explode"}, "outcome must be one of"),
        (f"/_sim/numbers/{NUMBER}", {"delay": 1, "delay_count": 0}, "delay_count must be"),
        (f"/_sim/numbers/{NUMBER}", {"colour": "red"}, "unknown keys: colour"),
        (f"/_sim/numbers/{NUMBER}", {"digit": "x"}, "digit must be"),
        (f"/_sim/numbers/{NUMBER}", {"keys": "*1"}, "keys must be a list"),
        (f"/_sim/numbers/{NUMBER}", {"keys": ["*", ""]}, "keys must be a list"),
        (f"/_sim/numbers/{NUMBER}", {"delay": -1}, "delay must be"),
        (f"/_sim/numbers/{NUMBER}", {"callbacks": "no"}, "callbacks must be"),
        (f"/_sim/numbers/{NUMBER}", {"fail": {"status": 200}}, "fail.status must be"),
        (f"/_sim/numbers/{NUMBER}", {"fail": {"status": 500, "count": 0}}, "fail.count must be"),
        ("/_sim/fail", {"status": 500, "retry_after": "soon"}, "fail.retry_after must be"),
        ("/_sim/fail", [1], "not a JSON object"),
    ],
)
async def test_admin_rejects_bad_scripts(sim, path, body, error):
    resp = await sim.put(path, json=body)
    assert resp.status == 400
    assert error in (await resp.json())["error"]


async def test_admin_numbers_list_delete_and_reset(sim, receiver):
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"outcome": "busy", "digit": "9"})
    assert (await admin(sim, "GET", "/_sim/numbers"))[NUMBER]["outcome"] == "busy"
    await admin(sim, "DELETE", f"/_sim/numbers/{NUMBER}")
    assert await admin(sim, "GET", "/_sim/numbers") == {}
    await admin(sim, "PUT", "/_sim/fail", {"status": 500})
    await post(sim, message())
    await admin(sim, "POST", "/_sim/reset")
    for path in ("/_sim/requests", "/_sim/calls", "/_sim/callbacks"):
        assert await admin(sim, "GET", path) == []
    assert await admin(sim, "GET", "/_sim/fail") is None


# --- programmable calls (/v1/voice/calls) ---------------------------------------------------------

PLAY_AND_COLLECT = {
    "action": "PLAY",
    "audio": [tts()],
    "collectInput": {"maxDigits": 1, "digitTimeout": 5, "terminationDigit": "#"},
}
THANKS = {"action": "PLAY", "audio": [tts(text="<speak>Acknowledged.</speak>")]}


def ivr(payload: dict[str, Any]) -> web.Response:
    """A small app: play and collect on answer, thank on the digit, hang up otherwise."""
    event = payload["event"]
    if event == "ANSWERED":
        return web.json_response(PLAY_AND_COLLECT)
    if event == "COLLECTED_DIGITS" and payload["digitsReceived"] == "1":
        return web.json_response(THANKS)
    if event == "DROPPED":
        return web.Response()
    return web.json_response({"action": "HANGUP"})


def call_body(callback_url: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "callerId": "+15550001234",
        "dialedNumber": NUMBER,
        "recordCallSeconds": 0,
        "detectVoiceMail": True,
        "correlationId": "p-3f2a-1",
        "callbackUrl": callback_url,
        "callbackUrlAuthId": "TNPXXXT09U",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


async def place_interactive(sim, receiver, outcome: str, **script: Any) -> str:
    await admin(sim, "PUT", f"/_sim/numbers/{NUMBER}", {"outcome": outcome, **script})
    resp = await post(sim, call_body(receiver.url), path="/v1/voice/calls")
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert set(body) == {"sessionId", "status"} and body["status"] == "QUEUED"
    return body["sessionId"]


async def test_interactive_press_acknowledges(sim, receiver):
    receiver.respond = ivr
    session = await place_interactive(sim, receiver, "press", digit="1")
    received = await receiver.wait_for(4)
    await sim.app[SIMULATOR].idle()
    assert receiver.events() == ["ANSWERED", "COLLECTED_DIGITS", "PLAYED", "DROPPED"]
    answered, digits, played, dropped = (r["json"] for r in received)
    assert answered["sessionId"] == session and answered["dialedNumber"] == NUMBER
    assert answered["offeredTime"] and answered["answeredTime"] and answered["eventTime"].endswith("Z")
    assert digits["status"] == "SUCCESS" and digits["digitsReceived"] == "1" and digits["numOfDigits"] == 1
    assert digits["transactionId"] and played["transactionId"]
    assert dropped["droppedBy"] == "APPLICATION"
    for r in received:
        assert r["headers"]["Authorization"] == "Bearer cb-secret"
        expected = hmac.new(HUB_SECRET.encode(), r["raw"], hashlib.sha256).hexdigest()
        assert r["headers"]["x-hub-signature"] == f"sha256={expected}"
    [call] = await admin(sim, "GET", "/_sim/calls")
    assert [a["event"] for a in call["actions"]] == ["ANSWERED", "COLLECTED_DIGITS", "PLAYED"]
    assert [a["action"]["action"] for a in call["actions"]] == ["PLAY", "PLAY", "HANGUP"]
    assert all(a["error"] is None for a in call["actions"])
    assert call["status"] == "ANSWERED" and call["done"]


async def test_interactive_press_keys_one_per_prompt(sim, receiver):
    # A phone menu: "*" repeats, "5" passes the page on. Every prompt collects a key; the keys run out, then none.
    def menu(payload: dict[str, Any]) -> web.Response:
        if payload["event"] == "DROPPED":
            return web.Response()
        if payload["event"] == "COLLECTED_DIGITS" and payload["digitsReceived"] == "5":
            return web.json_response({"action": "HANGUP"})
        return web.json_response(PLAY_AND_COLLECT)

    receiver.respond = menu
    await place_interactive(sim, receiver, "press", keys=["*", "9", "5"])
    received = await receiver.wait_for(5)
    assert receiver.events() == ["ANSWERED", "COLLECTED_DIGITS", "COLLECTED_DIGITS", "COLLECTED_DIGITS", "DROPPED"]
    assert [r["json"]["digitsReceived"] for r in received[1:4]] == ["*", "9", "5"]
    [call] = await admin(sim, "GET", "/_sim/calls")
    assert call["keys"] == ["*", "9", "5"]


async def test_interactive_answer_without_keypress(sim, receiver):
    receiver.respond = ivr
    await place_interactive(sim, receiver, "answer")
    received = await receiver.wait_for(3)
    assert receiver.events() == ["ANSWERED", "COLLECTED_DIGITS", "DROPPED"]
    assert received[1]["json"]["numOfDigits"] == 0 and received[1]["json"]["digitsReceived"] == ""


async def test_interactive_no_input_as_played(sim, receiver):
    receiver.respond = ivr
    await place_interactive(sim, receiver, "answer", no_input_event="PLAYED")
    await receiver.wait_for(3)
    assert receiver.events() == ["ANSWERED", "PLAYED", "DROPPED"]


async def test_interactive_sdk_style_top_level_max_digits(sim, receiver):
    sdk_play = {
        "action": "PLAY",
        "audio": [tts()],
        "maxDigits": 1,
        "digitTimeout": 5,
        "terminationDigit": "#",
    }
    receiver.respond = lambda p: web.json_response(sdk_play if p["event"] == "ANSWERED" else {"action": "HANGUP"})
    await place_interactive(sim, receiver, "press", digit="1")
    await receiver.wait_for(3)
    assert receiver.events() == ["ANSWERED", "COLLECTED_DIGITS", "DROPPED"]


@pytest.mark.parametrize(
    ("outcome", "code", "status"),
    [("no_answer", "2002", "REJECTED"), ("busy", "2003", "REJECTED"), ("hangup_ringing", "1002", "REJECTED"),
     ("failed", "3002", "DROPPED")],
)  # fmt: skip
async def test_interactive_not_answered(sim, receiver, outcome, code, status):
    receiver.respond = ivr
    session = await place_interactive(sim, receiver, outcome)
    [dropped] = await receiver.wait_for(1)
    await sim.app[SIMULATOR].idle()
    assert dropped["json"]["event"] == "DROPPED"
    assert dropped["json"]["status"] == "FAILURE" and dropped["json"]["error"]["code"] == code
    resp = await sim.get(f"/v1/voice/calls/{session}", headers={"Authorization": KEY})
    assert (await resp.json())["status"] == status


async def test_interactive_hangup_while_playing(sim, receiver):
    receiver.respond = ivr
    await place_interactive(sim, receiver, "hangup_playing")
    received = await receiver.wait_for(2)
    assert receiver.events() == ["ANSWERED", "DROPPED"]
    assert received[1]["json"]["droppedBy"] == "CALLEE" and received[1]["json"]["error"]["code"] == "2008"


async def test_interactive_voicemail_detected(sim, receiver):
    receiver.respond = ivr
    await place_interactive(sim, receiver, "voicemail")
    received = await receiver.wait_for(3)
    assert receiver.events() == ["ANSWERED", "VMDETECTED", "DROPPED"]
    assert received[1]["json"]["correlationId"] == "p-3f2a-1" and received[1]["json"]["transactionId"]


async def test_interactive_invalid_action_ends_the_call(sim, receiver):
    receiver.respond = lambda p: web.json_response({"action": "DANCE"})
    await place_interactive(sim, receiver, "answer")
    received = await receiver.wait_for(2)
    await sim.app[SIMULATOR].idle()
    assert received[1]["json"]["status"] == "FAILURE"
    [call] = await admin(sim, "GET", "/_sim/calls")
    assert "no valid action" in call["actions"][0]["error"]


async def test_interactive_play_with_invalid_audio_is_recorded(sim, receiver):
    receiver.respond = lambda p: web.json_response({"action": "PLAY", "audio": [tts(text="<text>x</text>")]})
    await place_interactive(sim, receiver, "answer")
    await receiver.wait_for(2)
    await sim.app[SIMULATOR].idle()
    [call] = await admin(sim, "GET", "/_sim/calls")
    assert call["actions"][0]["error"] == "Invalid parameter -  : audio[0].text"


@pytest.mark.parametrize(
    ("overrides", "code", "text"),
    [
        ({"callbackUrl": ...}, "7003", "Mandatory parameter missing - : callbackUrl"),
        ({"dialedNumber": ...}, "7003", "Mandatory parameter missing - : dialedNumber"),
        ({"detectVoiceMail": "yes"}, "7004", "Invalid parameter -  : detectVoiceMail"),
        ({"recordCallSeconds": -1}, "7004", "Invalid parameter -  : recordCallSeconds"),
        ({"dialedNumber": "4155550101"}, "7102", "Invalid destination."),
    ],
)
async def test_interactive_validation(sim, overrides, code, text):
    resp = await post(sim, call_body("http://127.0.0.1:1/cb", **overrides), path="/v1/voice/calls")
    assert resp.status == 400
    assert await resp.json() == {"code": code, "message": text}


# --- run_simulator --------------------------------------------------------------------------------


async def test_run_simulator_serves_until_cancelled(caplog):
    caplog.set_level(logging.INFO, logger="alert2voice.simulator.server")
    urls: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(run_simulator("127.0.0.1", 0, on_listening=urls.put_nowait, callback_delay=0))
    url = await asyncio.wait_for(urls.get(), timeout=5)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/voice/messages", json=message(), headers={"Authorization": KEY}) as resp,
    ):
        assert resp.status == 202
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert f"listening on {url}" in caplog.text
