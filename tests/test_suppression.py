"""Alertmanager's silences and inhibitions (issue 21, deliverable 4): asked before each call, against a fake
Alertmanager answering GET /api/v2/alerts as the real one does, with an injected clock."""
# ruff: noqa: F811 (the fixtures imported from test_app are requested by name)

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from alert2voice.config import SilenceConfig
from alert2voice.config_file import ConfigError
from alert2voice.metrics import Metrics
from alert2voice.silences import Silencer
from alert2voice.suppression import Suppression, Verdict, suppressed
from alert2voice.web.keys import DISPATCHER, HEARTBEATS
from tests.harness import receipt
from tests.support import CONFIG, PAYMENTS, FakeClock, alert, make_config, payload, settle
from tests.test_app import callback, post
from tests.test_tls import pki  # noqa: F401 (fixture)

ALICE, BOB = "+14155550101", "+442071838750"
NODE2 = {**PAYMENTS, "instance": "node2:9100"}


def _matches(query: list[str], labels: dict[str, str]) -> bool:
    """Alertmanager's filter=name="value" (equality matchers only: all alert2voice sends)."""
    for f in query:
        name, _, value = f.partition("=")
        if labels.get(name) != json.loads(value):
            return False
    return True


@pytest.fixture
async def alertmanager(aiohttp_server):
    """A fake Alertmanager: GET /api/v2/alerts over `alerts` (label sets), `silenced` ones suppressed; `down`
    answers 503 (or `hang` never in time); `asked` records each request's filters."""
    state: dict[str, Any] = {"alerts": [], "silenced": [], "status": 200, "asked": []}

    async def get_alerts(request: web.Request) -> web.Response:
        query = request.query.getall("filter", [])
        state["asked"].append(query)
        if state["status"] != 200:
            return web.Response(status=state["status"], text="unavailable")
        out = []
        for labels in state["alerts"]:
            if not _matches(query, labels):
                continue
            silenced = labels in state["silenced"]
            out.append({"labels": labels, "annotations": {}, "fingerprint": "f", "receivers": [{"name": "voice"}],
                        "startsAt": "2026-11-26T14:55:00Z", "endsAt": "2026-11-26T15:10:00Z",
                        "updatedAt": "2026-11-26T14:55:00Z", "generatorURL": "",
                        "status": {"state": "suppressed" if silenced else "active",
                                   "silencedBy": ["s-1"] if silenced else [], "inhibitedBy": []}})
        return web.json_response(out)

    app = web.Application()
    app.router.add_get("/api/v2/alerts", get_alerts)
    server = await aiohttp_server(app, host="127.0.0.1")
    server.state = state
    return server


def am_config(*urls: str, ttl: str = "5s"):
    return make_config(CONFIG + f"alertmanager: {{urls: [{', '.join(urls)}], timeout: 1s, cache_ttl: {ttl}}}\n")


async def page_unanswered(client, harness, *alerts) -> dict[str, Any]:
    """Post the alerts; alice's first call is not answered; returns the page as the API shows it."""
    await post(client, payload(*alerts))
    await settle(client.app[DISPATCHER])
    await callback(client, receipt("REJECTED", correlation=harness.provider.requests[0].correlation_id, code="7401"))
    [page] = (await (await client.get("/api/v1/pages")).json())["pages"]
    return page


async def next_step(client, harness) -> dict[str, Any]:
    """The interval passes: the page's next call is due (and placed, unless Alertmanager says otherwise)."""
    harness.clock.advance(timedelta(minutes=3))
    await settle(client.app[DISPATCHER])
    [page] = (await (await client.get("/api/v1/pages")).json())["pages"]
    return page


def dialed(harness) -> list[str]:
    return [r.dialed_number for r in harness.provider.requests]


def url(am) -> str:
    return f"http://127.0.0.1:{am.port}/"


