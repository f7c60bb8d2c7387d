"""The simulator's records: scripted failures and callees, accepted calls, logged requests, and their ids."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import rules
from .rules import ApiError

# The version (4) and variant (RFC 4122) bits of a random UUID, as uuid.UUID(version=4) sets them.
UUID4_MASK = ~((0xF000 << 64) | (0xC000 << 48))
UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)

Sleep = Callable[[float], Awaitable[Any]]
# What a script may choose to fire when nobody presses a key before digitTimeout (the reference leaves it open).
NO_INPUT_EVENTS = ("COLLECTED_DIGITS", "PLAYED")


class Ids:
    """Random version-4 UUIDs as text, like str(uuid.uuid4())."""

    def __init__(self) -> None:
        self._random = random.Random()

    def __call__(self) -> str:
        """A new id."""
        # Every answer needs one or two: uuid4() costs a syscall and a dozen Python steps each, and a
        # simulator's ids need to be unique, not unpredictable.
        digits = f"{self._random.getrandbits(128) & UUID4_MASK | UUID4_BITS:032x}"
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@dataclass
class Failure:
    """Scripted provider failures: the next `count` requests (None: until cleared) answer `status`."""

    status: int
    count: int | None = None
    retry_after: float | None = None
    code: str | None = None

    def error(self) -> ApiError:
        """Return the error response, with the provider's code for the status."""
        if self.status == 429:
            code, retry_after = self.code or "7020", 1.0 if self.retry_after is None else self.retry_after
        else:
            code, retry_after = self.code or default_code(self.status), self.retry_after
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return ApiError(self.status, code, headers=headers)


@dataclass
class NumberScript:
    """How the simulated callee and platform behave for one dialed number."""

    outcome: str = "answer"
    digit: str = "1"
    fail: Failure | None = None
    delay: float = 0.0
    callbacks: bool = True
    no_input_event: str = "COLLECTED_DIGITS"
    # How many of the next requests for the number wait `delay` before their answer; None: all of them.
    delay_count: int | None = None
    # "press": the keys pressed, one for each prompt that collects input, in order (then none); empty: `digit` once.
    keys: tuple[str, ...] = ()

    def take_delay(self) -> float:
        """The wait before answering this request, counting it against `delay_count`."""
        delay = self.delay
        if self.delay_count is not None:
            self.delay_count -= 1
            if self.delay_count <= 0:
                self.delay, self.delay_count = 0.0, None
        return delay


@dataclass(slots=True)
class SimCall:
    """An accepted call and how far it got; its instants are clock readings, formatted only when shown."""

    message_id: str
    mode: str
    caller_id: str
    dialed_number: str
    correlation_id: str
    callback_url: str | None
    callback_auth_id: str | None
    outcome: str
    digit: str
    keys: tuple[str, ...]
    callbacks: bool
    no_input_event: str
    detect_voicemail: bool
    audio: dict[str, Any] | None
    fallbacks: tuple[str, ...]
    accepted_time: str
    status_at: float
    status: str = "QUEUED"
    offered_at: float | None = None
    answered_at: float | None = None
    duration_seconds: int | None = None
    done: bool = False
    events: list[str] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status_time(self) -> str:
        """When the status last changed, as the API formats times."""
        return rules.stamp_offset(self.status_at)

    @property
    def offered_time(self) -> str | None:
        """When the call was offered, as the API formats times; None before."""
        return None if self.offered_at is None else rules.stamp_offset(self.offered_at)

    @property
    def answered_time(self) -> str | None:
        """When the call was answered, as the API formats times; None before or never."""
        return None if self.answered_at is None else rules.stamp_offset(self.answered_at)

    def status_json(self) -> dict[str, Any]:
        """Return the body of GET /v1/voice/calls/{id} (reference §6)."""
        return {
            "durationSeconds": self.duration_seconds,
            "statusTime": self.status_time,
            "offeredTime": self.offered_time,
            "answeredTime": self.answered_time,
            "status": self.status,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the call as GET /_sim/calls shows it."""
        return {
            "message_id": self.message_id,
            "mode": self.mode,
            "caller_id": self.caller_id,
            "dialed_number": self.dialed_number,
            "correlation_id": self.correlation_id,
            "callback_url": self.callback_url,
            "callback_auth_id": self.callback_auth_id,
            "outcome": self.outcome,
            "digit": self.digit,
            "keys": list(self.keys),
            "callbacks": self.callbacks,
            "no_input_event": self.no_input_event,
            "detect_voicemail": self.detect_voicemail,
            "audio": self.audio,
            "fallbacks": self.fallbacks,
            "accepted_time": self.accepted_time,
            "status": self.status,
            "status_time": self.status_time,
            "offered_time": self.offered_time,
            "answered_time": self.answered_time,
            "duration_seconds": self.duration_seconds,
            "done": self.done,
            "events": self.events,
            "actions": self.actions,
        }


@dataclass(slots=True)
class LoggedRequest:
    """One provider API request as GET /_sim/requests shows it; formatted only when someone reads the log."""

    id: int
    at: float
    method: str
    path: str
    headers: dict[str, str]  # as received: the service key is masked when shown
    body: Any = None
    status: int | None = None
    code: str | None = None
    message_id: str | None = None
    raw: str | None = None  # the start of a body that is not JSON
    delay: float | None = None
    replayed: bool = False

    def to_json(self, headers: dict[str, str]) -> dict[str, Any]:
        """Return the log entry with the given (masked) headers; raw, delay, replayed only when set."""
        entry: dict[str, Any] = {
            "id": self.id,
            "time": rules.stamp_offset(self.at),
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": self.body,
            "status": self.status,
            "code": self.code,
            "messageId": self.message_id,
        }
        if self.raw is not None:
            entry["raw"] = self.raw
        if self.delay is not None:
            entry["delay"] = self.delay
        if self.replayed:
            entry["replayed"] = True
        return entry


Endpoint = Callable[[web.Request, LoggedRequest], Awaitable[web.Response]]


@dataclass(slots=True)
class Replay:
    """A 202 kept for its Idempotency-Key: the request's path and body, when, the answer and its call."""

    path: str
    body: dict[str, Any]  # the request's, compared only when its Idempotency-Key comes back
    at: float
    answer: dict[str, Any]
    message_id: str


def default_code(status: int) -> str:
    """The provider's error code for an HTTP status a script fails with, when the script names none."""
    if status in (401, 403):
        return "7001"
    if status >= 500:
        return "7006"
    if status == 400:
        return "7004"
    return "7016"
