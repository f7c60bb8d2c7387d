"""WebexProvider against the simulator (and a few misbehaving servers) over real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from alert2voice.config import ProviderConfig
from alert2voice.config_file import load_config
from alert2voice.provider import (
    Accepted,
    AuthFailed,
    CallRequest,
    NetworkError,
    ProviderError,
    RateLimited,
    Rejected,
    TtsAudio,
    Unavailable,
    UrlAudio,
)
from alert2voice.provider.base import MAX_BODY_BYTES
from alert2voice.provider.webex import WebexProvider
from alert2voice.simulator import SIMULATOR, create_simulator_app

KEY = "sk-9f8e7d6c5b4a-very-secret"
NUMBER = "+14155550101"


def call_request(**overrides: Any) -> CallRequest:
    fields: dict[str, Any] = {
        "caller_id": "+15550001234",
        "dialed_number": NUMBER,
        "audio": TtsAudio("<speak>Disk full on db-1</speak>"),
        "correlation_id": "p-3f2a-1",
        "callback_url": "http://127.0.0.1:1/callbacks/webex",
        "callback_auth_id": "TNPXXXT09U",
    }
    fields.update(overrides)
    return CallRequest(**fields)


def provider_config(**fields: Any) -> ProviderConfig:
    """A provider section as the config gives it to the app."""
    return ProviderConfig.model_validate({"service_key": KEY, "caller_id": "+15550001234",
                                          "callback": {"allow_unauthenticated": True}, **fields})


class Observed(list):
    def __call__(self, endpoint: str, code: str, seconds: float) -> None:
        assert seconds >= 0
        self.append((endpoint, code))


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim(aiohttp_server):
    # No callbackUrl is reachable in these tests; callbacks are switched off per number where it matters.
    return await aiohttp_server(create_simulator_app(service_key=KEY, callback_delay=0, callback_retry_delays=()))


@pytest.fixture
def observed() -> Observed:
    return Observed()


@pytest.fixture
def provider(session, sim, observed) -> WebexProvider:
    config = provider_config(base_url=str(sim.make_url("/")))
    return WebexProvider(session, lambda: config, observe=observed)


async def admin(session, sim, method: str, path: str, body: Any = None) -> Any:
    async with session.request(method, sim.make_url(path), json=body) as resp:
        assert resp.status in (200, 204), await resp.text()
        return await resp.json() if resp.status == 200 else None


async def test_place_call_sends_the_exact_request(provider, session, sim, observed):
    request = call_request(idempotency_key="p-3f2a-1-k")
    accepted = await provider.place_call(request)

    [seen] = await admin(session, sim, "GET", "/_sim/requests")
    assert seen["method"] == "POST" and seen["path"] == "/v1/voice/messages"
    # The simulator shows "<service-key>" only when the header is exactly the raw key, no prefix.
    assert seen["headers"]["Authorization"] == "<service-key>"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["Idempotency-Key"] == "p-3f2a-1-k"
    assert seen["headers"]["User-Agent"].startswith("alert2voice/")
    assert seen["body"] == request.message_body()
    assert accepted == Accepted(seen["messageId"], "p-3f2a-1", accepted.accepted_time)
    assert accepted.accepted_time
    assert observed == [("messages", "202")]


async def test_idempotency_key_defaults_to_the_correlation_id_and_a_retry_is_the_same_call(provider, session, sim):
    first = await provider.place_call(call_request())
    again = await provider.place_call(call_request())
    assert first == again
    seen = await admin(session, sim, "GET", "/_sim/requests")
    assert [r["headers"]["Idempotency-Key"] for r in seen] == ["p-3f2a-1", "p-3f2a-1"]
    assert len(await admin(session, sim, "GET", "/_sim/calls")) == 1


async def test_place_interactive_call(provider, session, sim, observed):
    await admin(session, sim, "PUT", f"/_sim/numbers/{NUMBER}", {"callbacks": False})
    request = call_request()
    accepted = await provider.place_interactive_call(request)
    [seen] = await admin(session, sim, "GET", "/_sim/requests")
    assert seen["path"] == "/v1/voice/calls"
    assert seen["body"] == request.call_body()
    assert accepted == Accepted(seen["messageId"], "p-3f2a-1", None)
    assert observed == [("calls", "202")]


async def test_call_status(provider, session, sim, observed):
    await admin(session, sim, "PUT", f"/_sim/numbers/{NUMBER}", {"outcome": "busy", "callbacks": False})
    accepted = await provider.place_call(call_request(audio=UrlAudio("https://example.com/a.wav")))
    await sim.app[SIMULATOR].idle()
    status = await provider.call_status(accepted.message_id)
    assert status is not None
    assert status.status == "REJECTED" and status.answered_time is None
    assert status.raw["offeredTime"]
    assert await provider.call_status("no-such-call") is None
    # An id is one path segment, whatever it contains.
    assert await provider.call_status("a/b?c") is None
    seen = await admin(session, sim, "GET", "/_sim/requests")
    assert [r["status"] for r in seen] == [202, 200, 404, 404]
    assert "Idempotency-Key" not in seen[1]["headers"]
    assert observed == [
        ("messages", "202"),
        ("call_status", "200"),
        ("call_status", "404"),
        ("call_status", "404"),
    ]


async def test_wrong_key_is_auth_failed(session, sim, observed):
    provider = WebexProvider(session, base_url=str(sim.make_url("/")), service_key="wrong-key", observe=observed)
    with pytest.raises(AuthFailed) as info:
        await provider.place_call(call_request())
    assert info.value.code == "7001" and info.value.status == 403 and not info.value.retryable
    assert observed == [("messages", "403")]


async def test_rate_limited_carries_retry_after(provider, session, sim):
    await admin(session, sim, "PUT", f"/_sim/numbers/{NUMBER}", {"fail": {"status": 429, "retry_after": 2}})
    with pytest.raises(RateLimited) as info:
        await provider.place_call(call_request())
    assert info.value.retry_after == 2.0 and info.value.code == "7020" and info.value.retryable


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_unavailable(provider, session, sim, observed, status):
    await admin(session, sim, "PUT", f"/_sim/numbers/{NUMBER}", {"fail": {"status": status}})
    with pytest.raises(Unavailable) as info:
        await provider.place_call(call_request())
    assert info.value.status == status and info.value.code == "7006" and info.value.retryable
    assert observed == [("messages", str(status))]


async def test_outage_on_status_poll_is_unavailable(provider, session, sim):
    await admin(session, sim, "PUT", "/_sim/fail", {"status": 502, "count": 1})
    with pytest.raises(Unavailable):
        await provider.call_status("x")


async def test_invalid_destination_is_rejected(provider):
    with pytest.raises(Rejected) as info:
        await provider.place_call(call_request(dialed_number="004155550101"))
    assert info.value.code == "7102" and not info.value.retryable
    assert str(info.value) == "rejected HTTP 400 code 7102: Invalid destination."


async def test_connection_refused_is_a_network_error(session, unused_tcp_port, observed):
    provider = WebexProvider(
        session, base_url=f"http://127.0.0.1:{unused_tcp_port}", service_key=KEY, timeout=2, observe=observed
    )
    with pytest.raises(NetworkError) as info:
        await provider.place_call(call_request())
    assert isinstance(info.value.__cause__, aiohttp.ClientError)
    assert info.value.retryable and info.value.reason == "network" and not info.value.timeout
    assert observed == [("messages", "error")]


async def test_timeout_is_a_network_error(aiohttp_server, session, observed):
    release = asyncio.Event()

    async def sleep(seconds: float) -> None:
        # The scripted delay waits until the test ends; the client's own timeout fires first.
        if seconds >= 1:
            await release.wait()

    sim = await aiohttp_server(create_simulator_app(service_key=KEY, callback_delay=0, sleep=sleep))
    try:
        async with session.put(sim.make_url(f"/_sim/numbers/{NUMBER}"), json={"delay": 30}) as resp:
            assert resp.status == 200
        provider = WebexProvider(
            session, base_url=str(sim.make_url("/")), service_key=KEY, timeout=0.05, observe=observed
        )
        with pytest.raises(NetworkError) as info:
            await provider.place_call(call_request())
        assert info.value.timeout and info.value.retryable
        assert isinstance(info.value.__cause__, TimeoutError)
        assert observed == [("messages", "timeout")]
    finally:
        release.set()


async def _misbehaving_server(aiohttp_server, handler):
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await aiohttp_server(app)


async def test_redirects_are_not_followed(aiohttp_server, session):
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPTemporaryRedirect("/elsewhere")

    server = await _misbehaving_server(aiohttp_server, handler)
    provider = WebexProvider(session, base_url=str(server.make_url("/")), service_key=KEY)
    with pytest.raises(Rejected) as info:
        await provider.place_call(call_request())
    assert info.value.status == 307
    assert hits == ["/v1/voice/messages"]


async def test_proxy_html_error_and_echoed_key_are_handled(aiohttp_server, session):
    async def handler(request: web.Request) -> web.Response:
        # A debugging proxy that echoes the request headers in its error page.
        return web.Response(status=502, text=f"<html>Bad Gateway {request.headers['Authorization']}</html>")

    server = await _misbehaving_server(aiohttp_server, handler)
    provider = WebexProvider(session, base_url=str(server.make_url("/")), service_key=KEY)
    with pytest.raises(Unavailable) as info:
        await provider.place_call(call_request())
    assert "Bad Gateway" in str(info.value)
    assert KEY not in str(info.value) and KEY not in repr(info.value)


def _oversized(status: int, *, chunked: bool):
    """A handler answering `status` with a JSON body just over MAX_BODY_BYTES (Content-Length or chunked)."""
    body = b'{"messageId": "m-1", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), 16384):
            await resp.write(body[i:i + 16384])
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("status", "error"), [(202, Unavailable), (503, Unavailable), (401, AuthFailed),
                                               (400, Rejected)])
async def test_oversized_response_is_a_typed_error(aiohttp_server, session, observed, status, error, chunked):
    server = await _misbehaving_server(aiohttp_server, _oversized(status, chunked=chunked))
    provider = WebexProvider(session, base_url=str(server.make_url("/")), service_key=KEY, observe=observed)
    with pytest.raises(error) as info:
        await provider.place_call(call_request())
    assert type(info.value) is error and info.value.status == status
    assert f"over {MAX_BODY_BYTES} bytes" in str(info.value)
    assert observed == [("messages", str(status))]


async def test_oversized_call_status_is_unavailable(aiohttp_server, session):
    server = await _misbehaving_server(aiohttp_server, _oversized(200, chunked=True))
    provider = WebexProvider(session, base_url=str(server.make_url("/")), service_key=KEY)
    with pytest.raises(Unavailable, match="response body over"):
        await provider.call_status("m-1")


async def test_response_of_exactly_the_limit_is_read(aiohttp_server, session):
    head = b'{"messageId": "m-7", "pad": "'
    body = head + b"x" * (MAX_BODY_BYTES - len(head) - 2) + b'"}'

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=202, body=body, content_type="application/json")

    server = await _misbehaving_server(aiohttp_server, handler)
    provider = WebexProvider(session, base_url=str(server.make_url("/")), service_key=KEY)
    assert len(body) == MAX_BODY_BYTES
    assert (await provider.place_call(call_request())).message_id == "m-7"


async def test_service_key_never_appears_in_errors_or_repr(provider, session, sim, unused_tcp_port):
    errors: list[ProviderError] = []
    for script in ({"fail": {"status": 429}}, {"fail": {"status": 500}}, {"fail": {"status": 403}}):
        await admin(session, sim, "PUT", f"/_sim/numbers/{NUMBER}", script)
        with pytest.raises(ProviderError) as info:
            await provider.place_call(call_request())
        errors.append(info.value)
    with pytest.raises(ProviderError) as info:
        await provider.place_call(call_request(caller_id="1"))
    errors.append(info.value)
    refused = WebexProvider(session, base_url=f"http://127.0.0.1:{unused_tcp_port}", service_key=KEY)
    with pytest.raises(ProviderError) as info:
        await refused.place_call(call_request())
    errors.append(info.value)
    for error in errors:
        assert KEY not in str(error) and KEY not in repr(error)
        assert KEY not in str(error.__cause__) and KEY not in repr(error.__cause__)
    assert KEY not in repr(provider) and KEY not in repr(refused)
    assert KEY not in str(await admin(session, sim, "GET", "/_sim/requests"))


# --- settings: the provider config, read at every request ---------------------------------------------------


def write_config(path: Path, base_url: str, *, timeout: str = "10s") -> Path:
    path.write_text(f"provider:\n  base_url: {base_url}\n  service_key_file: service-key\n"
                    f'  caller_id: "+15550001234"\n  timeout: {timeout}\n'
                    "  callback: {allow_unauthenticated: true}\n", encoding="utf-8")
    return path


async def test_a_reload_rotates_the_service_key_for_the_next_request(tmp_path, session, sim):
    """Rotating: the tenant has the new key, the file is rewritten, the config reloaded; no new client."""
    (tmp_path / "service-key").write_text("sk-old-revoked\n")
    path = write_config(tmp_path / "config.yaml", str(sim.make_url("/")))
    current = load_config(path)
    provider = WebexProvider(session, lambda: current.provider)
    with pytest.raises(AuthFailed):
        await provider.place_call(call_request())

    (tmp_path / "service-key").write_text(KEY + "\n")
    current = load_config(path)  # what Runtime.reload does
    accepted = await provider.place_call(call_request())

    refused, placed = await admin(session, sim, "GET", "/_sim/requests")
    assert refused["status"] == 403 and refused["headers"]["Authorization"] != "<service-key>"
    assert placed["status"] == 202 and placed["headers"]["Authorization"] == "<service-key>"
    assert placed["messageId"] == accepted.message_id


async def test_a_reload_moves_the_base_url_and_the_timeout(aiohttp_server, session, sim, observed):
    hung = asyncio.Event()
    hits: list[str] = []

    async def never_answers(request: web.Request) -> web.Response:
        hits.append(request.path)
        await hung.wait()
        return web.Response(status=500)

    other = await _misbehaving_server(aiohttp_server, never_answers)
    current = provider_config(base_url=str(sim.make_url("/")))
    provider = WebexProvider(session, lambda: current, observe=observed)
    try:
        await provider.place_call(call_request())
        current = provider_config(base_url=str(other.make_url("/")), timeout="50ms")
        with pytest.raises(NetworkError, match=r"timed out after 0\.05s") as info:
            await provider.place_call(call_request())
        assert info.value.timeout
    finally:
        hung.set()
    assert hits == ["/v1/voice/messages"]
    assert len(await admin(session, sim, "GET", "/_sim/requests")) == 1
    assert observed == [("messages", "202"), ("messages", "timeout")]
    assert repr(provider) == f"WebexProvider(base_url={str(other.make_url('/')).rstrip('/')!r})"


@pytest.mark.parametrize("suffix", ["/v1/voice", "/v1/voice/"])
async def test_a_base_url_with_the_documented_suffix_is_not_doubled(session, sim, suffix):
    config = provider_config(base_url=str(sim.make_url("/")).rstrip("/") + suffix)
    accepted = await WebexProvider(session, lambda: config).place_call(call_request())
    [seen] = await admin(session, sim, "GET", "/_sim/requests")
    assert seen["path"] == "/v1/voice/messages" and seen["messageId"] == accepted.message_id


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({}, "https://api.us.webexconnect.io"),
        ({"region": "us1"}, "https://api.us1.webexconnect.io"),
        ({"region": "eu"}, "https://api.eu.webexconnect.io"),
        ({"region": "uk"}, "https://api.uk.webexconnect.io"),
        ({"region": "ca"}, "https://api.ca.webexconnect.io"),
        ({"region": "in"}, "https://api.in.webexconnect.io"),
        ({"region": "au"}, "https://api.au.webexconnect.io"),
        ({"region": "eu", "base_url": "http://127.0.0.1:8081/"}, "http://127.0.0.1:8081"),
        ({"base_url": "https://api.imiconnect.io/v1/voice"}, "https://api.imiconnect.io"),
        ({"base_url": "https://api.imiconnect.io/v1/voice/"}, "https://api.imiconnect.io"),
        ({"base_url": "https://sandbox.example.com/tenant-7/v1/voice"}, "https://sandbox.example.com/tenant-7"),
    ],
)
def test_provider_url(fields, url):
    assert provider_config(**fields).url == url


def test_unknown_region():
    with pytest.raises(ValidationError, match="region"):
        provider_config(region="mars")
