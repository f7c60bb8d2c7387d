"""The status page at / and a page's detail view: over real HTTP, and once in a real headless chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from alert2voice.config import Config
from alert2voice.config_file import secrets_of
from alert2voice.logs import mask_number
from alert2voice.pages import Call, CallState
from alert2voice.preview import Previews
from alert2voice.units import format_instant
from alert2voice.web.keys import DISPATCHER, LIVE, PREVIEWS
from alert2voice.web.status import said_heading
from tests.e2e_support import Stack, in_ci, one_page, running_stack
from tests.harness import ADMIN_GUARDED, Harness, config_changes
from tests.harness import JSON_AUTH as AUTH
from tests.support import CONFIG, PAYMENTS, T0, alert, make_config, payload, settle
from tests.test_app import callback, receipt

ROTATION = "rotations:\n  primary: {members: [bob, alice], shift: 1w, start: 2026-11-23T09:00:00}\nroutes:\n"
HOSTILE = {**PAYMENTS, "instance": "<script>alert(1)</script>"}
FULL_NUMBERS = ("+14155550101", "+442071838750")


def status_config(**replace: str):
    return make_config(**{"routes:\n": ROTATION, **replace})


@pytest.fixture
def config(request: pytest.FixtureRequest) -> Config:
    return status_config(**config_changes(request))


async def paged(client) -> dict:
    """Post one hostile-labelled page, let the dispatcher place its call; the page as /api/v1/pages shows it."""
    body = payload(alert(HOSTILE, summary="<img src=x onerror=alert(2)> & more"))
    assert (await client.post("/alerts", data=json.dumps(body), headers=AUTH)).status == 200
    await settle(client.app[DISPATCHER])
    [page] = (await (await client.get("/api/v1/pages")).json())["pages"]
    return page


def assert_nothing_leaks(html: str, config) -> None:
    for secret in secrets_of(config):
        assert secret not in html
    for number in FULL_NUMBERS:
        assert number not in html


async def test_status_page_shows_pages_calls_on_call_and_service(client):
    page = await paged(client)
    resp = await client.get("/")
    assert (resp.status, resp.content_type) == (200, "text/html")
    html = await resp.text()
    assert f'id="page-{page["key"]}"' in html and "payments" in html
    assert "attempt 1 (page), step 1:" in html and "alice <code>+14*****0101</code>" in html
    assert '<span class="outcome accepted">accepted</span>' in html
    # bob holds the first week of the rotation (from Monday 09:00), T0 is that Thursday.
    assert '<td class="contact">bob</td><td><code>+44******8750</code></td><td>2026-11-30 09:00:00 UTC</td>' in html
    assert '<span class="ok">healthy: the service key is accepted</span>' in html and '<span class="ok">succeeded</span>' in html
    for link in ('href="/metrics"', 'href="/api/v1/pages"', f'href="/pages/{page["key"]}"'):
        assert link in html
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert_nothing_leaks(html, client.app[LIVE].config)


async def test_page_detail_shows_what_was_said_escaped_and_plays_it(client):
    page = await paged(client)
    resp = await client.get(f"/pages/{page['key']}")
    assert resp.status == 200
    html = await resp.text()
    assert "<speak" not in html and "&lt;speak" in html  # the SSML shown as text
    assert "<img" not in html and "&lt;img src=x onerror=alert(2)&gt; &amp; more" in html
    assert_nothing_leaks(html, client.app[LIVE].config)
    src = f'/pages/{page["key"]}/calls/1.wav'
    if shutil.which("espeak-ng") is None:
        assert "<audio" not in html
        return
    assert f'<audio controls preload="none" src="{src}">' in html
    wav = await client.get(src)
    assert (wav.status, wav.content_type) == (200, "audio/wav")
    body = await wav.read()
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE" and len(body) > 1000


def fake_espeak(directory: Path, monkeypatch: pytest.MonkeyPatch, seconds: float) -> Path:
    """An espeak-ng first on PATH that takes `seconds`, writes a tiny WAV and notes in `directory` each run and
    how many ran at once when it started."""
    directory.mkdir()
    script = directory / "espeak-ng"
    script.write_text(f"""#!/bin/sh
d={directory}
echo run >> "$d/runs"
touch "$d/running.$$"
ls "$d" | grep -c '^running\\.' >> "$d/at-once"
sleep {seconds}
printf 'RIFF....WAVEfake' > "$5"
rm "$d/running.$$"
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")
    return directory


