"""HTTPS and client certificates on the listener, over real TLS with certificates made by openssl at test time."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from tests.support import CONFIG, PAYMENTS, FakeClock, alert, payload

JSON = {"Content-Type": "application/json"}
TOKEN = {"Authorization": "Bearer tok-one-secret", **JSON}
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


@pytest.fixture
async def serve(aiohttp_server, pki: Pki):
    """Start the app over HTTPS from a config file in the PKI directory (so it can be rewritten and reloaded)."""
    async def start(text: str) -> Served:
        config_file = pki.dir / "config.yaml"
        config_file.write_text(text, encoding="utf-8")
        provider = RecordingProvider()
        app = create_app(load_config(config_file), config_path=config_file, provider=provider, store=MemoryStore(),
                         clock=FakeClock(), registry=CollectorRegistry())
        server = await aiohttp_server(app, host="127.0.0.1", ssl=app[LIVE].ssl_context)
        return Served(f"https://127.0.0.1:{server.port}", server.port, config_file, provider)

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
    assert (await post_alerts(http, served, client_context(pki), TOKEN))[0] == 200
    status, _, challenge = await post_alerts(http, served, client_context(pki))
    assert status == 401 and challenge == 'Bearer realm="alert2voice"'


async def test_without_client_ca_a_client_certificate_is_not_a_credential(serve, pki, http):
    served = await serve(tls_config(mutual=False, webhook_auth=True))
    status, _, challenge = await post_alerts(http, served, client_context(pki, "alertmanager"))
    assert status == 401 and challenge == 'Bearer realm="alert2voice"'
    assert (await post_alerts(http, served, client_context(pki), TOKEN))[0] == 200


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
