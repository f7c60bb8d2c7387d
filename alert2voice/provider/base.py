"""The provider boundary: call requests, results, typed errors and the Provider protocol."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..config import SpeechConfig
from .statuses import normalize_status

# Reference §3: which codes mean what. Codes win over the HTTP status, except that a 5xx is
# always the server's problem whatever code it carries.
AUTH_CODES = frozenset({"7001", "7002", "7127", "7007"})  # 7007 "service inactive": a tenant config error
RATE_LIMIT_CODES = frozenset({"7020"})
UNAVAILABLE_CODES = frozenset({"7006", "7016"})
AUTH_STATUSES = frozenset({401, 403})
# 408 (a proxy timing out) says nothing about the request itself, so it is retried like a 5xx.
UNAVAILABLE_STATUSES = frozenset({408})

_MAX_DETAIL = 200


_SPEECH = SpeechConfig.model_fields  # a TtsAudio says what the speech section says by default


@dataclass(frozen=True)
class TtsAudio:
    """Text spoken by the platform's Azure TTS."""

    text: str
    language: str = _SPEECH["language"].default
    voice: str = _SPEECH["voice"].default
    gender: str = _SPEECH["gender"].default
    style: str = "NEURAL"
    engine: str = "AZURE"
    text_format: str = "SSML"

    def to_json(self) -> dict[str, str]:
        """Return the `audio` object of the request."""
        return {
            "type": "TTS",
            "style": self.style,
            "language": self.language,
            "voice": self.voice,
            "gender": self.gender,
            "engine": self.engine,
            "textFormat": self.text_format,
            "text": self.text,
        }


@dataclass(frozen=True)
class UrlAudio:
    """A .wav or .mp3 the platform downloads and plays."""

    location: str

    def to_json(self) -> dict[str, str]:
        """Return the `audio` object of the request."""
        return {"type": "URL", "location": self.location}


@dataclass(frozen=True)
class MediaAudio:
    """A file uploaded to the tenant's media library."""

    media_id: str

    def to_json(self) -> dict[str, str]:
        """Return the `audio` object of the request."""
        return {"type": "MEDIA", "mediaId": self.media_id}


Audio = TtsAudio | UrlAudio | MediaAudio


def audio_from_json(data: Mapping[str, Any]) -> Audio:
    """The audio whose `to_json()` is `data`: what a frozen request stored."""
    if data["type"] == "URL":
        return UrlAudio(data["location"])
    if data["type"] == "MEDIA":
        return MediaAudio(data["mediaId"])
    return TtsAudio(text=data["text"], language=data["language"], voice=data["voice"], gender=data["gender"],
                    style=data["style"], engine=data["engine"], text_format=data["textFormat"])


