"""POST /api/v1/pages/{key}/ack and /escalate (issue 21): a person stops or moves a page without its phone."""
# ruff: noqa: F811 (the fixture imported from test_interactive is requested by name)

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from alert2voice.web.keys import DISPATCHER, SILENCER
from tests.harness import ADMIN_GUARDED, receipt
from tests.support import CONFIG, PAYMENTS, alert, make_config, payload, settle
from tests.test_app import callback, post
from tests.test_interactive import alertmanager  # noqa: F401 (fixture)

ALICE, BOB = "+14155550101", "+442071838750"


async def act(client, key: str, action: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/api/v1/pages/{key}/{action}", data=json.dumps(body) if body is not None else b"",
                             headers={"Content-Type": "application/json"})
    return resp.status, await resp.json()


async def escalating(client, harness) -> str:
    """A page whose first call (alice) was not answered: its next attempt waits for the interval."""
    await post(client, payload(alert(PAYMENTS)))
    await settle(client.app[DISPATCHER])
    await callback(client, receipt("REJECTED", correlation=harness.provider.requests[0].correlation_id, code="7401"))
    [page] = (await (await client.get("/api/v1/pages")).json())["pages"]
    return page["key"]


def dialed(harness) -> list[str]:
    return [r.dialed_number for r in harness.provider.requests]


async def test_an_acknowledged_page_places_no_further_call(client, harness):
    key = await escalating(client, harness)
    status, body = await act(client, key, "ack", {"by": "dana", "comment": "on it"})
    assert status == 200 and body["changed"] is True
    page = body["page"]
    assert page["state"] == "acknowledged" and page["due_at"] is None
    assert {k: page["acknowledged"][k] for k in ("by", "via", "comment")} == {"by": "dana", "via": "api",
                                                                                 "comment": "on it"}
    for _ in range(3):  # well past every interval of the chain
        harness.clock.advance(timedelta(minutes=10))
        await settle(client.app[DISPATCHER])
    assert dialed(harness) == [ALICE]
    assert harness.metric("alert2voice_pages_acknowledged_total", via="api") == 1
    # Idempotent: a second acknowledgement is 200 and changes nothing.
    status, again = await act(client, key, "ack", {"by": "eli"})
    assert (status, again["changed"], again["page"]["acknowledged"]["by"]) == (200, False, "dana")
    assert harness.metric("alert2voice_pages_acknowledged_total", via="api") == 1


async def test_a_call_ringing_when_the_page_is_acknowledged_finishes_and_the_page_stays_acknowledged(client, harness):
    await post(client, payload(alert(PAYMENTS)))
    await settle(client.app[DISPATCHER])
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    status, body = await act(client, listed["key"], "ack")
    assert status == 200 and body["page"]["calls"][0]["state"] == "accepted"  # left to finish
    assert body["page"]["acknowledged"]["by"] == "api"
    await callback(client, receipt("ANSWERED", correlation=harness.provider.requests[0].correlation_id))
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert (listed["state"], listed["calls"][0]["state"]) == ("acknowledged", "answered")


async def test_escalate_calls_the_next_step_now_and_once_per_step_seen(client, harness):
    await post(client, payload(alert(PAYMENTS)))
    d = client.app[DISPATCHER]
    await settle(d)
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    # Alice's phone is ringing; the person looking at it passes the page to the next step (bob) now.
    status, body = await act(client, listed["key"], "escalate", {"by": "dana", "step": 1})
    assert status == 200 and body["changed"] is True
    assert body["page"]["calls"][0]["state"] == "cancelled" and body["page"]["calls"][0]["error"] == "escalated by dana"
    await settle(d)  # the clock did not move
    assert dialed(harness) == [ALICE, BOB]
    # The same click again (still saying step 1): the page is past it already, nothing changes.
    status, body = await act(client, listed["key"], "escalate", {"step": 1})
    assert (status, body["changed"]) == (200, False)
    await settle(d)
    assert dialed(harness) == [ALICE, BOB]
    # A late receipt of alice's call is stale: it neither answers the page nor moves it.
    await callback(client, receipt("ANSWERED", correlation=harness.provider.requests[0].correlation_id))
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert listed["state"] == "active"


@pytest.mark.parametrize("action", ["ack", "escalate"])
async def test_unknown_and_ended_pages(client, harness, action):
    status, body = await act(client, "f" * 64, action)
    assert (status, body["error"]) == (404, "no such page")
    await post(client, payload(alert(PAYMENTS)))
    await settle(client.app[DISPATCHER])
    await callback(client, receipt("ANSWERED", correlation=harness.provider.requests[0].correlation_id))
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    status, body = await act(client, listed["key"], action)
    assert status == 409 and "ended already (answered)" in body["error"]