async def test_a_calls_wav_is_spoken_once_then_cached(client, tmp_path, monkeypatch):
    espeak = fake_espeak(tmp_path / "espeak", monkeypatch, 0.05)
    page = await paged(client)
    src = f'/pages/{page["key"]}/calls/1.wav'
    bodies = [await (await client.get(src)).read() for _ in range(5)]
    assert bodies == [b"RIFF....WAVEfake"] * 5
    assert (espeak / "runs").read_text().count("run") == 1


async def test_wav_previews_are_two_at_a_time_and_time_out_with_504(client, tmp_path, monkeypatch):
    espeak = fake_espeak(tmp_path / "espeak", monkeypatch, 0.3)
    previews = Previews(timeout=5)
    texts = await asyncio.gather(*(previews.wav(str(espeak / "espeak-ng"), f"page-{i}", 1, "x") for i in range(6)))
    assert texts == [b"RIFF....WAVEfake"] * 6
    assert max(int(n) for n in (espeak / "at-once").read_text().split()) == 2
    page = await paged(client)
    client.app[PREVIEWS].timeout = 0.1
    slow = await client.get(f'/pages/{page["key"]}/calls/1.wav')
    assert slow.status == 504 and "within 0.1 s" in (await slow.json())["error"]
    [marker] = espeak.glob("running.*")  # killed before it could tidy up: nothing outlives the request
    with pytest.raises(ProcessLookupError):
        os.kill(int(marker.suffix[1:]), 0)


async def test_each_page_shows_its_next_call_and_the_replica_its_name(client):
    page = await paged(client)
    html = await (await client.get("/")).text()
    owner = client.app[DISPATCHER].owner
    assert f'<span id="replica">replica <code>{owner}</code></span>' in html
    row = html[html.index(f'id="page-{page["key"]}"'):].split("</tr>")[0]
    assert '<span class="next next-accepted">alice <code>+14*****0101</code>, outcome due 2026-11-26 15:02:00 UTC ' \
           "(attempt 1, page, accepted)</span>" in row
    assert '<span class="held">waiting for the outcome until 2026-11-26 15:02:00 UTC</span>' in row
    detail = await (await client.get(f"/pages/{page['key']}")).text()
    assert f"<code>{owner}</code>" in detail and "waiting for the outcome until 2026-11-26 15:02:00 UTC" in detail


async def test_what_a_call_said_is_worded_by_its_outcome(client):
    page = await paged(client)
    detail = await (await client.get(f"/pages/{page['key']}")).text()
    assert "Attempt 1: what alice hears on answering (the call is under way)</h3>" in detail
    assert "heard</h3>" not in detail
    assert (await callback(client, receipt("ANSWERED", correlation=page["calls"][0]["correlation_id"]))).status == 200
    detail = await (await client.get(f"/pages/{page['key']}")).text()
    assert "Attempt 1: what alice heard</h3>" in detail


@pytest.mark.parametrize(("state", "placed", "heading"), [
    ("queued", False, "what will be said to alice"),
    ("unknown", False, "what was sent for alice (outcome unknown: it may have rung)"),
    ("accepted", True, "what alice hears on answering (the call is under way)"),
    ("answered", True, "what alice heard"),
    ("acknowledged", True, "what alice heard"),
    ("no_answer", True, "what alice would have heard (not reached: no answer)"),
    ("busy", True, "what alice would have heard (not reached: busy)"),
    ("voicemail", True, "what alice would have heard (not reached: voicemail)"),
    ("failed", True, "what alice would have heard (not reached: failed)"),
    ("failed", False, "what alice would have heard (not placed: failed)"),
    ("cancelled", False, "what alice would have heard (not placed: cancelled)"),
])
def test_said_heading(state: str, placed: bool, heading: str) -> None:
    call = Call(attempt=1, correlation_id="c", idempotency_key="k", contact="alice", number="+14155550101", step=0,
                round=0, created_at=T0, state=CallState(state), message_id="msg-1" if placed else None)
    assert said_heading(call) == heading


async def test_an_unavailable_store_is_shown_as_such_not_as_no_pages(harness):
    store = harness.store
    client = await harness.start(make_config(CONFIG + HEARTBEATS))
    store.available = False
    resp = await client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert '<p class="bad" id="store-error">store unavailable: ' in html
    assert "No pages yet." not in html and "No heartbeats configured." not in html
    store.available = True
    assert "No pages yet." in await (await client.get("/")).text()


