"""HTTPS and client certificates on the listener, over real TLS with certificates made by openssl at test time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from alert2voice.config_file import ConfigError, load_config
from alert2voice.provider.fake import RecordingProvider
from alert2voice.store.memory import MemoryStore
from alert2voice.web import create_app
from alert2voice.web.keys import LIVE
from tests.e2e_support import eventually, require_alertmanager, running_stack, skip_or_fail, start_alertmanager
from tests.harness import JSON_AUTH
from tests.support import CONFIG, PAYMENTS, FakeClock, alert, payload

JSON = {"Content-Type": "application/json"}
HEARTBEAT = "heartbeats:\n  - {name: nightly-backup, timeout: 1h, escalation: [{call: bob}]}\n"


# ----------------------------------------------------------------------------------------- certificates


def openssl(*args: str | Path) -> None:
    """Run the openssl CLI; its output goes to the failure message only."""
    binary = shutil.which("openssl")
    if binary is None:
        skip_or_fail("openssl not on PATH: the TLS tests make their certificates with it")
    done = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@dataclass
class Pki:
    """A directory where CAs and the certificates they sign are made (EC P-256, a day long)."""

    dir: Path

    def ca(self, name: str) -> Path:
        openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", self.dir / f"{name}.key", "-out", self.dir / f"{name}.pem", "-days", "1",
                "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return self.dir / f"{name}.pem"

    def issue(self, name: str, ca: str, *, serial: int, usage: str) -> tuple[Path, Path]:
        """A leaf certificate and its key; usage serverAuth (for IP 127.0.0.1) or clientAuth."""
        key, csr, cert, ext = (self.dir / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
        ext.write_text(f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1\n", encoding="utf-8")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", csr, "-CA", self.dir / f"{ca}.pem", "-CAkey", self.dir / f"{ca}.key",
                "-set_serial", str(serial), "-days", "1", "-extfile", ext, "-out", cert)
        return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A server CA with the served certificate (serial 1), a client CA with Alertmanager's, and a stranger's."""
    made = Pki(tmp_path)
    made.ca("server-ca")
    made.issue("server", "server-ca", serial=1, usage="serverAuth")
    made.ca("client-ca")
    made.issue("alertmanager", "client-ca", serial=10, usage="clientAuth")
    made.ca("stranger-ca")
    made.issue("stranger", "stranger-ca", serial=20, usage="clientAuth")
    return made


def client_context(pki: Pki, client: str | None = None) -> ssl.SSLContext:
    """What a client trusting the server CA uses, with `client`'s certificate if named."""
    context = ssl.create_default_context(cafile=pki.dir / "server-ca.pem")
    if client is not None:
        context.load_cert_chain(pki.dir / f"{client}.pem", pki.dir / f"{client}.key")
    return context


# ------------------------------------------------------------------------------------------- the service


def tls_config(*, mutual: bool = True, webhook_auth: bool = False, extra: str = "") -> str:
    """The test config served over HTTPS (paths relative to the config file), with or without webhook_auth."""
    tls = "{cert_file: server.pem, key_file: server.key" + (", client_ca_file: client-ca.pem}" if mutual else "}")
    text = CONFIG.replace("max_body_bytes: 64KiB}", f"max_body_bytes: 64KiB,\n         tls: {tls}}}")
    if not webhook_auth:
        text = text.replace("webhook_auth:\n  bearer_tokens: [tok-one-secret, tok-two-secret]\n", "")
    return text + extra


@dataclass
class Served:
    url: str
    port: int
    config_file: Path
    provider: RecordingProvider
    clock: FakeClock


@pytest.fixture
async def serve(aiohttp_server, pki: Pki):
    """Start the app over HTTPS from a config file in the PKI directory (so it can be rewritten and reloaded)."""
    async def start(text: str) -> Served:
        config_file = pki.dir / "config.yaml"
        config_file.write_text(text, encoding="utf-8")
        provider, clock = RecordingProvider(), FakeClock()
        app = create_app(load_config(config_file), config_path=config_file, provider=provider, store=MemoryStore(),
                         clock=clock, registry=CollectorRegistry())
        server = await aiohttp_server(app, host="127.0.0.1", ssl=app[LIVE].ssl_context)
        return Served(f"https://127.0.0.1:{server.port}", server.port, config_file, provider, clock)

    return start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No pooled connections: every request makes its own handshake, with the certificate the test gave.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def post_alerts(http: aiohttp.ClientSession, served: Served, context: ssl.SSLContext,
                      headers: dict[str, str] = JSON) -> tuple[int, dict[str, Any], str | None]:
    body = json.dumps(payload(alert(PAYMENTS)))
    async with http.post(f"{served.url}/alerts", data=body, headers=headers, ssl=context) as resp:
        return resp.status, await resp.json(), resp.headers.get("WWW-Authenticate")


