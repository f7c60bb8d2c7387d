"""Only a call's own callbacks move it: incarnations, messageIds, the kind of call, a timed-out request."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from alert2voice.dispatch import KeyedLocks
from alert2voice.provider import NetworkError
from alert2voice.web.keys import DISPATCHER
from tests import e2e_support
from tests.harness import JSON_AUTH as AUTH
from tests.harness import JSON_CB_AUTH as CB_AUTH
from tests.harness import receipt
from tests.support import CONFIG, INTERACTIVE, PAYMENTS, alert, make_config, payload


async def fire(client, *, status: str = "firing") -> dict[str, Any]:
    resp = await client.post("/alerts", data=json.dumps(payload(alert(PAYMENTS, status=status))), headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def callback(client, body: dict[str, Any]) -> None:
    resp = await client.post("/callbacks/webex", data=json.dumps(body), headers=CB_AUTH)
    assert resp.status == 200, await resp.text()


async def only_page(client) -> dict[str, Any]:
    [page] = (await (await client.get("/api/v1/pages")).json())["pages"]
    return page


def callbacks_counted(harness, event: str, result: str) -> float:
    return harness.metric("alert2voice_callbacks_total", event=event, result=result)


# ------------------------------------------------------------------------------- page incarnations


async def test_a_page_fired_again_gets_new_correlation_ids_and_old_receipts_do_not_move_it(client, harness):
    await fire(client)
    await client.app[DISPATCHER].settled()
    first = harness.provider.requests[0].correlation_id
    first_message = harness.provider.accepted[0].message_id
    await fire(client, status="resolved")
    await fire(client)  # the same alert fires again: the same page key, a new incarnation
    await client.app[DISPATCHER].settled()
    second = harness.provider.requests[-1].correlation_id
    # The first call, the resolved notice of the first incident (send_resolved), the second incident's call.
    assert [r.correlation_id.rsplit("-", 1)[1] for r in harness.provider.requests] == ["1", "r2", "1"]
    assert second != first
    assert second.split("-")[1] == first.split("-")[1]  # same page key
    # A late ANSWERED receipt of the first incident (its correlationId and messageId) ends nothing now.
    await callback(client, receipt("ANSWERED", correlation=first, transid=first_message))
    page = await only_page(client)
    assert page["state"] == "active"
    assert page["calls"][-1]["state"] == "accepted"
    assert callbacks_counted(harness, "answered", "ok") == 0


async def test_a_receipt_naming_another_message_id_is_stale(client, harness):
    await fire(client)
    await client.app[DISPATCHER].settled()
    correlation = harness.provider.requests[0].correlation_id
    await callback(client, receipt("ANSWERED", correlation=correlation, transid="someone-elses-message"))
    assert (await only_page(client))["state"] == "active"
    assert callbacks_counted(harness, "answered", "stale") == 1
    await callback(client, receipt("ANSWERED", correlation=correlation, transid=harness.provider.accepted[0].message_id))
    assert (await only_page(client))["state"] == "answered"


# ------------------------------------------------------------------------------ the kind of call


async def test_call_events_do_not_move_a_message_mode_call(client, harness):
    await fire(client)
    await client.app[DISPATCHER].settled()
    session = harness.provider.accepted[0].message_id
    for event in ({"event": "ANSWERED"}, {"event": "COLLECTED_DIGITS", "digitsReceived": "1", "status": "SUCCESS"}):
        resp = await client.post("/callbacks/webex", headers=CB_AUTH, data=json.dumps(
            {**event, "eventTime": "2026-11-26T15:00:10.000Z", "sessionId": session}))
        assert resp.status == 200
        assert await resp.json() == {"action": "HANGUP"}
    page = await only_page(client)
    assert page["state"] == "active"
    assert page["calls"][0]["state"] == "accepted"
    assert callbacks_counted(harness, "collected_digits", "mismatched") == 1


async def test_receipts_do_not_move_an_interactive_call(harness):
    client = await harness.start(make_config(CONFIG, **INTERACTIVE))
    await fire(client)
    await client.app[DISPATCHER].settled()
    correlation = harness.provider.requests[0].correlation_id
    message = harness.provider.accepted[0].message_id
    await callback(client, receipt("ANSWERED", correlation=correlation, transid=message))
    page = await only_page(client)
    assert page["state"] == "active"
    assert page["calls"][0]["state"] == "accepted"
    assert callbacks_counted(harness, "answered", "mismatched") == 1


async def test_a_digit_before_the_prompt_was_played_acknowledges_nothing(harness):
    client = await harness.start(make_config(CONFIG, **INTERACTIVE))
    await fire(client)
    await client.app[DISPATCHER].settled()
    session = harness.provider.accepted[0].message_id
    resp = await client.post("/callbacks/webex", headers=CB_AUTH, data=json.dumps(
        {"event": "COLLECTED_DIGITS", "eventTime": "2026-11-26T15:00:10.000Z", "sessionId": session,
         "status": "SUCCESS", "numOfDigits": 1, "digitsReceived": "1", "terminationDigit": "#"}))
    assert resp.status == 200
    assert (await resp.json())["action"] == "PLAY"  # the prompt, not the thank-you
    assert (await only_page(client))["state"] == "active"


# ---------------------------------------------------------------- a request the platform did take


async def test_a_receipt_for_a_timed_out_request_accepts_it_and_cancels_the_retry(client, harness):
    harness.provider.fail_next(NetworkError("timed out after 10s", timeout=True))
    await fire(client)
    await client.app[DISPATCHER].settled()
    [sent] = harness.provider.requests
    # Its outcome is unknown: the same request is due again after the backoff, unless a receipt comes first.
    assert (await only_page(client))["calls"][0]["state"] == "unknown"
    # The platform did take it: its first receipt carries the attempt's correlationId and the messageId.
    await callback(client, receipt("OFFERED", correlation=sent.correlation_id, transid="platform-id-1", code="7407"))
    call = (await only_page(client))["calls"][0]
    assert (call["state"], call["tries"]) == ("accepted", 1)
    harness.clock.advance(timedelta(seconds=30))  # well past the retry's backoff
    await client.app[DISPATCHER].settled()
    assert len(harness.provider.requests) == 1  # the phone rang once
    await callback(client, receipt("ANSWERED", correlation=sent.correlation_id, transid="platform-id-1"))
    assert (await only_page(client))["state"] == "answered"


# ------------------------------------------------------------------------------------- page locks


async def test_keyed_locks_never_let_two_holders_in_and_forget_unused_keys():
    locks = KeyedLocks()
    inside: list[str] = []
    order: list[str] = []

    async def hold(name: str, release: asyncio.Event) -> None:
        async with locks["page"]:
            inside.append(name)
            assert len(inside) == 1, inside
            order.append(name)
            await release.wait()
            inside.remove(name)

    gates = {n: asyncio.Event() for n in "abc"}
    a = asyncio.create_task(hold("a", gates["a"]))
    await asyncio.sleep(0)
    b = asyncio.create_task(hold("b", gates["b"]))  # waits for a
    await asyncio.sleep(0)
    gates["a"].set()
    await a
    c = asyncio.create_task(hold("c", gates["c"]))  # comes after a left, while b holds or waits
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["a", "b"]  # c waits for b: there is still one lock for the key
    gates["b"].set()
    gates["c"].set()
    await asyncio.gather(b, c)
    assert order == ["a", "b", "c"]
    assert len(locks) == 0


async def test_no_lock_is_left_behind_by_a_callback_that_finished_a_page(client, harness):
    await fire(client)
    await client.app[DISPATCHER].settled()
    sent = harness.provider.requests[0]
    await callback(client, receipt("ANSWERED", correlation=sent.correlation_id,
                                   transid=harness.provider.accepted[0].message_id))
    assert (await only_page(client))["state"] == "answered"
    assert len(client.app[DISPATCHER].locks) == 0


# ------------------------------------------------------------------------------------- end to end


@pytest.mark.e2e
async def test_a_call_answered_after_the_client_timeout_rings_once(request, tmp_path, monkeypatch):
    """serve + simulator: the platform takes the call but its 202 comes after our timeout; receipts came first."""
    original = e2e_support.alert2voice_config

    def short_timeout(**kw: Any) -> dict[str, Any]:
        config = original(**kw)
        config["provider"]["timeout"] = "1s"  # the simulator answers after 3 s
        return config

    monkeypatch.setattr(e2e_support, "alert2voice_config", short_timeout)
    # Ringing takes a second between receipts, as on a real phone: the retry would be due before the answer.
    with e2e_support.running_stack(request, tmp_path, store="sqlite", simulator_args=["--step-delay", "1"]) as stack:
        async with aiohttp.ClientSession() as session:
            await stack.script_number(session, stack.number, {"outcome": "answer", "delay": 3})
            body = payload(alert({"alertname": "SlowProvider", "team": "payments", "severity": "critical"}))
            async with session.post(f"{stack.a2v_url}/alerts", json=body,
                                    headers={"Authorization": f"Bearer {stack.token}"}) as resp:
                assert resp.status == 200, await resp.text()

            async def answered():
                found = await stack.pages_for(session, "SlowProvider")
                return found if found and found[0]["state"] == "answered" else None

            [page] = await e2e_support.eventually(answered, "the page answered")
            # Every retry the client would have sent was due long before the answer came in.
            calls = [c for c in await stack.sim_calls(session) if c["correlation_id"].startswith(
                f"a2v-{page['key'][:24]}-")]
            assert len(calls) == 1, e2e_support.dumps(calls)
            assert page["calls"][0]["state"] == "answered"
            assert page["calls"][0]["tries"] == 1
            assert "whose answer was lost" in stack.logs.text()
