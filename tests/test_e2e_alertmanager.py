"""End to end: a real Alertmanager -> `alert2voice serve` -> the Webex Connect simulator, all on loopback.

The simulator and alert2voice run once per module as processes; every test starts its own
unclustered Alertmanager(s) (group_wait 1s, group_interval 2s, repeat_interval 3s) and stops them
at the end, so the metric deltas a test sees come from its own alerts. The simulator is reset before
each test, so its call list holds that test's calls only.
"""

from __future__ import annotations

import asyncio
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e_support import (
    Alertmanager,
    Samples,
    Stack,
    alertmanagers,
    dumps,
    eventually,
    in_ci,
    one_page,
    readme_alertmanager_config,
    require_alertmanager,
    running_stack,
)

pytestmark = pytest.mark.e2e

# The store backend alert2voice runs on: SQLite, the default; A2V_E2E_STORE=memory runs the suite on memory.
STORE_BACKEND = os.environ.get("A2V_E2E_STORE", "sqlite")

SSML_NS = "{http://www.w3.org/2001/10/synthesis}"
SSML_ELEMENTS = {"speak", "voice", "prosody", "break", "say-as", "sub", "emphasis", "lang", "p", "s"}
CORRELATION_ID = re.compile(r"^a2v-[0-9a-f]{24}-[0-9a-f]{8}-1$")
PAGING = "payments-critical"
CATCH_ALL = "everything-else"


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not in_ci():
        require_alertmanager()  # skips the module before starting anything; in CI each test fails instead
    with running_stack(request, tmp_path_factory.mktemp("e2e"), store=STORE_BACKEND) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh_simulator(stack: Stack) -> None:
    stack.reset_simulator()


@pytest.fixture
def start_am(stack: Stack, tmp_path: Path) -> Iterator[Callable[[str], Alertmanager]]:
    """Start Alertmanagers for this test (skips, or fails in CI, without prometheus-alertmanager)."""
    with alertmanagers(tmp_path, stack) as start:
        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


# ---------------------------------------------------------------------------------------------- helpers


def payments(alertname: str, **labels: str) -> dict[str, str]:
    return {"alertname": alertname, "team": "payments", "severity": "critical", **labels}


async def until_metrics(stack: Stack, http: aiohttp.ClientSession, before: Samples,
                        ready: Callable[[Samples], bool], what: str, *, within: float = 20.0) -> Samples:
    """Wait until a scrape of alert2voice's /metrics satisfies `ready`."""
    async def probe() -> Samples | None:
        now = await stack.metrics(http)
        return now if ready(now) else None

    try:
        return await eventually(probe, what, within=within)
    except AssertionError as exc:
        after = await stack.metrics(http)
        shown = {f"{name}{dict(labels)}": v for (name, labels), v in after.values.items()
                 if name.startswith(("alert2voice_webhooks", "alert2voice_pages", "alert2voice_alerts",
                                     "alert2voice_calls")) and v != before.values.get((name, labels), 0.0)}
        raise AssertionError(f"{exc}; metric changes: {shown}") from None


async def calls_of(stack: Stack, http: aiohttp.ClientSession, page: dict[str, Any]) -> list[dict[str, Any]]:
    """The simulator's calls whose correlationId belongs to this page."""
    prefix = f"a2v-{page['key'][:24]}-"
    return [c for c in await stack.sim_calls(http) if c["correlation_id"].startswith(prefix)]


def cid(page: dict[str, Any], attempt: str) -> str:
    """The correlationId of one attempt of this page: its key, the nonce of its admission, the attempt."""
    nonce = page["calls"][0]["correlation_id"].split("-")[2]
    return f"a2v-{page['key'][:24]}-{nonce}-{attempt}"


def ssml_of(call: dict[str, Any]) -> ET.Element:
    """The call's SSML, parsed; it must be one well-formed <speak> document of documented elements."""
    audio = call["audio"]
    assert audio["type"] == "TTS" and audio["textFormat"] == "SSML", dumps(audio)
    root = ET.fromstring(audio["text"])
    assert root.tag == f"{SSML_NS}speak", audio["text"]
    tags = {el.tag.removeprefix(SSML_NS) for el in root.iter()}
    assert tags <= SSML_ELEMENTS, f"unexpected elements {tags - SSML_ELEMENTS} in {audio['text']}"
    return root


def spoken(root: ET.Element) -> str:
    return " ".join("".join(root.itertext()).split())


def answered(page: dict[str, Any]) -> bool:
    return page["state"] == "answered"


