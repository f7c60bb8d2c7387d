"""WebexProvider: the Webex Connect Voice API v1 client over one shared aiohttp session."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .. import __version__
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

REGIONS: dict[str, str] = {
    "us": "https://api.us.webexconnect.io",
    "us1": "https://api.us1.webexconnect.io",
    "eu": "https://api.eu.webexconnect.io",
    "uk": "https://api.uk.webexconnect.io",
    "ca": "https://api.ca.webexconnect.io",
    "in": "https://api.in.webexconnect.io",
    "au": "https://api.au.webexconnect.io",
}

MESSAGES_PATH = "/v1/voice/messages"
CALLS_PATH = "/v1/voice/calls"
_USER_AGENT = f"alert2voice/{__version__}"

Observe = Callable[[str, str, float], None]


def base_url_for(region: str, base_url_override: str | None = None) -> str:
    """Return the API origin for a region, or the override (simulator, sandbox, legacy imiconnect host)."""
    if base_url_override:
        base = base_url_override.rstrip("/")
        # The docs give the base as ".../v1/voice"; accept it too rather than requesting /v1/voice/v1/voice.
        return base.removesuffix("/v1/voice")
    try:
        return REGIONS[region]
    except KeyError:
        raise ValueError(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}") from None


class WebexProvider:
    """Places calls and reads call status through the Webex Connect Voice API v1."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        service_key: str,
        timeout: float = 10.0,
        observe: Observe | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._service_key = service_key
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._observe = observe

    def __repr__(self) -> str:
        return f"WebexProvider(base_url={self._base!r})"

    async def place_call(self, request: CallRequest) -> Accepted:
        """POST /v1/voice/messages: play the audio, then hang up."""
        return await self._post("messages", MESSAGES_PATH, request.message_body(), request)

    async def place_interactive_call(self, request: CallRequest) -> Accepted:
        """POST /v1/voice/calls: a programmable call driven by the callback responses."""
        return await self._post("calls", CALLS_PATH, request.call_body(), request)

    async def call_status(self, message_id: str) -> CallStatus | None:
        """GET /v1/voice/calls/{id}; None when the provider answers 404."""
        # The id comes from the provider, but it still goes into a path: quote it as one segment.
        url = URL(f"{self._base}{CALLS_PATH}/{quote(message_id, safe='')}", encoded=True)
        headers = {
            "Authorization": self._service_key,
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        status, body, resp_headers = await self._send("call_status", "GET", url, headers, None)
        return classify_status_response(status, body, resp_headers, redact=[self._service_key])

    async def _post(self, endpoint: str, path: str, body: dict[str, Any], request: CallRequest) -> Accepted:
        headers = {
            # Voice v1 takes the raw service key, no "Bearer"/"key" prefix (reference §1).
            "Authorization": self._service_key,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": request.effective_idempotency_key,
            "User-Agent": _USER_AGENT,
        }
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        status, raw, resp_headers = await self._send(endpoint, "POST", URL(self._base + path), headers, data)
        accepted = classify_response(status, raw, resp_headers, redact=[self._service_key])
        if not accepted.correlation_id:
            # /calls answers {"sessionId", "status"} without the correlationId; it is ours anyway.
            accepted = Accepted(accepted.message_id, request.correlation_id, accepted.accepted_time)
        return accepted

    async def _send(
        self, endpoint: str, method: str, url: URL, headers: Mapping[str, str], data: bytes | None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        start = time.monotonic()
        try:
            # No redirects: a 3xx means a wrong base_url, and following it would resend the key.
            async with self._session.request(
                method, url, headers=headers, data=data, timeout=self._timeout, allow_redirects=False
            ) as resp:
                status, resp_headers = resp.status, resp.headers
                too_long = resp.content_length is not None and resp.content_length > MAX_BODY_BYTES
                body = None if too_long else await read_at_most(resp.content)
        except TimeoutError as exc:
            self._record(endpoint, "timeout", start)
            raise NetworkError(f"{endpoint}: timed out after {self._timeout.total:g}s", timeout=True) from exc
        except aiohttp.ClientError as exc:
            self._record(endpoint, "error", start)
            raise NetworkError(f"{endpoint}: {self._describe(exc)}") from exc
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

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return text.replace(self._service_key, "***") if self._service_key else text