async def served_serial(port: int, context: ssl.SSLContext) -> str:
    """The serial number of the certificate a new connection is served."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        return writer.get_extra_info("peercert")["serialNumber"]
    finally:
        writer.close()
        await writer.wait_closed()


class Client:
    """A blocking HTTPS client that can resume a TLS session (aiohttp cannot) and keep its connection open.

    Its calls run in a thread (`call`) while the server runs on the test's loop.
    """

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context
        self.session: ssl.SSLSession | None = None
        self.conn: HTTPConnection | None = None

    def connect(self) -> bool:
        """A new connection, resuming the last session if there is one; whether the server resumed it."""
        self.close()
        raw = socket.create_connection(("127.0.0.1", self.port))
        try:
            sock = self.context.wrap_socket(raw, server_hostname="127.0.0.1", session=self.session)
        except OSError:
            raw.close()
            raise
        self.conn = HTTPConnection("127.0.0.1", self.port)
        self.conn.sock = sock
        return sock.session_reused

    def post_alerts(self) -> tuple[int, str]:
        """POST /alerts on the open connection (kept open unless the server closes it): status and error."""
        assert self.conn is not None
        sock = self.conn.sock  # gone from conn once a response says Connection: close
        self.conn.request("POST", "/alerts", body=json.dumps(payload(alert(PAYMENTS))), headers=JSON)
        resp = self.conn.getresponse()
        self.session = sock.session  # TLS 1.3 tickets come after the handshake: read once data came
        body = json.loads(resp.read())
        if resp.will_close:
            self.close()
        return resp.status, body.get("error", "")

    def close(self) -> None:
        """Close the connection cleanly (close_notify both ways): a server drops a session ended otherwise."""
        if self.conn is not None:
            sock = self.conn.sock
            with contextlib.suppress(OSError):
                if isinstance(sock, ssl.SSLSocket):
                    sock.setblocking(False)  # send close_notify, do not wait for the reply
                    sock.unwrap()
            self.conn.close()
            self.conn = None

    @staticmethod
    async def call(fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


def tls12(context: ssl.SSLContext) -> ssl.SSLContext:
    """`context` held to TLS 1.2, the version whose session-ID cache still resumes sessions."""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


async def reload(served: Served, pki: Pki) -> None:
    async with aiohttp.ClientSession() as http, \
            http.post(f"{served.url}/-/reload", ssl=client_context(pki)) as resp:
        assert resp.status == 200, await resp.text()


# ------------------------------------------------------------------------------------------------ config


def test_check_config_names_a_tls_file_that_does_not_load_and_never_its_content(pki: Pki):
    key_text = (pki.dir / "server.key").read_text(encoding="utf-8")
    (pki.dir / "bad.key").write_text(key_text[:40] + "garbage\n" + key_text[40:], encoding="utf-8")
    config_file = pki.dir / "config.yaml"
    for replace, key, path in ((("server.key", "bad.key"), "server.tls.key_file", "bad.key"),
                               (("server.pem", "missing.pem"), "server.tls.cert_file", "missing.pem"),
                               (("client-ca.pem", "server.key"), "server.tls.client_ca_file", "server.key")):
        config_file.write_text(tls_config().replace(*replace), encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(config_file)
        message = str(caught.value)
        assert key in message and str(pki.dir / path) in message, message
        assert "PRIVATE KEY" not in message and key_text.splitlines()[1] not in message


def test_a_client_ca_stands_in_for_webhook_auth_in_the_warnings(pki: Pki):
    config_file = pki.dir / "config.yaml"
    config_file.write_text(tls_config(mutual=True), encoding="utf-8")
    assert not any("webhook_auth" in w for w in load_config(config_file).warnings)
    config_file.write_text(tls_config(mutual=False), encoding="utf-8")
    assert any("webhook_auth is not set" in w for w in load_config(config_file).warnings)


# ------------------------------------------------------------------------------------------ over HTTPS


async def test_alerts_over_https_take_a_verified_client_certificate_and_refuse_a_client_without(serve, pki, http):
    served = await serve(tls_config(mutual=True, webhook_auth=False, extra=HEARTBEAT))
    status, body, _ = await post_alerts(http, served, client_context(pki, "alertmanager"))
    assert status == 200 and body["pages"][0]["result"] == "called", body
    status, body, challenge = await post_alerts(http, served, client_context(pki))
    assert status == 401 and "verified client certificate" in body["error"], body
    assert challenge == 'Certificate realm="alert2voice"'
    # A certificate from another CA never gets past the handshake.
    with pytest.raises(aiohttp.ClientError):
        await post_alerts(http, served, client_context(pki, "stranger"))
    # Heartbeats are authenticated as /alerts is.
    url = f"{served.url}/heartbeats/nightly-backup"
    async with http.post(url, ssl=client_context(pki, "alertmanager")) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(url, ssl=client_context(pki)) as resp:
        assert resp.status == 401
    # The provider's callbacks bring no certificate: they reach their handler (which wants its own token).
    async with http.post(f"{served.url}/callbacks/webex", json={}, ssl=client_context(pki)) as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_with_webhook_auth_too_a_client_brings_either_a_certificate_or_a_token(serve, pki, http):
    served = await serve(tls_config(mutual=True, webhook_auth=True))
    assert (await post_alerts(http, served, client_context(pki, "alertmanager")))[0] == 200
    assert (await post_alerts(http, served, client_context(pki), JSON_AUTH))[0] == 200
    status, _, challenge = await post_alerts(http, served, client_context(pki))
    assert status == 401 and challenge == 'Bearer realm="alert2voice"'


async def test_without_client_ca_a_client_certificate_is_not_a_credential(serve, pki, http):
    served = await serve(tls_config(mutual=False, webhook_auth=True))
    status, _, challenge = await post_alerts(http, served, client_context(pki, "alertmanager"))
    assert status == 401 and challenge == 'Bearer realm="alert2voice"'
    assert (await post_alerts(http, served, client_context(pki), JSON_AUTH))[0] == 200


# --------------------------------------------------------------------------------------------- reloads


async def test_a_reload_serves_the_rotated_certificate_to_new_connections(serve, pki, http):
    served = await serve(tls_config())
    assert await served_serial(served.port, client_context(pki)) == "01"
    pki.issue("server", "server-ca", serial=2, usage="serverAuth")  # what cert-manager does: new files, same paths
    async with http.post(f"{served.url}/-/reload", ssl=client_context(pki)) as resp:
        assert resp.status == 200, await resp.text()
    assert await served_serial(served.port, client_context(pki)) == "02"
    assert (await post_alerts(http, served, client_context(pki, "alertmanager")))[0] == 200


async def test_a_reload_with_an_unreadable_key_is_refused_and_the_old_certificate_stays(serve, pki, http):
    served = await serve(tls_config())
    (pki.dir / "server.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
                                        encoding="utf-8")
    async with http.post(f"{served.url}/-/reload", ssl=client_context(pki)) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert "server.tls.key_file" in error and "not a key" not in error, error
    assert await served_serial(served.port, client_context(pki)) == "01"
    assert (await post_alerts(http, served, client_context(pki, "alertmanager")))[0] == 200


async def test_a_reload_replaces_the_client_ca_the_old_one_is_no_longer_trusted(serve, pki, http):
    served = await serve(tls_config())
    shutil.copy(pki.dir / "stranger-ca.pem", pki.dir / "client-ca.pem")
    async with http.post(f"{served.url}/-/reload", ssl=client_context(pki)) as resp:
        assert resp.status == 200, await resp.text()
    assert (await post_alerts(http, served, client_context(pki, "stranger")))[0] == 200
    with pytest.raises(aiohttp.ClientError):
        await post_alerts(http, served, client_context(pki, "alertmanager"))


async def test_a_client_ca_added_by_reload_asks_new_connections_for_certificates(serve, pki, http):
    served = await serve(tls_config(mutual=False, webhook_auth=True))
    assert (await post_alerts(http, served, client_context(pki, "alertmanager")))[0] == 401
    served.config_file.write_text(tls_config(mutual=True, webhook_auth=True), encoding="utf-8")
    async with http.post(f"{served.url}/-/reload", ssl=client_context(pki)) as resp:
        assert resp.status == 200, await resp.text()
    assert (await post_alerts(http, served, client_context(pki, "alertmanager")))[0] == 200


# --------------------------------------------------------------------- certificates that no longer count


async def test_tls13_sessions_are_never_resumed_so_every_connection_verifies_its_certificate(serve, pki):
    served = await serve(tls_config())
    client = Client(served.port, client_context(pki, "alertmanager"))
    try:
        resumed = []
        for _ in range(3):
            resumed.append(await client.call(client.connect))
            assert await client.call(client.post_alerts) == (200, "")
        assert resumed == [False, False, False]
    finally:
        client.close()


async def test_an_expired_certificate_is_refused_on_a_resumed_session_and_an_open_connection(serve, pki):
    served = await serve(tls_config())
    resuming = Client(served.port, tls12(client_context(pki, "alertmanager")))
    kept = Client(served.port, client_context(pki, "alertmanager"))
    try:
        assert await resuming.call(resuming.connect) is False
        assert (await resuming.call(resuming.post_alerts))[0] == 200
        assert await resuming.call(resuming.connect) is True  # TLS 1.2 still resumes: the check is per request
        assert (await resuming.call(resuming.post_alerts))[0] == 200
        await kept.call(kept.connect)
        assert (await kept.call(kept.post_alerts))[0] == 200
        # The certificates are a day long: two days on, the service's clock has it expired (OpenSSL's has not, so
        # only the per-request check can refuse it, whether the session is resumed or not).
        served.clock.t = datetime.now(UTC) + timedelta(days=2)
        for _ in range(3):  # three chained resumptions after expiry
            assert await resuming.call(resuming.connect) is True
            assert await resuming.call(resuming.post_alerts) == (401, "the client certificate has expired: a verified"
                                                                       " client certificate is required")
        status, error = await kept.call(kept.post_alerts)
        assert status == 401 and "expired" in error and kept.conn is None  # and the connection was closed
    finally:
        resuming.close()
        kept.close()


async def test_a_certificate_whose_ca_a_reload_removed_is_refused_on_a_resumed_session(serve, pki):
    served = await serve(tls_config(webhook_auth=True))
    resuming = Client(served.port, tls12(client_context(pki, "alertmanager")))
    kept = Client(served.port, client_context(pki, "alertmanager"))
    try:
        await resuming.call(resuming.connect)
        assert (await resuming.call(resuming.post_alerts))[0] == 200
        await kept.call(kept.connect)
        assert (await kept.call(kept.post_alerts))[0] == 200
        shutil.copy(pki.dir / "stranger-ca.pem", pki.dir / "client-ca.pem")
        await reload(served, pki)
        for _ in range(3):
            assert await resuming.call(resuming.connect) is True
            status, error = await resuming.call(resuming.post_alerts)
            assert status == 401 and "not issued by a CA in server.tls.client_ca_file now" in error, error
        assert (await kept.call(kept.post_alerts))[0] == 401
    finally:
        resuming.close()
        kept.close()


async def test_a_reload_that_keeps_the_certificates_ca_keeps_its_sessions_and_connections(serve, pki):
    both = (pki.dir / "client-ca.pem").read_text(encoding="utf-8") + (pki.dir / "stranger-ca.pem").read_text(
        encoding="utf-8")
    (pki.dir / "client-ca.pem").write_text(both, encoding="utf-8")
    served = await serve(tls_config())
    resuming = Client(served.port, tls12(client_context(pki, "alertmanager")))
    kept = Client(served.port, client_context(pki, "alertmanager"))
    stranger = Client(served.port, tls12(client_context(pki, "stranger")))
    try:
        for client in (resuming, kept, stranger):
            await client.call(client.connect)
            assert (await client.call(client.post_alerts))[0] == 200
        (pki.dir / "client-ca.pem").write_text(both.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n",
                                               encoding="utf-8")
        await reload(served, pki)  # the stranger's CA is gone, Alertmanager's stays
        assert await resuming.call(resuming.connect) is True
        assert (await resuming.call(resuming.post_alerts))[0] == 200
        assert (await kept.call(kept.post_alerts))[0] == 200
        assert await stranger.call(stranger.connect) is True
        assert (await stranger.call(stranger.post_alerts))[0] == 401
    finally:
        for client in (resuming, kept, stranger):
            client.close()


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.e2e
async def test_alertmanager_with_a_client_certificate_pages_over_https(request, pki, tmp_path):
    """Real Alertmanager (tls_config: ca_file, cert_file, key_file) -> `alert2voice serve` over HTTPS -> simulator."""
    require_alertmanager()
    tls = {"cert_file": str(pki.dir / "server.pem"), "key_file": str(pki.dir / "server.key"),
           "client_ca_file": str(pki.dir / "client-ca.pem")}
    trust = client_context(pki)
    (tmp_path / "stack").mkdir()
    with running_stack(request, tmp_path / "stack", store="memory", tls=tls, trust=trust) as stack:
        am = start_alertmanager(tmp_path, stack, "alertmanager-tls", tls_config={
            "ca_file": str(pki.dir / "server-ca.pem"), "cert_file": str(pki.dir / "alertmanager.pem"),
            "key_file": str(pki.dir / "alertmanager.key")})
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
                await am.fire(http, {"alertname": "TlsPage", "team": "payments", "severity": "critical"})

                async def called() -> list[dict[str, Any]]:
                    return [c for c in await stack.sim_calls(http) if stack.number in json.dumps(c)]

                await eventually(called, "the simulator to receive the call Alertmanager's webhook placed")
                pages = await stack.pages_for(http, "TlsPage")
                assert len(pages) == 1 and pages[0]["route"] == "payments-critical", pages
                # Without a certificate (and webhook_auth omitted), /alerts is refused.
                async with http.post(f"{stack.a2v_url}/alerts", json=payload(alert(PAYMENTS))) as resp:
                    assert resp.status == 401, await resp.text()
        finally:
            am.process.stop()