# ------------------------------------------------------------------------------------------------ tests


async def test_critical_alert_places_exactly_one_call(stack: Stack, start_am, http: aiohttp.ClientSession) -> None:
    am = start_am("am")
    before = await stack.metrics(http)
    labels = payments("E2ECheckoutDown", instance="checkout-1:8080")
    summary = "Checkout rejects every card payment"
    await am.amtool_add(labels, {"summary": summary})

    page = await one_page(stack, http, "E2ECheckoutDown", answered, "the page answered")
    assert page["route"] == PAGING
    assert page["group_key"] == '{}:{alertname="E2ECheckoutDown"}'
    assert [c["state"] for c in page["calls"]] == ["answered"], dumps(page)

    calls = await stack.sim_calls(http)
    assert len(calls) == 1, dumps(calls)
    call = calls[0]
    assert call["dialed_number"] == stack.number
    assert call["caller_id"] == stack.caller_id
    assert CORRELATION_ID.fullmatch(call["correlation_id"]), call["correlation_id"]
    assert call["correlation_id"] == page["calls"][0]["correlation_id"] == cid(page, "1")
    assert call["callback_url"] == f"{stack.a2v_url}/callbacks/webex"
    assert call["status"] == "ANSWERED"

    text = spoken(ssml_of(call))
    for word in summary.split():
        assert word in text, f"{word!r} not spoken: {text}"
    assert "Checkout Down, critical" in text and "checkout-1 port 8080" in text, text

    requests = [r for r in await stack.sim_requests(http) if r["path"].startswith("/v1/voice/")]
    assert len(requests) == 1, dumps(requests)
    request = requests[0]
    assert (request["method"], request["path"], request["status"]) == ("POST", "/v1/voice/messages", 202)
    # The simulator shows the configured service key as "<service-key>": present, correct, masked.
    assert request["headers"]["Authorization"] == "<service-key>"
    assert request["headers"].get("Idempotency-Key")
    assert request["body"]["correlationId"] == call["correlation_id"]
    assert request["body"]["callbackUrlAuthId"] == "A2VE2E01"

    after = await stack.metrics(http)
    assert after.delta(before, "alert2voice_pages_total", route=PAGING, result="called") == 1
    assert after.delta(before, "alert2voice_calls_total", route=PAGING, outcome="answered") == 1
    assert after.delta(before, "alert2voice_webhooks_total", result="accepted") >= 1
    assert after.delta(before, "alert2voice_webhooks_total", result="unauthorized") == 0

    # No configured secret leaks into the logs, the pages API or the metrics.
    async with http.get(f"{stack.a2v_url}/metrics") as resp:
        exposed = await resp.text()
    async with http.get(f"{stack.a2v_url}/api/v1/pages") as resp:
        assert resp.status == 401  # server.admin_auth is set: loopback is no exception then
        exposed += await resp.text()
    async with http.get(f"{stack.a2v_url}/api/v1/pages", headers=stack.admin) as resp:
        exposed += await resp.text()
    exposed += (stack.workdir / "alert2voice.log").read_text(encoding="utf-8")
    for what, secret in stack.secrets.items():
        assert secret not in exposed, f"the {what} appears in logs, /metrics or /api/v1/pages"
    assert stack.number not in exposed, "an unmasked phone number appears in logs, /metrics or /api/v1/pages"


async def test_the_readme_alertmanager_example_pages_once_per_alertname(stack: Stack, start_am, tmp_path: Path,
                                                                         http: aiohttp.ClientSession) -> None:
    """The README's alertmanager.yml, with only its URL, credential file and root timings changed for a test:
    two critical alerts of different names fired together are two groups, so two pages and two calls (issue 20:
    without group_by they shared the group {} and one page)."""
    config = readme_alertmanager_config()
    token = tmp_path / "alert2voice-token"
    token.write_text(stack.token + "\n", encoding="utf-8")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{stack.a2v_url}/alerts"
            hook["http_config"]["authorization"]["credentials_file"] = str(token)
    config["route"].update(group_wait="1s", group_interval="2s")
    am = start_am("am", config)
    before = await stack.metrics(http)
    await asyncio.gather(am.fire(http, payments("E2EReadmeCheckout"), {"summary": "Checkout down"}),
                         am.fire(http, payments("E2EReadmeLedger"), {"summary": "Ledger behind"}))

    checkout = await one_page(stack, http, "E2EReadmeCheckout", answered, "the checkout page answered")
    ledger = await one_page(stack, http, "E2EReadmeLedger", answered, "the ledger page answered")
    assert checkout["key"] != ledger["key"]
    for page, name in ((checkout, "E2EReadmeCheckout"), (ledger, "E2EReadmeLedger")):
        assert [a["labels"]["alertname"] for a in page["alerts"]] == [name], dumps(page)
        assert page["group_key"].endswith(f':{{alertname="{name}"}}'), page["group_key"]
        assert len(await calls_of(stack, http, page)) == 1
    after = await stack.metrics(http)
    assert after.delta(before, "alert2voice_pages_total", route=PAGING, result="called") == 2
    assert after.delta(before, "alert2voice_webhooks_total", result="unauthorized") == 0