async def test_unknown_page_and_call_are_404(client):
    page = await paged(client)
    assert (await client.get("/pages/no-such-page")).status == 404
    assert (await client.get(f"/pages/{page['key']}/calls/9.wav")).status == 404


async def test_status_pages_are_admin_endpoints(aiohttp_client):
    """Refused to a far peer without admin_auth (403), and without the admin token when it is set (401)."""

    @web.middleware
    async def peer(request: web.Request, handler):
        return await handler(request.clone(remote=request.headers.get("X-Test-Peer", request.remote)))

    paths = ("/", "/pages/some-key", "/pages/some-key/calls/1.wav", "/api/v1/pages/some-key")
    app = Harness(status_config(), aiohttp_client).app()
    app.middlewares.append(peer)
    far = await aiohttp_client(app)
    assert [(await far.get(p, headers={"X-Test-Peer": "10.0.0.7"})).status for p in paths] == [403] * 4
    assert (await far.get("/", headers={"X-Test-Peer": "::ffff:127.0.0.1"})).status == 200
    guarded = status_config(**ADMIN_GUARDED)
    admin = await Harness(guarded, aiohttp_client).start()
    refused = [await admin.get(p) for p in paths]
    assert [r.status for r in refused] == [401] * 4 and all("WWW-Authenticate" in r.headers for r in refused)
    assert (await admin.get("/", headers={"Authorization": "Bearer adm-token-secret"})).status == 200


CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; media-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


