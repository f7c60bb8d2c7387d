"""HTTPS on the listener: the server's SSLContext from server.tls, swapped for a fresh one at every reload."""

from __future__ import annotations

import ssl
from pathlib import Path

VERSIONS = {"TLS1.2": ssl.TLSVersion.TLSv1_2, "TLS1.3": ssl.TLSVersion.TLSv1_3}


class TLSFileError(ValueError):
    """A certificate, key or CA file that does not load; says which key and file, never their content."""

    def __init__(self, key: str, path: Path, why: str) -> None:
        super().__init__(f"cannot load {key} {str(path)!r}: {why}")
        self.key = key


def _why(exc: OSError | ssl.SSLError) -> str:
    """What went wrong with a file, in words that carry none of its content."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason.lower().replace("_", " ") if exc.reason else "not a PEM certificate or key"
    return exc.strerror or str(exc)


def build_context(cert_file: Path, key_file: Path, client_ca_file: Path | None, *, min_version: str) -> ssl.SSLContext:
    """A server context with this chain and key; with a client CA, certificates are asked for and verified if given.

    No defaults: server.tls (config_secrets.TLSConfig) holds them.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[min_version]
    _load_chain(context, cert_file, key_file)
    if client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSFileError("client_ca_file", client_ca_file, _why(exc)) from None
        # OPTIONAL, not REQUIRED: the provider's callbacks share the listener and bring no certificate.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _load_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    """Load a certificate chain and its key into `context`, or say which of the two files failed."""
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        # Which of the two failed is not said by OpenSSL for every error: read the certificate alone to tell.
        key, path = ("cert_file", cert_file) if _cert_unreadable(cert_file) else ("key_file", key_file)
        raise TLSFileError(key, path, _why(exc)) from None


def _cert_unreadable(cert_file: Path) -> bool:
    """Whether the certificate file alone fails to load (a throwaway context; the key is not read)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
    except (OSError, ssl.SSLError):
        return True
    return False


class ServerTLS:
    """The listener's context, whose handshakes take the chain, key and CA of the last good config.

    A context given to the listening socket cannot be replaced, and loading a new chain into it in place
    can leave a new certificate with the old key if the key fails. So every reload builds a fresh context
    and each handshake switches to it from the SNI callback (called with or without SNI from the client).
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.current = context
        self.listener = context
        context.sni_callback = self._select

    def use(self, context: ssl.SSLContext) -> None:
        """New connections handshake with `context` (already built, so a bad file never gets here)."""
        # Version and verify mode are fixed when a connection starts, before the switch: follow them here.
        self.listener.minimum_version = context.minimum_version
        self.listener.verify_mode = context.verify_mode
        self.current = context

    def _select(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                context: ssl.SSLContext) -> None:
        if self.current is not context:
            connection.context = self.current


def client_context(ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None, *,
                   insecure: bool = False) -> ssl.SSLContext:
    """A client context (alertmanager.tls_config): this CA trusted (else the system's), this client certificate
    sent, or, with `insecure`, no check of the server's certificate at all."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSFileError("ca_file", ca_file, _why(exc)) from None
    if cert_file is not None and key_file is not None:
        _load_chain(context, cert_file, key_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