@dataclass(frozen=True)
class CallRequest:
    """One call attempt; retries of the same attempt reuse it unchanged (same ids, same body)."""

    caller_id: str
    dialed_number: str
    audio: Audio
    correlation_id: str
    callback_url: str
    callback_auth_id: str | None = None
    idempotency_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON-able data, from which from_dict() builds it again unchanged (a frozen attempt)."""
        return {"caller_id": self.caller_id, "dialed_number": self.dialed_number, "audio": self.audio.to_json(),
                "correlation_id": self.correlation_id, "callback_url": self.callback_url,
                "callback_auth_id": self.callback_auth_id, "idempotency_key": self.idempotency_key}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallRequest:
        """The request to_dict() stored."""
        return cls(caller_id=data["caller_id"], dialed_number=data["dialed_number"],
                   audio=audio_from_json(data["audio"]), correlation_id=data["correlation_id"],
                   callback_url=data["callback_url"], callback_auth_id=data["callback_auth_id"],
                   idempotency_key=data["idempotency_key"])

    @property
    def effective_idempotency_key(self) -> str:
        """Return the Idempotency-Key header value: the explicit key, else the correlationId."""
        return self.idempotency_key or self.correlation_id

    def message_body(self) -> dict[str, Any]:
        """Return the exact JSON body of POST /v1/voice/messages."""
        body: dict[str, Any] = {
            "callerId": self.caller_id,
            "dialedNumber": self.dialed_number,
            "audio": self.audio.to_json(),
            "correlationId": self.correlation_id,
            "callbackUrl": self.callback_url,
        }
        if self.callback_auth_id is not None:
            body["callbackUrlAuthId"] = self.callback_auth_id
        return body

    def call_body(self) -> dict[str, Any]:
        """Return the exact JSON body of POST /v1/voice/calls (the audio goes in callback responses)."""
        body: dict[str, Any] = {
            "callerId": self.caller_id,
            "dialedNumber": self.dialed_number,
            "recordCallSeconds": 0,
            "detectVoiceMail": True,
            "correlationId": self.correlation_id,
            "callbackUrl": self.callback_url,
        }
        if self.callback_auth_id is not None:
            body["callbackUrlAuthId"] = self.callback_auth_id
        return body


@dataclass(frozen=True)
class Accepted:
    """The provider took the call (HTTP 202)."""

    message_id: str
    correlation_id: str
    accepted_time: str | None


@dataclass(frozen=True)
class CallStatus:
    """The answer of GET /v1/voice/calls/{id}."""

    status: str
    duration_seconds: int | None
    answered_time: str | None
    raw: dict[str, Any]


class ProviderError(Exception):
    """A call could not be placed; `reason` is the metric label, `retryable` the retry decision."""

    reason = "unavailable"
    retryable = False
    # Whether the provider may have taken the request all the same (its answer was lost on the way): the
    # attempt's outcome is then unknown, and only the same request (same key, same body) may be sent again.
    maybe_taken = False

    def __init__(self, message: str = "", *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [self.reason]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"code {self.code}")
        head = " ".join(parts)
        return f"{head}: {self.message}" if self.message else head


class Rejected(ProviderError):
    """The provider refused this request for good (400 family); the next contact is tried."""

    reason = "rejected"
    retryable = False

    def __init__(self, code: str | None, *, status: int | None = 400, message: str = "") -> None:
        super().__init__(message, status=status, code=code)


class AuthFailed(ProviderError):
    """The service key or tenant setup is wrong (401/403); no call can succeed until config changes."""

    reason = "auth"
    retryable = False

    def __init__(self, code: str | None, *, status: int | None = 403, message: str = "") -> None:
        super().__init__(message, status=status, code=code)


class RateLimited(ProviderError):
    """The tenant's transactions-per-second limit was hit (429/7020)."""

    reason = "rate_limited"
    retryable = True

    def __init__(
        self,
        retry_after: float | None = None,
        *,
        status: int | None = 429,
        code: str | None = "7020",
        message: str = "",
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, code=code)

    def _describe(self) -> str:
        base = super()._describe()
        return base if self.retry_after is None else f"{base} (retry after {self.retry_after:g}s)"


class Unavailable(ProviderError):
    """The provider failed on its side (5xx, 7006, 7016); worth retrying."""

    reason = "unavailable"
    retryable = True
    maybe_taken = True  # a 5xx after the body was sent: a proxy's 502 or 504 says nothing of the platform behind

    def __init__(self, status: int | None, *, code: str | None = None, message: str = "") -> None:
        super().__init__(message, status=status, code=code)


class NetworkError(ProviderError):
    """The request did not complete: timeout, refused or reset connection, broken response."""

    reason = "network"
    retryable = True

    def __init__(self, message: str, *, timeout: bool = False, connected: bool = True) -> None:
        self.timeout = timeout
        # A connection never made (refused, no route, DNS) sent nothing; a timeout or a reset may have.
        self.maybe_taken = connected
        super().__init__(message)


class Provider(Protocol):
    """What the dispatcher needs from a voice provider."""

    async def place_call(self, request: CallRequest) -> Accepted:
        """Place a play-and-hang-up call; raise a ProviderError subclass on failure."""
        ...

    async def call_status(self, message_id: str) -> CallStatus | None:
        """Return the call's status, or None when the provider does not know the id."""
        ...


class InteractiveProvider(Provider, Protocol):
    """A provider that can also place programmable calls driven by callback responses."""

    async def place_interactive_call(self, request: CallRequest) -> Accepted:
        """Place a programmable call; raise a ProviderError subclass on failure."""
        ...