async def test_every_alert_silenced_ends_the_page_silenced_and_nobody_else_is_called(harness, alertmanager):
    alertmanager.state["alerts"] = [PAYMENTS, NODE2]
    client = await harness.start(am_config(url(alertmanager)))
    page = await page_unanswered(client, harness, alert(PAYMENTS), alert(NODE2))
    assert page["state"] == "active" and harness.metric("alert2voice_alertmanager_checks_total", result="active") == 1
    alertmanager.state["silenced"] = [PAYMENTS, NODE2]  # someone silenced both in Alertmanager
    page = await next_step(client, harness)
    assert (page["state"], page["due_at"]) == ("silenced", None)
    for _ in range(3):  # well past every interval of the chain
        await next_step(client, harness)
    assert dialed(harness) == [ALICE]
    assert harness.metric("alert2voice_alertmanager_checks_total", result="silenced") == 1
    assert harness.metric("alert2voice_pages_silenced_total", route="payments") == 1
    # One request per alert, selecting exactly its labels.
    assert sorted(alertmanager.state["asked"][-2:]) == sorted(
        [[f'{k}="{v}"' for k, v in sorted(labels.items())] for labels in (PAYMENTS, NODE2)])
    status = await client.get(f"/pages/{page['key']}")
    assert status.status == 200 and "silenced" in await status.text()


async def test_a_queued_call_is_cancelled_when_the_alerts_are_silenced_before_it_is_placed(harness, alertmanager):
    alertmanager.state["alerts"] = [PAYMENTS]
    client = await harness.start(am_config(url(alertmanager)))
    alertmanager.state["silenced"] = [PAYMENTS]  # between Alertmanager's notification and the first call
    await post(client, payload(alert(PAYMENTS)))
    await settle(client.app[DISPATCHER])
    [page] = (await (await client.get("/api/v1/pages")).json())["pages"]
    assert page["state"] == "silenced" and dialed(harness) == []


async def test_one_of_two_silenced_the_call_goes_ahead(harness, alertmanager):
    alertmanager.state["alerts"] = [PAYMENTS, NODE2]
    client = await harness.start(am_config(url(alertmanager)))
    await page_unanswered(client, harness, alert(PAYMENTS), alert(NODE2))
    alertmanager.state["silenced"] = [NODE2]
    page = await next_step(client, harness)
    assert page["state"] == "active" and dialed(harness) == [ALICE, ALICE]
    assert harness.metric("alert2voice_alertmanager_checks_total", result="partly") == 1
    # The new attempt speaks of the alert still active only; the first one said both.
    first, second = (r.audio.text for r in harness.provider.requests)
    assert "node2" in first and "node1" in first
    assert "node2" not in second and "node1" in second


async def test_an_alert_alertmanager_does_not_hold_counts_as_active(harness, alertmanager):
    alertmanager.state["alerts"] = [PAYMENTS]  # node2 is not (or no longer) in Alertmanager
    alertmanager.state["silenced"] = [PAYMENTS]
    client = await harness.start(am_config(url(alertmanager)))
    await post(client, payload(alert(PAYMENTS), alert(NODE2)))
    await settle(client.app[DISPATCHER])
    assert dialed(harness) == [ALICE]
    assert harness.metric("alert2voice_alertmanager_checks_total", result="partly") == 1


@pytest.mark.parametrize(("status", "result"), [(None, "unreachable"), (500, "error")])
async def test_alertmanager_down_or_erroring_the_call_goes_ahead(harness, alertmanager, unused_tcp_port,
                                                                 status, result):
    alertmanager.state["alerts"] = [PAYMENTS]
    alertmanager.state["silenced"] = [PAYMENTS]
    if status is None:
        where = f"http://127.0.0.1:{unused_tcp_port}"  # nobody listens there
    else:
        alertmanager.state["status"], where = status, url(alertmanager)
    client = await harness.start(am_config(where))
    await post(client, payload(alert(PAYMENTS)))
    await settle(client.app[DISPATCHER])
    assert dialed(harness) == [ALICE]
    assert harness.metric("alert2voice_alertmanager_checks_total", result=result) == 1


async def test_the_next_peer_is_asked_when_the_first_does_not_answer(harness, alertmanager, unused_tcp_port):
    alertmanager.state["alerts"] = [PAYMENTS]
    alertmanager.state["silenced"] = [PAYMENTS]
    client = await harness.start(am_config(f"http://127.0.0.1:{unused_tcp_port}", url(alertmanager)))
    await post(client, payload(alert(PAYMENTS)))
    await settle(client.app[DISPATCHER])
    assert dialed(harness) == [] and harness.metric("alert2voice_alertmanager_checks_total", result="silenced") == 1