async def test_catch_all_route_calls_nobody(stack: Stack, start_am, http: aiohttp.ClientSession) -> None:
    am = start_am("am")
    before = await stack.metrics(http)
    await am.fire(http, {"alertname": "E2EDiskAlmostFull", "team": "storage", "severity": "warning"},
                  {"summary": "Disk almost full"})

    after = await until_metrics(
        stack, http, before,
        lambda m: m.delta(before, "alert2voice_pages_total", route=CATCH_ALL, result="no_contacts") >= 1,
        "pages_total{route=everything-else,result=no_contacts}")
    assert after.delta(before, "alert2voice_pages_total", route=PAGING, result="called") == 0
    assert after.delta(before, "alert2voice_pages_total", route="", result="no_route") == 0
    assert after.delta(before, "alert2voice_webhooks_total", result="accepted") >= 1
    assert await stack.pages_for(http, "E2EDiskAlmostFull") == []
    assert await stack.sim_calls(http) == []
    assert [r for r in await stack.sim_requests(http) if r["path"].startswith("/v1/voice/")] == []


async def test_repeats_of_a_firing_alert_do_not_call_again(stack: Stack, start_am,
                                                           http: aiohttp.ClientSession) -> None:
    am = start_am("am")
    before = await stack.metrics(http)
    await am.fire(http, payments("E2ERepeatedAlert"), {"summary": "Settlement batch stuck"})
    page = await one_page(stack, http, "E2ERepeatedAlert", answered, "the page answered")

    # repeat_interval 3s on a 2s group_interval: Alertmanager re-sends the group at about 5s and 9s.
    after = await until_metrics(
        stack, http, before,
        lambda m: (m.delta(before, "alert2voice_webhooks_total", result="accepted") >= 3
                   and m.delta(before, "alert2voice_pages_total", route=PAGING, result="duplicate") >= 2),
        "three webhooks for the group, two of them duplicates")
    assert after.delta(before, "alert2voice_pages_total", route=PAGING, result="called") == 1
    assert after.delta(before, "alert2voice_alerts_received_total", status="firing") >= 3

    calls = await stack.sim_calls(http)
    assert len(calls) == 1, dumps(calls)
    assert calls[0]["correlation_id"] == cid(page, "1")
    page = await one_page(stack, http, "E2ERepeatedAlert", answered, "the page still answered")
    assert len(page["calls"]) == 1, dumps(page)


async def test_ha_pair_sends_twice_and_one_call_is_placed(stack: Stack, start_am,
                                                          http: aiohttp.ClientSession) -> None:
    # Two unclustered replicas with the same config behave like an HA pair that failed to gossip:
    # each sends every notification.
    am_a, am_b = start_am("am-a"), start_am("am-b")
    before = await stack.metrics(http)
    labels = payments("E2EHAPairAlert")
    await asyncio.gather(am_a.fire(http, labels, {"summary": "Card authorisations failing"}),
                         am_b.fire(http, labels, {"summary": "Card authorisations failing"}))

    after = await until_metrics(
        stack, http, before,
        lambda m: (m.delta(before, "alert2voice_webhooks_total", result="accepted") >= 2
                   and m.delta(before, "alert2voice_pages_total", route=PAGING, result="duplicate") >= 1),
        "a webhook from each replica, the second one a duplicate")
    assert after.delta(before, "alert2voice_pages_total", route=PAGING, result="called") == 1
    page = await one_page(stack, http, "E2EHAPairAlert", answered, "the page answered")
    assert len(page["calls"]) == 1, dumps(page)
    calls = await stack.sim_calls(http)
    assert len(calls) == 1, dumps(calls)
    assert calls[0]["correlation_id"] == page["calls"][0]["correlation_id"]


