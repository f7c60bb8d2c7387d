"""HTTPS on the listener: the server's SSLContext from server.tls, swapped for a fresh one at every reload."""

from __future__ import annotations

import ssl
import time
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any

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
    # No session tickets: a resumed session skips verification, so its certificate would outlive its expiry and
    # its CA. TLS 1.3 then never resumes; TLS 1.2 can still resume from the listener's session-ID cache (the
    # standard library cannot turn it off), which ServerTLS.refusal catches on every request.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
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

    A handshake verifies a client certificate once; `refusal` checks it again at every request, against the
    clock and the CA loaded now, for connections kept open across expiry or a reload, and resumed sessions.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.current = context
        self.listener = context
        context.sni_callback = self._select
        # The CA certificates (DER to subject) of every context handshakes were verified with; weak: an old context
        # goes with its last connection.
        self._cas: weakref.WeakKeyDictionary[ssl.SSLContext, dict[bytes, Any]] = weakref.WeakKeyDictionary()
        self._cas[context] = _ca_certs(context)
        # Subjects of CAs a reload removed, and when (wall clock, as OpenSSL stamps sessions) the last one did.
        self._removed: set[Any] = set()
        self._narrowed = 0.0

    def use(self, context: ssl.SSLContext) -> None:
        """New connections handshake with `context` (already built, so a bad file never gets here)."""
        # Version and verify mode are fixed when a connection starts, before the switch: follow them here.
        self.listener.minimum_version = context.minimum_version
        self.listener.verify_mode = context.verify_mode
        cas = self._cas[context] = _ca_certs(context)
        old = self._cas[self.current]
        removed = old.keys() - cas.keys()
        if removed:
            self._removed |= {old[der] for der in removed}
            self._narrowed = time.time()
        self.current = context

    def _select(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                context: ssl.SSLContext) -> None:
        if self.current is not context:
            connection.context = self.current

    def refusal(self, connection: ssl.SSLObject, now: datetime) -> str | None:
        """Why the client certificate this connection verified no longer counts, or None if it still does.

        Expired at `now`, or not issued by a CA loaded now. A connection verified by a context whose CAs are all
        still loaded is trusted as its handshake was; a resumed session (TLS 1.2) was verified by some earlier
        handshake, and is trusted if made after the last reload that removed a CA. Otherwise the certificate's
        issuer must be a CA loaded now whose name no removed CA had (a rotated CA of the same name cannot be
        told from the old one here: such connections are refused, and a new connection's handshake decides).
        """
        cert = connection.getpeercert()
        if not cert:
            return "no client certificate"
        if ssl.cert_time_to_seconds(cert["notAfter"]) <= now.timestamp():
            return "the client certificate has expired"
        cas = self._cas[self.current]
        if connection.session_reused:
            session = connection.session
            if session is not None and session.time > self._narrowed:
                return None
        elif connection.context is self.current or self._cas.get(connection.context, cas).keys() <= cas.keys():
            return None
        issuer = cert["issuer"]
        if issuer not in self._removed and issuer in cas.values():
            return None
        return "the client certificate is not issued by a CA in server.tls.client_ca_file now"


def _ca_certs(context: ssl.SSLContext) -> dict[bytes, Any]:
    """The CA certificates client certificates are verified against in `context`: DER to subject (in the form
    getpeercert() gives an issuer)."""
    # Both calls list the context's store in the same order.
    return dict(zip(context.get_ca_certs(binary_form=True), (c["subject"] for c in context.get_ca_certs()),
                    strict=True))


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