def classify_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: datetime | None = None,
    redact: Iterable[str] = (),
) -> Accepted:
    """Turn the answer to POST /messages or /calls into Accepted, or raise the typed ProviderError."""
    if 200 <= status < 300:
        data = _json_object(body)
        # /messages answers messageId; /calls answers sessionId (2021 SDKs); both name the call.
        message_id = (data.get("messageId") or data.get("sessionId")) if data else None
        if not isinstance(message_id, str) or not message_id:
            # The call may exist, but without its id it cannot be followed; the retry carries the
            # same Idempotency-Key, so a provider that enforces it answers with the original call.
            raise Unavailable(status, message="accepted response without a messageId")
        correlation_id = data.get("correlationId") if data else None
        accepted_time = data.get("acceptedTime") if data else None
        return Accepted(
            message_id=message_id,
            correlation_id=correlation_id if isinstance(correlation_id, str) else "",
            accepted_time=accepted_time if isinstance(accepted_time, str) else None,
        )
    raise error_for_response(status, body, headers, now=now, redact=redact)


def classify_status_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: datetime | None = None,
    redact: Iterable[str] = (),
) -> CallStatus | None:
    """Turn the answer to GET /calls/{id} into CallStatus, None (404), or raise the typed ProviderError."""
    if status == 404:
        return None
    if 200 <= status < 300:
        data = _json_object(body)
        raw_status = data.get("status") if data else None
        if not isinstance(raw_status, str) or not raw_status.strip():
            raise Unavailable(status, message="call status response without a status")
        duration = data.get("durationSeconds")
        answered = data.get("answeredTime")
        return CallStatus(
            status=normalize_status(raw_status),
            duration_seconds=_as_int(duration),
            answered_time=answered if isinstance(answered, str) and answered else None,
            raw=data,
        )
    raise error_for_response(status, body, headers, now=now, redact=redact)


def error_for_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: datetime | None = None,
    redact: Iterable[str] = (),
) -> ProviderError:
    """Return the typed error for a non-2xx response."""
    redact = list(redact)
    data = _json_object(body)
    raw_code = data.get("code") if data else None
    code = str(raw_code) if isinstance(raw_code, str | int) and not isinstance(raw_code, bool) else None
    raw_message = data.get("message") if data else None
    if isinstance(raw_message, str):
        message = raw_message
    elif data is None and body:
        # Proxies answer HTML or plain text; a short snippet is enough to recognise them.
        message = body.decode("utf-8", "replace")
    else:
        message = ""
    message = _clean(message, redact)

    if status == 429 or code in RATE_LIMIT_CODES:
        retry_after = parse_retry_after(_header(headers, "Retry-After"), now=now)
        return RateLimited(retry_after, status=status, code=code, message=message)
    if status in AUTH_STATUSES or code in AUTH_CODES:
        return AuthFailed(code, status=status, message=message)
    if status >= 500 or status in UNAVAILABLE_STATUSES or code in UNAVAILABLE_CODES:
        return Unavailable(status, code=code, message=message)
    return Rejected(code, status=status, message=message)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse Retry-After (delay-seconds or HTTP-date) into seconds from now; None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        from email.utils import parsedate_to_datetime  # rare path; email.utils costs ~25 ms at startup

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except (ValueError, OverflowError):
            return None
    return None


def _clean(message: str, redact: Iterable[str]) -> str:
    for secret in redact:
        if secret:
            message = message.replace(secret, "***")
    # One line per error: a provider's text stays verbatim (its double spaces included) otherwise.
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return message if len(message) <= _MAX_DETAIL else message[: _MAX_DETAIL - 1] + "…"


# Receipts, call events and the Voice API's answers are a few hundred bytes; anything near this is not
# the platform speaking, and is not read further.
MAX_BODY_BYTES = 64 * 1024


class _Stream(Protocol):
    async def readany(self) -> bytes: ...


async def read_at_most(stream: _Stream, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The whole body of an aiohttp stream, or None as soon as it grows past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
