"""Interactive mode (SPEC §5) over real HTTP: programmable calls, call events answered with actions, silences."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from alert2voice import interactive
from alert2voice.config import AcknowledgementConfig, Config, SilenceConfig
from alert2voice.metrics import Metrics
from alert2voice.provider import CallStatus
from alert2voice.silences import Silencer
from alert2voice.web.keys import DISPATCHER, SILENCER
from tests import e2e_support
from tests.harness import AUTH, CB_AUTH, config_changes
from tests.support import CONFIG, INTERACTIVE, PAYMENTS, alert, make_config, payload, settle

SSML = "{http://www.w3.org/2001/10/synthesis}"
COLLECT = {"maxDigits": 1, "digitTimeout": 8, "terminationDigit": "#"}
ALICE, BOB = "+14155550101", "+442071838750"
# The default menu (acknowledgement.digit, escalate_digit, repeat_digit), as every firing call says it.
MENU = "Press 1 to acknowledge, 5 to pass to the next person, star to repeat."


def interactive_config(text: str = CONFIG, **replace: str):
    return make_config(text, **INTERACTIVE, **replace)


@pytest.fixture
def config(request: pytest.FixtureRequest) -> Config:
    return interactive_config(**config_changes(request))


async def page_and_call(client, harness, *alerts) -> str:
    """Post a payments alert, let the dispatcher place the call; returns the sessionId of the 202."""
    resp = await client.post("/alerts", data=json.dumps(payload(*(alerts or (alert(PAYMENTS),)))),
                             headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 200
    await client.app[DISPATCHER].settled()
    return harness.provider.accepted[-1].message_id


async def send(client, name: str, session: str, **fields: Any) -> dict[str, Any]:
    """POST one call event as the platform does (sessionId, no correlationId); returns the action."""
    body = {"event": name, "eventTime": "2026-11-26T15:00:10.000Z", "sessionId": session, **fields}
    resp = await client.post("/callbacks/webex", data=json.dumps(body),
                             headers={"Content-Type": "application/json", **CB_AUTH})
    assert resp.status == 200
    return await resp.json()


def digits(d: str) -> dict[str, Any]:
    return {"status": "SUCCESS", "numOfDigits": len(d), "digitsReceived": d, "terminationDigit": "#",
            "transactionId": "t-1"}


def spoken(audio: dict[str, Any]) -> str:
    root = ET.fromstring(audio["text"])
    assert root.tag == f"{SSML}speak"
    return " ".join("".join(root.itertext()).split())


async def pages(client) -> list[dict[str, Any]]:
    return (await (await client.get("/api/v1/pages")).json())["pages"]


# ------------------------------------------------------------------------------------------ placing


async def test_page_call_is_programmable_and_resolved_notice_is_a_message(client, harness):
    session = await page_and_call(client, harness)
    [placed] = harness.provider.placed
    assert placed.mode == "interactive"
    body = placed.request.call_body()
    assert body["callbackUrl"] == "http://127.0.0.1:9095/callbacks/webex"
    assert body["callbackUrlAuthId"] == "A2V"
    assert body["detectVoiceMail"] is True
    await send(client, "ANSWERED", session)
    await send(client, "COLLECTED_DIGITS", session, **digits("1"))
    resp = await client.post("/alerts", data=json.dumps(payload(alert(PAYMENTS, status="resolved"))),
                             headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 200
    await client.app[DISPATCHER].settled()
    resolved = harness.provider.placed[1]
    assert resolved.mode == "message"
    assert "resolved" in spoken(resolved.request.audio.to_json()).lower()


# --------------------------------------------------------------------------------------- call events


async def test_answered_plays_the_page_and_collects_the_configured_digit(harness):
    config = interactive_config(CONFIG + 'acknowledgement: {digit: "7"}\n')
    client = await harness.start(config)
    session = await page_and_call(client, harness, alert(PAYMENTS, summary="CPU high on node1"))
    action = await send(client, "ANSWERED", session, callerId="+15550001234", dialedNumber=ALICE)
    assert action["action"] == "PLAY"
    assert action["collectInput"] == COLLECT
    [audio] = action["audio"]
    assert {k: v for k, v in audio.items() if k != "text"} == {
        "type": "TTS", "style": "NEURAL", "language": "en-US", "voice": "AriaNeural", "gender": "FEMALE",
        "engine": "AZURE", "textFormat": "SSML"}
    text = spoken(audio)
    assert "CPU high on node1" in text
    assert text.endswith("Press 7 to acknowledge, 5 to pass to the next person, star to repeat.")
    assert harness.metric("alert2voice_callbacks_total", event="answered", result="ok") == 1


async def test_route_recording_plays_before_the_speech(harness):
    config = interactive_config(**{"    send_resolved: true\n": "    send_resolved: true\n"
                                   "    audio: {type: URL, location: https://example.com/incident.wav}\n"})
    client = await harness.start(config)
    session = await page_and_call(client, harness)
    action = await send(client, "ANSWERED", session)
    recording, speech = action["audio"]
    assert recording == {"type": "URL", "location": "https://example.com/incident.wav"}
    assert spoken(speech).endswith(MENU)


async def test_user_template_without_prompt_gets_the_prompt_after_it(harness, tmp_path: Path):
    (tmp_path / "short.ssml.j2").write_text(
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="{{ language }}">'
        "{{ alerts[0].alertname }} on {{ route }}.</speak>\n")
    config = interactive_config(CONFIG + f"templates: {{directory: {tmp_path}, firing: short.ssml.j2}}\n")
    client = await harness.start(config)
    session = await page_and_call(client, harness)
    action = await send(client, "ANSWERED", session)
    assert [spoken(a) for a in action["audio"]] == ["HighCPU on payments.", MENU]


async def test_digit_acknowledges_thanks_and_ends_the_escalation(client, harness):
    session = await page_and_call(client, harness)
    await send(client, "ANSWERED", session)
    action = await send(client, "COLLECTED_DIGITS", session, **digits("1"))
    assert action["action"] == "PLAY"
    assert "collectInput" not in action
    [audio] = action["audio"]
    assert spoken(audio) == "Acknowledged. Thank you."
    assert await send(client, "PLAYED", session, status="SUCCESS", playedDuration=1) == {"action": "HANGUP"}
    assert await send(client, "DROPPED", session, status="SUCCESS", droppedBy="APPLICATION") == {"action": "HANGUP"}
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="acknowledged") == 1
    assert harness.metric("alert2voice_callbacks_total", event="collected_digits", result="ok") == 1
    assert harness.metric("alert2voice_callbacks_total", event="played", result="stale") == 1
    [page] = await pages(client)
    assert page["state"] == "acknowledged"
    assert page["calls"][0]["state"] == "acknowledged"
    harness.clock.advance(timedelta(hours=1))
    await client.app[DISPATCHER].settled()
    assert len(harness.provider.placed) == 1


@pytest.mark.parametrize(("misses", "menu_only"), [
    ([("COLLECTED_DIGITS", digits("9")), ("COLLECTED_DIGITS", digits(""))], True),  # a key not in the menu
    ([("COLLECTED_DIGITS", digits("")), ("COLLECTED_DIGITS", digits("9"))], False),  # no key: the message again
    ([("PLAYED", {"status": "SUCCESS", "playedDuration": 1})] * 2, False),  # the other way a digit timeout may show
])
async def test_two_misses_hang_up_and_escalate(client, harness, misses, menu_only):
    session = await page_and_call(client, harness)
    first = await send(client, "ANSWERED", session)
    (event1, fields1), (event2, fields2) = misses
    replay = await send(client, event1, session, **fields1)
    assert replay["action"] == "PLAY"
    assert replay["collectInput"] == COLLECT
    assert [spoken(a) for a in replay["audio"]] == ([MENU] if menu_only else [spoken(first["audio"][0])])
    assert await send(client, event2, session, **fields2) == {"action": "HANGUP"}
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="no_answer") == 1
    [page] = await pages(client)
    assert page["state"] == "active"
    assert page["calls"][0]["error"] == "answered but not acknowledged"
    d = client.app[DISPATCHER]
    await settle(d)
    assert len(harness.provider.placed) == 1  # the step's 3m interval first
    harness.clock.advance(timedelta(minutes=3))
    await settle(d)
    second = harness.provider.placed[1]
    assert second.mode == "interactive"
    assert second.request.dialed_number == ALICE
    assert second.request.correlation_id.endswith("-2")


# ------------------------------------------------------------------------------------------ the menu


@pytest.mark.parametrize(("keys", "said"), [
    ({}, MENU),
    ({"digit": "#", "escalate_digit": "0", "repeat_digit": None}, "Press pound to acknowledge, 0 to pass to the next person."),
    ({"escalate_digit": None, "repeat_digit": None}, "Press 1 to acknowledge."),
])
def test_the_menu_says_the_configured_keys(keys, said):
    assert interactive.prompt_text(AcknowledgementConfig(**keys)) == said


async def test_escalate_key_ends_the_call_and_calls_the_next_step_at_once(client, harness):
    session = await page_and_call(client, harness)
    await send(client, "ANSWERED", session)
    action = await send(client, "COLLECTED_DIGITS", session, **digits("5"))
    assert action["action"] == "PLAY" and "collectInput" not in action
    assert [spoken(a) for a in action["audio"]] == ["Passing this on to the next person. Goodbye."]
    assert await send(client, "PLAYED", session, status="SUCCESS", playedDuration=1) == {"action": "HANGUP"}
    [page] = await pages(client)
    assert page["state"] == "active"
    assert (page["calls"][0]["state"], page["calls"][0]["error"]) == ("cancelled", "escalated by alice")
    await client.app[DISPATCHER].settled()  # no clock advance: the next step (bob) is due now, not in 3m
    _, second = harness.provider.placed
    assert second.request.dialed_number == BOB and second.mode == "interactive"
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="cancelled") == 1
    assert harness.metric("alert2voice_pages_acknowledged_total", via="phone") == 0


async def test_escalate_key_on_a_page_acknowledged_meanwhile_only_hangs_up(client, harness):
    session = await page_and_call(client, harness)
    await send(client, "ANSWERED", session)
    [page] = await pages(client)
    resp = await client.post(f"/api/v1/pages/{page['key']}/ack", data=json.dumps({"by": "dana"}))
    assert resp.status == 200
    assert await send(client, "COLLECTED_DIGITS", session, **digits("5")) == {"action": "HANGUP"}
    [page] = await pages(client)
    assert page["state"] == "acknowledged"
    assert page["calls"][0]["state"] == "cancelled"
    assert page["calls"][0]["error"].startswith("escalated by alice: page ")
    await client.app[DISPATCHER].settled()
    assert len(harness.provider.placed) == 1


async def test_repeat_key_plays_the_message_and_menu_again_then_the_digit_acknowledges(client, harness):
    session = await page_and_call(client, harness)
    first = await send(client, "ANSWERED", session)
    assert spoken(first["audio"][0]).endswith(MENU)
    for _ in range(3):  # a repeat is not a miss: it may be asked for more than once
        again = await send(client, "COLLECTED_DIGITS", session, **digits("*"))
        assert again == first
    thanks = await send(client, "COLLECTED_DIGITS", session, **digits("1"))
    assert [spoken(a) for a in thanks["audio"]] == ["Acknowledged. Thank you."]
    [page] = await pages(client)
    assert (page["state"], page["acknowledged"]["by"], page["acknowledged"]["via"]) == ("acknowledged", "alice", "phone")
    assert harness.metric("alert2voice_pages_acknowledged_total", via="phone") == 1


async def test_repeat_key_is_bounded(client, harness):
    session = await page_and_call(client, harness)
    await send(client, "ANSWERED", session)
    for _ in range(4):  # five plays in all
        assert (await send(client, "COLLECTED_DIGITS", session, **digits("*")))["action"] == "PLAY"
    menu = await send(client, "COLLECTED_DIGITS", session, **digits("*"))  # then it is a key like any other
    assert [spoken(a) for a in menu["audio"]] == [MENU]
    assert await send(client, "COLLECTED_DIGITS", session, **digits("*")) == {"action": "HANGUP"}


async def test_unknown_key_repeats_the_menu_once_then_counts_as_not_reached(client, harness):
    session = await page_and_call(client, harness)
    await send(client, "ANSWERED", session)
    menu = await send(client, "COLLECTED_DIGITS", session, **digits("9"))
    assert menu["collectInput"] == COLLECT
    assert [spoken(a) for a in menu["audio"]] == [MENU]
    assert await send(client, "COLLECTED_DIGITS", session, **digits("7")) == {"action": "HANGUP"}
    [page] = await pages(client)
    assert page["state"] == "active"
    assert (page["calls"][0]["state"], page["calls"][0]["error"]) == ("no_answer", "answered but not acknowledged")
    await client.app[DISPATCHER].settled()
    assert len(harness.provider.placed) == 1  # not reached: the step's interval first, as for no answer


async def test_keys_can_be_moved_or_turned_off(harness):
    config = interactive_config(CONFIG + 'acknowledgement: {digit: "#", escalate_digit: null, repeat_digit: "0"}\n')
    client = await harness.start(config)
    session = await page_and_call(client, harness)
    first = await send(client, "ANSWERED", session)
    assert spoken(first["audio"][0]).endswith("Press pound to acknowledge, 0 to repeat.")
    assert first["collectInput"]["terminationDigit"] == "*"
    assert await send(client, "COLLECTED_DIGITS", session, **digits("0")) == first
    menu = await send(client, "COLLECTED_DIGITS", session, **digits("5"))  # no escalate key: unknown
    assert [spoken(a) for a in menu["audio"]] == ["Press pound to acknowledge, 0 to repeat."]
    assert (await send(client, "COLLECTED_DIGITS", session, **digits("#")))["action"] == "PLAY"
    [page] = await pages(client)
    assert page["state"] == "acknowledged"


async def test_voicemail_hangs_up_and_counts_as_not_reached(client, harness):
    session = await page_and_call(client, harness)
    await send(client, "ANSWERED", session)
    action = await send(client, "VMDETECTED", session, correlationId=harness.provider.requests[0].correlation_id,
                        transactionId="t-2")
    assert action == {"action": "HANGUP"}
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="voicemail") == 1
    [page] = await pages(client)
    assert page["state"] == "active"


@pytest.mark.parametrize(("code", "outcome"), [("2003", "busy"), ("1002", "busy"), ("2002", "no_answer")])
async def test_dropped_unanswered(client, harness, code, outcome):
    session = await page_and_call(client, harness)
    action = await send(client, "DROPPED", session, status="FAILURE", droppedBy="CALLEE",
                        error={"code": code, "message": "..."})
    assert action == {"action": "HANGUP"}
    assert harness.metric("alert2voice_calls_total", route="payments", outcome=outcome) == 1
    [page] = await pages(client)
    assert page["calls"][0]["error"] is None


async def test_hung_up_during_the_prompt_is_not_reached(client, harness):
    session = await page_and_call(client, harness)
    await send(client, "ANSWERED", session)
    await send(client, "DROPPED", session, status="SUCCESS", droppedBy="CALLEE",
               error={"code": "2008", "message": "Call Dropped by Network/End user"})
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="no_answer") == 1
    [page] = await pages(client)
    assert page["calls"][0]["error"] == "answered but not acknowledged"


async def test_unknown_session_is_hung_up(client, harness):
    assert await send(client, "ANSWERED", "no-such-session") == {"action": "HANGUP"}
    assert harness.metric("alert2voice_callbacks_total", event="answered", result="unknown") == 1


async def test_status_poll_of_an_answered_call_is_not_an_acknowledgement(client, harness):
    await page_and_call(client, harness)
    d = client.app[DISPATCHER]
    harness.provider.set_status("msg-1", CallStatus("ANSWERED", None, "2026-11-26T15:00:05Z", {}))
    harness.clock.advance(timedelta(minutes=2))
    await settle(d)
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="answered") == 0
    harness.provider.set_status("msg-1", CallStatus("DROPPED", 40, "2026-11-26T15:00:05Z", {}))
    harness.clock.advance(timedelta(minutes=1))
    await settle(d)
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="no_answer") == 1
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="answered") == 0


async def test_events_hold_off_the_status_poll(client, harness):
    session = await page_and_call(client, harness)
    harness.clock.advance(timedelta(seconds=90))
    await send(client, "ANSWERED", session)
    harness.clock.advance(timedelta(seconds=60))  # 2m30s after placing: past the deadline, not past the events'
    await client.app[DISPATCHER].settled()
    assert harness.provider.status_queries == []


# ------------------------------------------------------------------------------------------ silences


@pytest.fixture
async def alertmanager(aiohttp_server):
    """A fake Alertmanager recording POST /api/v2/silences; `status` scripts its answer."""
    received: list[dict[str, Any]] = []
    state = {"status": 200}

    async def post_silence(request: web.Request) -> web.Response:
        received.append(await request.json())
        if state["status"] != 200:
            return web.Response(status=state["status"], text="bad silence")
        return web.json_response({"silenceID": f"s-{len(received)}"})

    app = web.Application()
    app.router.add_post("/api/v2/silences", post_silence)
    server = await aiohttp_server(app, host="127.0.0.1")
    server.received, server.state = received, state
    return server


def silencing_config(am) -> Any:
    return interactive_config(CONFIG + f"acknowledgement: {{silence: {{alertmanager_url: 'http://127.0.0.1:{am.port}/',"
                                       " duration: 2h}}\n")


async def test_acknowledgement_silences_exactly_the_pages_alerts(harness, alertmanager):
    client = await harness.start(silencing_config(alertmanager))
    node2 = {**PAYMENTS, "instance": "node2:9100", "replica": "b"}  # replica: a dedup.ignore_labels label
    session = await page_and_call(client, harness, alert(PAYMENTS), alert(node2))
    await send(client, "ANSWERED", session)
    action = await send(client, "COLLECTED_DIGITS", session, **digits("1"))
    assert spoken(action["audio"][0]) == "Acknowledged. Thank you."
    await client.app[SILENCER].idle()
    [page] = await pages(client)

    def eq(labels):
        return [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in sorted(labels.items())]

    common = {"startsAt": "2026-11-26T15:00:00.000Z", "endsAt": "2026-11-26T17:00:00.000Z",
              "createdBy": "alert2voice", "comment": f"Acknowledged by alice by phone (page {page['key'][:12]})"}
    node2.pop("replica")
    assert sorted(alertmanager.received, key=json.dumps) == sorted(
        [{"matchers": eq(PAYMENTS), **common}, {"matchers": eq(node2), **common}], key=json.dumps)
    assert harness.metric("alert2voice_silence_requests_total", result="created") == 2
    assert harness.metric("alert2voice_silence_requests_total", result="failed") == 0


async def test_silence_failure_is_logged_and_not_retried_on_4xx(harness, alertmanager, caplog):
    alertmanager.state["status"] = 400
    client = await harness.start(silencing_config(alertmanager))
    session = await page_and_call(client, harness)
    await send(client, "ANSWERED", session)
    with caplog.at_level(logging.ERROR, logger="alert2voice.silences"):
        action = await send(client, "COLLECTED_DIGITS", session, **digits("1"))
        await client.app[SILENCER].idle()
    assert action["action"] == "PLAY"
    assert len(alertmanager.received) == 1
    errors = [r for r in caplog.records if r.name == "alert2voice.silences" and r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["silence not created"]
    assert "HTTP 400: bad silence" in errors[0].error
    assert harness.metric("alert2voice_silence_requests_total", result="failed") == 1
    assert harness.metric("alert2voice_silence_requests_total", result="created") == 0
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="acknowledged") == 1


async def test_silence_requests_are_counted_once_each_after_retries(alertmanager, harness):
    """Against a failing Alertmanager (HTTP 500): three attempts, one `failed`; then one `created`."""
    metrics = Metrics(harness.registry)
    # Pre-created: both series exist at 0 before any silence is asked for.
    assert [harness.registry.get_sample_value("alert2voice_silence_requests_total", {"result": r})
            for r in ("created", "failed")] == [0.0, 0.0]
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    silence = SilenceConfig(alertmanager_url=f"http://127.0.0.1:{alertmanager.port}")
    body = {"matchers": [{"name": "alertname", "value": "X", "isRegex": False, "isEqual": True}]}
    async with aiohttp.ClientSession() as session:
        silencer = Silencer(session, metrics.silence_requests, sleep=no_wait)
        alertmanager.state["status"] = 500
        silencer.create(silence, [body], "page-1")
        await silencer.idle()
        assert (len(alertmanager.received), waits) == (3, [2.0, 4.0])
        assert harness.metric("alert2voice_silence_requests_total", result="failed") == 1
        alertmanager.state["status"] = 200
        silencer.create(silence, [body], "page-2")
        await silencer.idle()
    assert harness.metric("alert2voice_silence_requests_total", result="created") == 1
    assert harness.metric("alert2voice_silence_requests_total", result="failed") == 1


STORM = {"per_number: [{calls: 3, per: 15m}]": "per_number: [{calls: 100, per: 15m}]\n  storm: {pages: 2, per: 10m}"}


async def storm_summary(harness, config) -> tuple[Any, str]:
    """Five pages for alice at once: two calls, then one summary call for the other three; its sessionId."""
    client = await harness.start(config)
    for i in range(5):
        labels = {**PAYMENTS, "alertname": f"Storm{i}", "instance": f"node{i}:9100"}
        resp = await client.post("/alerts", data=json.dumps(payload(alert(labels), group_key=f"g{i}")),
                                 headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status == 200
    d = client.app[DISPATCHER]
    await settle(d)
    harness.clock.advance(timedelta(minutes=10))
    await settle(d)
    assert [p.mode for p in harness.provider.placed] == ["interactive"] * 3
    return client, harness.provider.accepted[2].message_id


async def test_storm_summary_acknowledged_once_acknowledges_and_silences_every_page(harness, alertmanager):
    config = make_config(CONFIG + f"acknowledgement: {{silence: {{alertmanager_url: 'http://127.0.0.1:{alertmanager.port}',"
                                  " duration: 2h}}\n", **INTERACTIVE, **STORM)
    client, session = await storm_summary(harness, config)
    text = spoken((await send(client, "ANSWERED", session))["audio"][0])
    for i in (2, 3, 4):
        assert f"Storm{i}" in text or f"Storm {i}" in text, text
    await send(client, "COLLECTED_DIGITS", session, **digits("1"))
    await client.app[SILENCER].idle()
    states = sorted(p["state"] for p in await pages(client))
    assert states == ["acknowledged", "acknowledged", "acknowledged", "active", "active"]  # 2 calls still ringing
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="acknowledged") == 3
    names = sorted(next(m["value"] for m in s["matchers"] if m["name"] == "alertname") for s in alertmanager.received)
    assert names == ["Storm2", "Storm3", "Storm4"]


async def test_escalate_key_on_a_storm_summary_passes_every_page_it_spoke_for_on(harness):
    client, session = await storm_summary(harness, make_config(CONFIG, **INTERACTIVE, **STORM))
    await send(client, "ANSWERED", session)
    await send(client, "COLLECTED_DIGITS", session, **digits("5"))
    await settle(client.app[DISPATCHER])  # no clock advance: bob is due now for each of them
    passed = [p for p in await pages(client) if p["calls"][0]["error"] == "escalated by alice"]
    assert len(passed) == 3
    assert all(p["state"] == "active" and p["calls"][0]["state"] == "cancelled" for p in passed)
    assert all([c["contact"] for c in p["calls"]] == ["alice", "bob"] for p in passed)
    assert harness.metric("alert2voice_calls_total", route="payments", outcome="cancelled") == 3
    assert BOB in [p.request.dialed_number for p in harness.provider.placed]


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.e2e
async def test_end_to_end_keypress_acknowledges_and_silences(request, tmp_path, monkeypatch):
    """Alertmanager -> alert2voice serve (interactive) -> the simulator pressing 1 -> silence in Alertmanager."""
    e2e_support.require_alertmanager()
    original = e2e_support.alert2voice_config

    def interactive_stack_config(**kw: Any) -> dict[str, Any]:
        config = original(**kw)
        config["provider"]["mode"] = "interactive"
        return config

    monkeypatch.setattr(e2e_support, "alert2voice_config", interactive_stack_config)
    with e2e_support.running_stack(request, tmp_path, store="sqlite") as stack:
        am = e2e_support.start_alertmanager(tmp_path, stack, "alertmanager")
        stack.processes.append(am.process)  # stopped with the stack
        # Alertmanager's address is known only now: point the silences at it with a reload.
        config = yaml.safe_load(stack.config_path.read_text())
        config["acknowledgement"] = {"digit": "1", "silence": {"alertmanager_url": am.url, "duration": "1h"}}
        stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{stack.a2v_url}/-/reload", headers=stack.admin) as resp:
                assert resp.status == 200, await resp.text()
            await stack.script_number(session, stack.number, {"outcome": "press", "digit": "1"})
            labels = {"alertname": "InteractiveE2E", "team": "payments", "severity": "critical"}
            await am.fire(session, labels, {"summary": "Checkout is failing"})

            async def acknowledged():
                found = await stack.pages_for(session, "InteractiveE2E")
                return found if found and found[0]["state"] == "acknowledged" else None

            [page] = await e2e_support.eventually(acknowledged, "the page acknowledged")
            assert [c["state"] for c in page["calls"]] == ["acknowledged"]

            async def call_done():
                calls = [c for c in await stack.sim_calls(session) if c["mode"] == "interactive"]
                return calls if calls and calls[0]["done"] else None

            [call] = await e2e_support.eventually(call_done, "the simulated call to end")
            assert [(a["event"], a["action"]["action"]) for a in call["actions"]] == [
                ("ANSWERED", "PLAY"), ("COLLECTED_DIGITS", "PLAY"), ("PLAYED", "HANGUP")], e2e_support.dumps(call)
            prompt, thanks = call["actions"][0]["action"], call["actions"][1]["action"]
            assert prompt["collectInput"] == COLLECT
            assert "Checkout is failing" in spoken(prompt["audio"][0])
            assert spoken(prompt["audio"][0]).endswith(MENU)
            assert spoken(thanks["audio"][0]) == "Acknowledged. Thank you."

            async def suppressed():
                alerts = await stack.get_json(session, f"{am.url}/api/v2/alerts?filter=alertname=%22InteractiveE2E%22")
                return alerts if alerts and alerts[0]["status"]["state"] == "suppressed" else None

            [silenced] = await e2e_support.eventually(suppressed, "Alertmanager to silence the alert")
            [silence_id] = silenced["status"]["silencedBy"]
            silence = await stack.get_json(session, f"{am.url}/api/v2/silence/{silence_id}")
            assert silence["createdBy"] == "alert2voice"
            assert silence["comment"] == f"Acknowledged by alice by phone (page {page['key'][:12]})"
            assert {(m["name"], m["value"]) for m in silence["matchers"]} == set(labels.items())


@pytest.mark.e2e
async def test_end_to_end_menu_repeat_then_escalate_calls_the_next_contact(request, tmp_path):
    """alert2voice serve (interactive) -> the simulator pressing star, then 5 -> the next step called at once."""
    bob = "+442071838750"

    def menu_config(config: dict[str, Any]) -> None:
        config["provider"]["mode"] = "interactive"
        config["contacts"]["bob"] = {"number": bob, "timezone": "UTC"}
        # alice's 3m interval would hold a not-reached page for the whole test: only the escalate key moves it.
        config["routes"][0]["escalation"] = [{"call": "alice", "attempts": 2, "interval": "3m"},
                                             {"call": "bob", "attempts": 1}]

    with e2e_support.running_stack(request, tmp_path, store="sqlite", configure=menu_config) as stack:
        async with aiohttp.ClientSession() as session:
            await stack.script_number(session, stack.number, {"outcome": "press", "keys": ["*", "5"]})
            await stack.script_number(session, bob, {"outcome": "no_answer"})
            body = payload(alert({"alertname": "MenuE2E", "team": "payments", "severity": "critical"}))
            async with session.post(f"{stack.a2v_url}/alerts", json=body,
                                    headers={"Authorization": f"Bearer {stack.token}"}) as resp:
                assert resp.status == 200, await resp.text()

            async def both_called():
                calls = {c["dialed_number"]: c for c in await stack.sim_calls(session)}
                return calls if bob in calls and calls[stack.number]["done"] else None

            calls = await e2e_support.eventually(both_called, "bob called after alice pressed 5")
            alice = calls[stack.number]
            assert [(a["event"], a["action"]["action"]) for a in alice["actions"]] == [
                ("ANSWERED", "PLAY"), ("COLLECTED_DIGITS", "PLAY"), ("COLLECTED_DIGITS", "PLAY"),
                ("PLAYED", "HANGUP")], e2e_support.dumps(alice)
            first, repeated, passed = (a["action"] for a in alice["actions"][:3])
            assert repeated == first and spoken(first["audio"][0]).endswith(MENU)
            assert spoken(passed["audio"][0]) == "Passing this on to the next person. Goodbye."
            assert calls[bob]["mode"] == "interactive"
            [page] = await stack.pages_for(session, "MenuE2E")
            pressed = page["calls"][0]
            assert (pressed["contact"], pressed["state"], pressed["error"]) == ("alice", "cancelled", "escalated by alice")
            assert page["calls"][1]["contact"] == "bob"