@pytest.mark.parametrize(("body", "fragment"), [
    ("[1]", "must be a JSON object"),
    ("{nope", "not JSON"),
    (json.dumps({"by": 7}), "by must be a string"),
    (json.dumps({"comment": "x" * 201}), "comment must be a string of at most 200"),
    (json.dumps({"step": 0}), "step must be the step number"),
    ("x" * 5000, "over 4096 bytes"),
])
async def test_a_bad_body_is_refused_and_changes_nothing(client, harness, body, fragment):
    key = await escalating(client, harness)
    resp = await client.post(f"/api/v1/pages/{key}/ack", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400 and fragment in (await resp.json())["error"]
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert listed["state"] == "active" and listed["acknowledged"] is None


@pytest.mark.parametrize(("headers", "expected"), [({}, 401), ({"Authorization": "Bearer adm-token-secret"}, 404)],
                         ids=["no-credentials", "admin-token"])
async def test_the_actions_are_admin_endpoints(harness, headers, expected):
    guarded = await harness.start(make_config(**ADMIN_GUARDED))
    for action in ("ack", "escalate"):
        resp = await guarded.post(f"/api/v1/pages/{'f' * 64}/{action}", headers=headers)
        assert resp.status == expected, action


async def test_acknowledging_through_the_api_silences_the_pages_alerts(harness, alertmanager):
    config = make_config(f"{CONFIG}acknowledgement: {{silence: {{alertmanager_url: "
                         f"'http://127.0.0.1:{alertmanager.port}/', duration: 2h}}}}\n")
    c = await harness.start(config)
    key = await escalating(c, harness)
    status, _ = await act(c, key, "ack", {"by": "dana", "comment": "deploy rolled back"})
    assert status == 200
    await c.app[SILENCER].idle()
    [silence] = alertmanager.received
    assert silence["comment"] == f"Acknowledged by dana through the API (page {key[:12]}): deploy rolled back"
    assert {m["name"]: m["value"] for m in silence["matchers"]} == PAYMENTS



# ------------------------------------------------------------------------------------------ the status page


async def click(client, key: str, action: str, headers: dict[str, str], **form: str):
    return await client.post(f"/pages/{key}/{action}", data={"back": f"/pages/{key}", **form}, headers=headers,
                             allow_redirects=False)


def own_origin(client) -> str:
    return str(client.make_url("/")).rstrip("/")


async def test_the_status_pages_buttons_act_and_go_back(client, harness):
    key = await escalating(client, harness)
    html = await (await client.get(f"/pages/{key}")).text()
    assert f'action="/pages/{key}/ack"' in html and 'name="step" value="1"' in html
    resp = await click(client, key, "ack", {"Origin": own_origin(client)})
    assert (resp.status, resp.headers["Location"]) == (303, f"/pages/{key}")
    html = await (await client.get(f"/pages/{key}")).text()
    assert "acknowledged by status page (web)" in html and 'action="/pages/' not in html
    assert harness.metric("alert2voice_pages_acknowledged_total", via="web") == 1


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "same-site"},
    {},  # no browser said where it came from: not from our page
], ids=["other-origin", "opaque-origin", "cross-site", "same-site-subdomain", "neither-header"])
async def test_a_cross_site_post_is_refused_and_changes_nothing(client, harness, headers):
    key = await escalating(client, harness)
    for action in ("ack", "escalate"):
        resp = await click(client, key, action, headers, step="1")
        assert resp.status == 403 and "cross-site request refused" in (await resp.json())["error"]
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert listed["state"] == "active" and listed["acknowledged"] is None and len(listed["calls"]) == 1


async def test_the_escalate_button_passes_the_page_on_once_and_never_redirects_off_site(client, harness):
    await post(client, payload(alert(PAYMENTS)))
    await settle(client.app[DISPATCHER])
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    same = {"Sec-Fetch-Site": "same-origin"}
    resp = await client.post(f"/pages/{listed['key']}/escalate", data={"step": "1", "back": "//evil.example/x"},
                             headers=same, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/")
    resp = await click(client, listed["key"], "escalate", same, step="1")  # the same button, clicked twice
    assert resp.status == 303
    await settle(client.app[DISPATCHER])
    assert dialed(harness) == [ALICE, BOB]


# ------------------------------------------------------------------------------------------- ack_timeout

ACK_TIMEOUT = {"    send_resolved: true\n": "    send_resolved: true\n    ack_timeout: 5s\n"}


@pytest.mark.config(**ACK_TIMEOUT)
async def test_an_acknowledged_page_still_firing_after_ack_timeout_escalates_again_once(client, harness):
    key = await escalating(client, harness)
    first = harness.provider.requests[0].correlation_id
    status, body = await act(client, key, "ack", {"by": "dana"})
    assert status == 200 and body["page"]["due_at"] is not None  # looked at again when the timeout runs out
    d = client.app[DISPATCHER]
    harness.clock.advance(timedelta(seconds=4))
    await settle(d)
    assert dialed(harness) == [ALICE]
    harness.clock.advance(timedelta(seconds=1))
    await settle(d)
    # Re-opened from its first step, with a new correlationId (a new nonce), and nobody acknowledged now.
    assert dialed(harness) == [ALICE, ALICE]
    again = harness.provider.requests[1].correlation_id
    assert again != first and again.rsplit("-", 2)[1] != first.rsplit("-", 2)[1]
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert (listed["state"], listed["acknowledged"]) == ("active", None)
    # Once per acknowledgement: acknowledged again, it is re-opened again only after another 5 s.
    await callback(client, receipt("REJECTED", correlation=again, code="7401"))
    assert (await act(client, key, "ack", {"by": "dana"}))[0] == 200
    harness.clock.advance(timedelta(seconds=4))
    await settle(d)
    assert len(dialed(harness)) == 2


@pytest.mark.config(**ACK_TIMEOUT)
async def test_an_acknowledged_page_whose_alerts_resolved_is_not_reopened(client, harness):
    key = await escalating(client, harness)
    assert (await act(client, key, "ack", {"by": "dana"}))[0] == 200
    await post(client, payload(alert(PAYMENTS, status="resolved")))
    harness.clock.advance(timedelta(minutes=1))
    await settle(client.app[DISPATCHER])
    [listed] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert listed["state"] == "acknowledged" and listed["resolved_at"] is not None
    # The resolved call goes to whoever was called (send_resolved); the escalation never starts again.
    assert [r.dialed_number for r in harness.provider.requests] == [ALICE, ALICE]
    assert harness.provider.requests[1].correlation_id.endswith("r2")


async def test_without_ack_timeout_an_acknowledged_page_stays_acknowledged(client, harness):
    key = await escalating(client, harness)
    status, body = await act(client, key, "ack")
    assert status == 200 and body["page"]["due_at"] is None
