"""WebexProvider: the Webex Connect Voice API v1 client over one shared aiohttp session."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr
from yarl import URL

from .. import __version__
from ..config import ProviderConfig
from .base import (
    MAX_BODY_BYTES,
    Accepted,
    CallRequest,
    CallStatus,
    NetworkError,
    Unavailable,
    classify_response,
    classify_status_response,
    read_at_most,
)

MESSAGES_PATH = "/v1/voice/messages"
CALLS_PATH = "/v1/voice/calls"
# The call id of a health probe: never a real call's, and recognisable in a request log.
PROBE_PREFIX = "a2v-probe-"
_USER_AGENT = f"alert2voice/{__version__}"

Observe = Callable[[str, str, float], None]


class Settings(Protocol):
    """What a request reads from the provider config; ProviderConfig is one."""

    @property
    def url(self) -> str: ...

    @property
    def service_key(self) -> SecretStr | None: ...

    @property
    def timeout(self) -> timedelta: ...


@dataclass(frozen=True)
class _Fixed:
    url: str
    service_key: SecretStr
    timeout: timedelta


def _fixed(base_url: str, service_key: str, timeout: float) -> Callable[[], Settings]:
    """Settings that never change: the keyword form, for a client as short-lived as the test-call command."""
    fixed = _Fixed(base_url, SecretStr(service_key), timedelta(seconds=timeout))
    return lambda: fixed


# The keyword form's timeout: provider.timeout's default.
_TIMEOUT = ProviderConfig.model_fields["timeout"].default.total_seconds()


class WebexProvider:
    """Places calls and reads call status through the Webex Connect Voice API v1."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Callable[[], Settings] | None = None,
        *,
        base_url: str = "",
        service_key: str = "",
        timeout: float = _TIMEOUT,
        observe: Observe | None = None,
    ) -> None:
        """`settings` is read at every request, so a reload reaches the next one; the keywords fix them instead."""
        self._session = session
        self._settings = settings if settings is not None else _fixed(base_url, service_key, timeout)
        self._observe = observe

    def __repr__(self) -> str:
        return f"WebexProvider(base_url={_base(self._settings())!r})"

    async def place_call(self, request: CallRequest) -> Accepted:
        """POST /v1/voice/messages: play the audio, then hang up."""
        return await self._post("messages", MESSAGES_PATH, request.message_body(), request)

    async def place_interactive_call(self, request: CallRequest) -> Accepted:
        """POST /v1/voice/calls: a programmable call driven by the callback responses."""
        return await self._post("calls", CALLS_PATH, request.call_body(), request)

    async def call_status(self, message_id: str) -> CallStatus | None:
        """GET /v1/voice/calls/{id}; None when the provider answers 404."""
        return await self._get_call("call_status", message_id)

    async def probe(self) -> None:
        """GET /v1/voice/calls/a2v-probe-<random>: returns when the provider takes the key (404 for an id it cannot
        know), raises the typed ProviderError otherwise (AuthFailed, NetworkError, ...); see provider/health.py."""
        await self._get_call("probe", PROBE_PREFIX + secrets.token_hex(8))

    async def _get_call(self, endpoint: str, message_id: str) -> CallStatus | None:
        settings = self._settings()
        key = _key(settings)
        # The id comes from the provider, but it still goes into a path: quote it as one segment.
        url = URL(f"{_base(settings)}{CALLS_PATH}/{quote(message_id, safe='')}", encoded=True)
        headers = {
            "Authorization": key,
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        status, body, resp_headers = await self._send(settings, endpoint, "GET", url, headers, None)
        return classify_status_response(status, body, resp_headers, redact=[key])

    async def _post(self, endpoint: str, path: str, body: dict[str, Any], request: CallRequest) -> Accepted:
        settings = self._settings()  # once: one request, one key, one URL, one timeout
        key = _key(settings)
        headers = {
            # Voice v1 takes the raw service key, no "Bearer"/"key" prefix (reference §1).
            "Authorization": key,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": request.effective_idempotency_key,
            "User-Agent": _USER_AGENT,
        }
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        url = URL(_base(settings) + path)
        status, raw, resp_headers = await self._send(settings, endpoint, "POST", url, headers, data)
        accepted = classify_response(status, raw, resp_headers, redact=[key])
        if not accepted.correlation_id:
            # /calls answers {"sessionId", "status"} without the correlationId; it is ours anyway.
            accepted = Accepted(accepted.message_id, request.correlation_id, accepted.accepted_time)
        return accepted

    async def _send(
        self, settings: Settings, endpoint: str, method: str, url: URL, headers: Mapping[str, str], data: bytes | None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        seconds = settings.timeout.total_seconds()
        timeout = aiohttp.ClientTimeout(total=seconds, connect=min(seconds, 5.0))
        start = time.monotonic()
        try:
            # No redirects: a 3xx means a wrong base_url, and following it would resend the key.
            async with self._session.request(
                method, url, headers=headers, data=data, timeout=timeout, allow_redirects=False
            ) as resp:
                status, resp_headers = resp.status, resp.headers
                too_long = resp.content_length is not None and resp.content_length > MAX_BODY_BYTES
                body = None if too_long else await read_at_most(resp.content)
        except TimeoutError as exc:
            self._record(endpoint, "timeout", start)
            raise NetworkError(f"{endpoint}: timed out after {seconds:g}s", timeout=True) from exc
        except aiohttp.ClientError as exc:
            self._record(endpoint, "error", start)
            connected = not isinstance(exc, aiohttp.ClientConnectorError)
            raise NetworkError(f"{endpoint}: {_describe(exc, _key(settings))}", connected=connected) from exc
        self._record(endpoint, str(status), start)
        if body is None:
            message = f"{endpoint}: response body over {MAX_BODY_BYTES} bytes, not read"
            if 200 <= status < 300:
                # Without the body there is no messageId; the retry carries the same Idempotency-Key.
                raise Unavailable(status, message=message)
            body = message.encode()  # an error answer is still typed by its status (401 stays AuthFailed)
        return status, body, resp_headers

    def _record(self, endpoint: str, code: str, start: float) -> None:
        if self._observe is not None:
            self._observe(endpoint, code, time.monotonic() - start)


def _base(settings: Settings) -> str:
    return settings.url.rstrip("/")


def _key(settings: Settings) -> str:
    assert settings.service_key is not None  # required by the config's validation
    return settings.service_key.get_secret_value()


def _describe(exc: BaseException, key: str) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.replace(key, "***") if key else text