async def test_markup_in_labels_and_annotations_is_spoken_as_text(stack: Stack, start_am,
                                                                  http: aiohttp.ClientSession) -> None:
    am = start_am("am")
    cluster = "eu<b>&\"'west"
    summary = "Ledger <b>bold</b> & \"double\" 'single' <script>x</script> text"
    await am.fire(http, payments("E2EMarkupAlert", cluster=cluster), {"summary": summary})
    page = await one_page(stack, http, "E2EMarkupAlert", answered, "the page answered")

    calls = await calls_of(stack, http, page)
    assert len(calls) == 1, dumps(calls)
    root = ssml_of(calls[0])
    names = {el.tag.removeprefix(SSML_NS) for el in root.iter()}
    assert not names & {"b", "script"}, f"label text became elements: {names}"
    text = spoken(root)
    assert summary in text, text
    assert cluster in text, text
    assert "&lt;b&gt;" in calls[0]["audio"]["text"] and "&amp;" in calls[0]["audio"]["text"]


async def test_resolve_after_answer_calls_back_with_resolved(stack: Stack, start_am,
                                                            http: aiohttp.ClientSession) -> None:
    am = start_am("am")
    labels, annotations = payments("E2EResolvedAfterAnswer"), {"summary": "Refund queue stalled"}
    await am.fire(http, labels, annotations)
    page = await one_page(stack, http, "E2EResolvedAfterAnswer", answered, "the page answered")

    before = await stack.metrics(http)
    await am.resolve(http, labels, annotations)
    # The resolve goes out at the group's next group_interval tick.
    await until_metrics(
        stack, http, before,
        lambda m: (m.delta(before, "alert2voice_alerts_received_total", status="resolved") >= 1
                   and m.delta(before, "alert2voice_webhooks_total", result="accepted") >= 1),
        "the resolved notification")

    # SPEC §1: the route has send_resolved: true and alice answered, so one short "resolved" call goes to
    # her. The page stays "answered" (pages.py: "resolved" is for pages resolved before anyone was reached).
    resolved_id = cid(page, "r2")
    page = await one_page(stack, http, "E2EResolvedAfterAnswer",
                          lambda p: any(c["kind"] == "resolved" for c in p["calls"]),
                          "a resolved call queued for the answered page", within=5)
    assert page["state"] == "answered", dumps(page)
    assert [(c["kind"], c["contact"], c["correlation_id"]) for c in page["calls"]] == [
        ("page", "alice", cid(page, "1")), ("resolved", "alice", resolved_id)], dumps(page)

    calls = await eventually(
        lambda: _calls_with(stack, http, resolved_id), "the resolved call at the simulator", within=5)
    assert calls[0]["dialed_number"] == stack.number
    assert "Resolved" in spoken(ssml_of(calls[0]))
    assert len(await stack.sim_calls(http)) == 2


async def test_resolve_before_anyone_answers_resolves_the_page(stack: Stack, start_am,
                                                               http: aiohttp.ClientSession) -> None:
    am = start_am("am")
    await stack.script_number(http, stack.number, {"outcome": "no_answer"})
    labels, annotations = payments("E2EResolvedUnanswered"), {"summary": "Payout API slow"}
    await am.fire(http, labels, annotations)
    # Nobody answers; the next attempt is 3 minutes away, so the page stays active.
    page = await one_page(stack, http, "E2EResolvedUnanswered",
                          lambda p: [c["state"] for c in p["calls"]] == ["no_answer"], "the first call unanswered")
    assert page["state"] == "active", dumps(page)

    before = await stack.metrics(http)
    await am.resolve(http, labels, annotations)
    page = await one_page(stack, http, "E2EResolvedUnanswered", lambda p: p["state"] == "resolved",
                          "the page resolved")
    after = await stack.metrics(http)
    assert after.delta(before, "alert2voice_alerts_received_total", status="resolved") >= 1

    # send_resolved: true and alice was called (not reached): the resolved call goes to the last one called.
    resolved_id = cid(page, "r2")
    assert [(c["kind"], c["correlation_id"]) for c in page["calls"]] == [
        ("page", cid(page, "1")), ("resolved", resolved_id)], dumps(page)
    calls = await eventually(
        lambda: _calls_with(stack, http, resolved_id), "the resolved call at the simulator", within=5)
    assert calls[0]["dialed_number"] == stack.number
    assert "Resolved" in spoken(ssml_of(calls[0]))
    assert len(await stack.sim_calls(http)) == 2


async def _calls_with(stack: Stack, http: aiohttp.ClientSession, correlation_id: str) -> list[dict[str, Any]]:
    return [c for c in await stack.sim_calls(http) if c["correlation_id"] == correlation_id]