async def test_status_pages_refuse_a_foreign_host_and_send_security_headers(client):
    """DNS rebinding (evil.example resolving to 127.0.0.1 behind `kubectl port-forward`) gets 421, not the page."""
    page = await paged(client)
    paths = ("/", f"/pages/{page['key']}", f"/pages/{page['key']}/calls/1.wav")
    for host in ("evil.example", "evil.example:9095", "127.0.0.1.evil.example", "localhost.:1@evil"):
        for path in paths:
            resp = await client.get(path, headers={"Host": host})
            assert resp.status == 421, (host, path)
            assert resp.headers["X-Frame-Options"] == "DENY"
        form = await client.post(f"/pages/{page['key']}/ack", data={"back": "/"}, allow_redirects=False,
                                 headers={"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})
        assert form.status == 421
    # Without admin_auth, loopback alone is no proof: the JSON API refuses a foreign Host too.
    assert (await client.get(f"/api/v1/pages/{page['key']}", headers={"Host": "evil.example"})).status == 421
    for host in ("127.0.0.1", "localhost:9095", "LOCALHOST", "[::1]:9095"):
        resp = await client.get("/", headers={"Host": host})
        assert resp.status == 200, host
        assert resp.headers["Content-Security-Policy"] == CSP
        assert (resp.headers["X-Frame-Options"], resp.headers["X-Content-Type-Options"],
                resp.headers["Referrer-Policy"]) == ("DENY", "nosniff", "no-referrer")
    redirected = await client.post(f"/pages/{page['key']}/ack", data={"back": "/"}, allow_redirects=False,
                                   headers={"Sec-Fetch-Site": "same-origin"})
    assert redirected.status == 303 and redirected.headers["Content-Security-Policy"] == CSP


async def test_a_flood_of_foreign_hosts_logs_a_line_a_minute(client, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(300):
        assert (await client.get("/", headers={"Host": "evil.example"})).status == 421
        assert (await client.get("/api/v1/pages", headers={"Host": "evil.example"})).status == 421
    said = [r for r in caplog.records if "refused" in r.getMessage()]
    assert sorted(r.getMessage() for r in said) == ["admin request refused", "request for a foreign host refused"]


async def test_allowed_hosts_add_names_and_public_url_host_is_always_one(aiohttp_client):
    config = status_config(**{"public_url: http://127.0.0.1:9095":
                              "public_url: https://Alert2Voice.example:8443, allowed_hosts: [a2v.internal]"})
    c = await Harness(config, aiohttp_client).start()
    statuses = {h: (await c.get("/", headers={"Host": h})).status
                for h in ("alert2voice.example", "alert2voice.example:8443", "a2v.internal", "localhost", "x.y")}
    assert statuses == {"alert2voice.example": 200, "alert2voice.example:8443": 200, "a2v.internal": 200,
                        "localhost": 421, "x.y": 421}
    anyone = status_config(**{"public_url: http://127.0.0.1:9095": "public_url: http://127.0.0.1:9095, "
                                                                  "allowed_hosts: ['*']"})
    c = await Harness(anyone, aiohttp_client).start()
    assert (await c.get("/", headers={"Host": "x.y"})).status == 200


HEARTBEATS = """
heartbeats:
  - {name: nightly-backup, timeout: 6s, escalation: [{call: bob}]}
  - {name: watchdog, matchers: ['alertname="Watchdog"'], timeout: 1m, escalation: [{call: bob}]}
  - {name: never-seen, timeout: 1h, escalation: [{call: bob}]}
"""


async def test_heartbeats_up_missing_and_not_armed(harness):
    clock = harness.clock
    client = await harness.start(make_config(CONFIG + HEARTBEATS))
    for name in ("nightly-backup", "watchdog"):
        assert (await client.post(f"/heartbeats/{name}", headers=AUTH)).status == 200
    clock.advance(10)  # past nightly-backup's 6s, within the watchdog's minute
    html = await (await client.get("/")).text()
    rows = {name: html[html.index(f"<td>{name}</td>"):].split("</tr>")[0] for name in
            ("nightly-backup", "watchdog", "never-seen")}
    assert '<td class="missing">missing</td><td>2026-11-26 15:00:00 UTC</td><td>6s</td>' in rows["nightly-backup"]
    assert '<td class="up">up</td><td>2026-11-26 15:00:00 UTC</td><td>1m</td>' in rows["watchdog"]
    assert '<td class="not_armed">not armed</td><td>—</td><td>1h</td>' in rows["never-seen"]


# ------------------------------------------------------------------------------------ headless chromium


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(request, tmp_path_factory.mktemp("e2e-status"), store="sqlite") as s:
        yield s


def chromium() -> str:
    """Debian's chromium; missing, the test skips (fails under CI)."""
    binary = shutil.which("chromium")
    if binary is None:
        if in_ci():
            pytest.fail("chromium is not installed (make system-deps installs it)")
        pytest.skip("chromium is not installed (make system-deps installs it)")
    return binary


async def browse(binary: str, url: str, workdir: Path, *flags: str) -> bytes:
    """Run headless chromium on `url` with these flags; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={workdir / 'chromium-profile'}", *flags, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def on_rotation(stack: Stack, http: aiohttp.ClientSession) -> None:
    """The stack's route calls a rotation alice is on now; no admin_auth, so the browser (on loopback) is let in."""
    config = yaml.safe_load(stack.config_path.read_text(encoding="utf-8"))
    config["rotations"] = {"primary": {"members": ["alice"], "shift": "1w", "start": "2026-01-05T09:00:00"}}
    config["routes"][0]["escalation"][0]["call"] = "rotation:primary"
    config["server"].pop("admin_auth", None)
    stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    async with http.post(f"{stack.a2v_url}/-/reload", headers=stack.admin) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.e2e
async def test_a_page_just_called_in_headless_chromium(stack: Stack, tmp_path: Path) -> None:
    binary = chromium()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        await on_rotation(stack, http)
        fire = {"Authorization": f"Bearer {stack.token}"}
        labels = {"alertname": "StatusPageCheck", "team": "payments", "severity": "critical"}
        async with http.post(f"{stack.a2v_url}/alerts", json=payload(alert(labels)), headers=fire) as resp:
            assert resp.status == 200, await resp.text()
        page = await one_page(stack, http, "StatusPageCheck", lambda p: p["state"] == "answered",
                              "the page answered")
        # A second incident nobody answers: its page waits the step's 3m interval before alice's second attempt.
        await stack.script_number(http, stack.number, {"outcome": "no_answer"})
        unanswered = {**labels, "alertname": "StatusPageUnanswered"}
        async with http.post(f"{stack.a2v_url}/alerts", json=payload(alert(unanswered), group_key="{}:{unanswered}"),
                             headers=fire) as resp:
            assert resp.status == 200, await resp.text()
        waiting = await one_page(stack, http, "StatusPageUnanswered",
                                 lambda p: p["state"] == "active" and p["calls"][0]["state"] == "no_answer",
                                 "the page waiting for its next attempt")
    shot = tmp_path / "status.png"
    dom = (await browse(binary, f"{stack.a2v_url}/", tmp_path, "--dump-dom")).decode()
    await browse(binary, f"{stack.a2v_url}/", tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    row = page_row(dom, page["key"])
    assert "StatusPageCheck" in row and '<span class="outcome answered">answered</span>' in row
    assert '<span class="next next-none">no further call</span>' in row
    row = page_row(dom, waiting["key"])
    assert '<span class="outcome no_answer">no_answer</span>' in row
    due = datetime.fromisoformat(waiting["due_at"])
    assert f'<span class="next next-planned">alice <code>{mask_number(stack.number)}</code>, at {format_instant(due)} ' \
           "(step 1, not queued yet)</span>" in row
    assert f'<span class="held">next attempt after the interval at {format_instant(due)}</span>' in row
    assert '<tr class="rotation"><td>primary</td><td class="contact">alice</td>' in dom
    assert re.search(r'<span id="replica">replica <code>[^<]+-\d+-[0-9a-f]{6}</code></span>', dom)
    detail = (await browse(binary, f"{stack.a2v_url}/pages/{waiting['key']}", tmp_path, "--dump-dom")).decode()
    assert "Attempt 1: what alice would have heard (not reached: no answer)</h3>" in detail
    assert "what alice heard" not in detail
    assert f"next attempt after the interval at {format_instant(due)}" in detail
    for html in (dom, detail):
        for secret in (*stack.secrets.values(), stack.number):
            assert secret not in html
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def page_row(dom: str, key: str) -> str:
    """The status page's table row of the page with this key."""
    row = dom[dom.index(f'id="page-{key}"'):]
    return row[:row.index("</tr>")]


class DevTools:
    """Headless chromium driven over the DevTools protocol (its own websocket): load a page, click, read the DOM."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.next_id = ws, 0

    async def send(self, method: str, **params: object) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        async for message in self.ws:  # events interleave with the answer
            data = json.loads(message.data)
            if data.get("id") == self.next_id:
                assert "error" not in data, data
                return data["result"]
        raise AssertionError(f"DevTools closed before answering {method}")

    async def evaluate(self, expression: str) -> object:
        return (await self.send("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")

    async def until(self, expression: str, what: str, within: float = 20.0) -> object:
        """Poll a JavaScript expression until it is truthy (a page loading, a form posted and redirected)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def devtools(binary: str, url: str, workdir: Path) -> AsyncIterator[DevTools]:
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={workdir / 'chromium-devtools'}", "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0", url, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        endpoint = None
        while endpoint is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "chromium ended before it listened for DevTools"
            if found := re.search(r"DevTools listening on (ws://\S+)", line):
                endpoint = found.group(1)
        port = int(endpoint.split(":")[2].split("/")[0])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                [tab] = [t for t in await resp.json() if t["type"] == "page"]
            async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.e2e
async def test_acknowledge_clicked_in_headless_chromium(stack: Stack, tmp_path: Path) -> None:
    binary = chromium()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        await on_rotation(stack, http)
        await stack.script_number(http, stack.number, {"outcome": "no_answer"})
        labels = {"alertname": "ClickToAcknowledge", "team": "payments", "severity": "critical"}
        async with http.post(f"{stack.a2v_url}/alerts", json=payload(alert(labels), group_key="{}:{click}"),
                             headers={"Authorization": f"Bearer {stack.token}"}) as resp:
            assert resp.status == 200, await resp.text()
        page = await one_page(stack, http, "ClickToAcknowledge",
                              lambda p: p["state"] == "active" and p["calls"][0]["state"] == "no_answer",
                              "the page waiting for its next attempt")
    detail = f"{stack.a2v_url}/pages/{page['key']}"
    async with devtools(binary, detail, tmp_path) as browser:
        await browser.until("document.readyState === 'complete' && !!document.querySelector('form.ack button')",
                            "the page's Acknowledge button")
        await browser.evaluate("document.querySelector('form.ack button').click()")
        text = await browser.until("document.readyState === 'complete' && location.pathname.startsWith('/pages/')"
                                   " && document.body.innerText.includes('acknowledged by') && document.body.innerText",
                                   "the page shown again, acknowledged")
    assert "acknowledged by status page (web)" in str(text) and "Escalate now" not in str(text)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        [stored] = [p for p in await stack.pages(http) if p["key"] == page["key"]]
        assert stored["state"] == "acknowledged" and stored["acknowledged"]["via"] == "web"
        # The same POST from another site's page is refused, and changes nothing.
        async with http.post(f"{detail}/escalate", data={"step": "1"},
                             headers={"Origin": "https://elsewhere.example"}, allow_redirects=False) as resp:
            assert resp.status == 403