async def test_an_answer_is_shared_within_its_ttl(harness, alertmanager):
    alertmanager.state["alerts"] = [PAYMENTS]
    client = await harness.start(am_config(url(alertmanager), ttl="10m"))
    await page_unanswered(client, harness, alert(PAYMENTS))
    assert len(alertmanager.state["asked"]) == 1
    alertmanager.state["silenced"] = [PAYMENTS]  # not seen: the answer of 3 minutes ago still stands
    page = await next_step(client, harness)
    assert len(alertmanager.state["asked"]) == 1 and dialed(harness) == [ALICE, ALICE] and page["state"] == "active"
    await callback(client, receipt("REJECTED", correlation=harness.provider.requests[1].correlation_id, code="7401"))
    harness.clock.advance(timedelta(minutes=7))  # past the TTL: asked again
    page = await next_step(client, harness)
    assert len(alertmanager.state["asked"]) == 2 and page["state"] == "silenced" and dialed(harness) == [ALICE, ALICE]


async def test_a_silence_that_expires_while_the_alert_fires_reopens_the_page_on_the_next_notification(
        harness, alertmanager):
    alertmanager.state["alerts"] = [PAYMENTS]
    client = await harness.start(make_config(
        CONFIG.replace("store: {backend: memory}", "store: {backend: memory}\ndedup: {window: 30m}")
        + f"alertmanager: {{urls: ['{url(alertmanager)}']}}\n"))
    await page_unanswered(client, harness, alert(PAYMENTS))
    alertmanager.state["silenced"] = [PAYMENTS]
    assert (await next_step(client, harness))["state"] == "silenced"
    alertmanager.state["silenced"] = []  # the silence expired; Alertmanager notifies again (repeat_interval)
    harness.clock.advance(timedelta(minutes=30))
    resp = await post(client, payload(alert(PAYMENTS)))
    assert resp.status == 200
    await settle(client.app[DISPATCHER])
    [again] = (await (await client.get("/api/v1/pages")).json())["pages"]  # the same key, admitted anew
    assert again["state"] == "active" and dialed(harness) == [ALICE, ALICE]


def test_suppressed_reads_alertmanagers_answer():
    item = {"labels": {"a": "1"}, "status": {"state": "suppressed", "silencedBy": [], "inhibitedBy": ["x"]}}
    assert suppressed([item], {"a": "1"}) is True
    assert suppressed([{**item, "status": {"state": "active"}}], {"a": "1"}) is False
    assert suppressed([{**item, "labels": {"a": "1", "b": "2"}}], {"a": "1"}) is None  # only an exact label set
    with pytest.raises(ValueError):
        suppressed({"error": "x"}, {"a": "1"})


def test_config_silence_url_defaults_to_the_first_alertmanager(tmp_path):
    cfg = make_config(CONFIG + "alertmanager:\n  urls: [http://am-0:9093/, http://am-1:9093]\n"
                      "  basic_auth: {username: a2v, password: pw}\n"
                      "acknowledgement: {silence: {duration: 1h}}\n")
    assert cfg.acknowledgement.silence is not None
    assert cfg.acknowledgement.silence.alertmanager_url == "http://am-0:9093"
    assert cfg.alertmanager is not None and cfg.alertmanager.headers() == {"Authorization": "Basic YTJ2OnB3"}
    with pytest.raises(ConfigError, match="alertmanager_url"):
        make_config(CONFIG + "acknowledgement: {silence: {duration: 1h}}\n")
    with pytest.raises(ConfigError, match=r"tls_config\.ca_file: cannot load ca_file"):
        make_config(CONFIG + f"alertmanager: {{urls: [http://a:9093], tls_config: {{ca_file: {tmp_path / 'none'}}}}}\n")
    with pytest.raises(ConfigError, match="between 100ms and 10s"):
        make_config(CONFIG + "alertmanager: {urls: [http://a:9093], timeout: 30s}\n")
    with pytest.raises(ConfigError, match="either basic_auth or authorization"):
        make_config(CONFIG + "alertmanager: {urls: [http://a:9093], basic_auth: {username: u, password: p},"
                    " authorization: {credentials: t}}\n")


