"""Credential checks shared by the HTTP endpoints: bearer tokens, basic auth, client certificates, loopback clients."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from .config import WebhookAuth


def token_matches(presented: str, tokens: Iterable[SecretStr]) -> bool:
    """Whether `presented` equals one of `tokens`, compared in constant time against every one."""
    ok = False
    given = presented.encode()
    for token in tokens:
        # No early exit: timing must not reveal which token matched, or how many there are before it.
        ok |= hmac.compare_digest(given, token.get_secret_value().encode())
    return ok


def bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def authorized(auth: WebhookAuth, header: str) -> bool:
    """Whether an Authorization header carries one of the bearer tokens or the basic-auth pair of `auth`."""
    token = bearer(header)
    if token is not None:
        return token_matches(token, auth.bearer_tokens)
    scheme, _, value = header.partition(" ")
    basic = auth.basic_auth
    if scheme.lower() != "basic" or basic is None or basic.password is None:
        return False
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user.encode(), basic.username.encode()) & hmac.compare_digest(
        password.encode(), basic.password.get_secret_value().encode())


def peer_certificate(transport: Any) -> ssl.SSLObject | None:
    """The TLS side of a connection whose client presented a certificate its handshake verified against
    server.tls.client_ca_file, else None. Whether it still counts is ServerTLS.refusal's to say."""
    # With CERT_OPTIONAL, a certificate that fails verification fails the handshake; one that is here passed it.
    if transport is None or not transport.get_extra_info("peercert"):
        return None
    return transport.get_extra_info("ssl_object")


def challenge(auth: WebhookAuth) -> str:
    """The WWW-Authenticate value of a 401 for `auth`."""
    return 'Bearer realm="alert2voice"' if auth.bearer_tokens else 'Basic realm="alert2voice"'


def is_loopback(host: str | None) -> bool:
    """Whether a host or client address is this machine: localhost, 127.0.0.0/8, ::1, ::ffff:127.x."""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
    return address.is_loopback