async def test_checks_carry_alertmanagers_http_config_credentials_and_tls(aiohttp_server, pki, tmp_path):
    """tls_config (CA, client certificate) and authorization.credentials_file, as Alertmanager's http_config."""
    seen: list[str | None] = []

    async def get_alerts(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        assert peer, "no client certificate"
        return web.json_response([{"labels": PAYMENTS, "status": {"state": "suppressed", "silencedBy": ["s"],
                                                                  "inhibitedBy": []}}])

    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.dir / "client-ca.pem")
    server_tls.load_cert_chain(pki.dir / "server.pem", pki.dir / "server.key")
    server_tls.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_get("/api/v2/alerts", get_alerts)
    server = await aiohttp_server(app, host="127.0.0.1", ssl=server_tls)
    (tmp_path / "am-token").write_text("am-secret\n")
    cfg = make_config(CONFIG + f"""alertmanager:
  urls: ['https://127.0.0.1:{server.port}']
  authorization: {{credentials_file: {tmp_path / 'am-token'}}}
  tls_config: {{ca_file: {pki.dir / 'server-ca.pem'}, cert_file: {pki.dir / 'alertmanager.pem'},
               key_file: {pki.dir / 'alertmanager.key'}}}
""")
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        checked = await Suppression(session, lambda: cfg.alertmanager, clock.monotonic).check([{"labels": PAYMENTS}])
        assert checked is not None and checked.verdict is Verdict.SILENCED and seen == ["Bearer am-secret"]
        untrusted = cfg.model_copy(update={"alertmanager": cfg.alertmanager.model_copy(update={"tls_config": None})})
        checked = await Suppression(session, lambda: untrusted.alertmanager, clock.monotonic).check(
            [{"labels": PAYMENTS}])
        assert checked is not None and checked.verdict is Verdict.UNREACHABLE and len(seen) == 1


async def test_a_heartbeats_page_is_not_asked_about(harness, alertmanager):
    alertmanager.state["alerts"] = [{"alertname": "Watchdog"}]
    alertmanager.state["silenced"] = [{"alertname": "Watchdog"}]
    client = await harness.start(make_config(
        CONFIG + f"alertmanager: {{urls: ['{url(alertmanager)}']}}\n"
        "heartbeats: [{name: wd, matchers: ['alertname=\"Watchdog\"'], timeout: 1m, escalation: [{call: bob}]}]\n"))
    await post(client, payload(alert({"alertname": "Watchdog"})))  # arms it
    harness.clock.advance(timedelta(minutes=2))
    await client.app[HEARTBEATS].check(harness.clock.now())
    await settle(client.app[DISPATCHER])
    assert dialed(harness) == [BOB] and alertmanager.state["asked"] == []


async def test_acknowledgement_silences_carry_the_credentials_only_to_alertmanager_urls(aiohttp_server, harness):
    seen: list[str | None] = []

    async def post_silence(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"silenceID": "s-1"})

    app = web.Application()
    app.router.add_post("/api/v2/silences", post_silence)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    cfg = make_config(CONFIG + f"alertmanager: {{urls: ['{base}'], basic_auth: {{username: a2v, password: pw}}}}\n"
                      "acknowledgement: {silence: {duration: 1h}}\n")
    other = SilenceConfig(alertmanager_url=f"http://localhost:{server.port}")  # not one of alertmanager.urls
    assert cfg.acknowledgement.silence is not None
    async with aiohttp.ClientSession() as session:
        silencer = Silencer(session, Metrics().silence_requests)
        body = {"matchers": [{"name": "a", "value": "1", "isRegex": False, "isEqual": True}]}
        silencer.create(cfg.acknowledgement.silence, [body], "k", cfg.alertmanager)
        silencer.create(other, [body], "k", cfg.alertmanager)
        await silencer.idle()
    assert sorted(seen, key=str) == ["Basic YTJ2OnB3", None]


async def test_a_storm_asks_about_each_alert_once(alertmanager, caplog, unused_tcp_port):
    """Concurrent checks share the request in flight; a peer that is down is logged once, not once per check."""
    alertmanager.state["alerts"] = [PAYMENTS, NODE2]
    cfg = am_config(f"http://127.0.0.1:{unused_tcp_port}", url(alertmanager)).alertmanager
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        suppression = Suppression(session, lambda: cfg, clock.monotonic)
        pages = [[{"labels": PAYMENTS}, {"labels": NODE2}]] * 20
        checked = await asyncio.gather(*(suppression.check(alerts) for alerts in pages))
        assert {c.verdict for c in checked if c is not None} == {Verdict.ACTIVE}
        assert len(alertmanager.state["asked"]) == 2
        clock.advance(6)  # past the TTL
        await suppression.check(pages[0])
        assert len(alertmanager.state["asked"]) == 4
    assert len([r for r in caplog.records if "not asked successfully" in r.getMessage()]) == 1
