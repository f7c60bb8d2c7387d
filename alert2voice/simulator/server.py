"""A Webex Connect Voice API v1 simulator: the provider's contract on loopback, scriptable per number."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import hmac
import json
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from . import rules
from .rules import ApiError

log = logging.getLogger(__name__)

DEFAULT_SERVICE_KEY = "simulator-service-key"
MAX_BODY_BYTES = 64 * 1024
# The SDKs say a key reused within an hour is refused as a duplicate (reference §1).
IDEMPOTENCY_WINDOW = 3600.0
CALLBACK_TIMEOUT = 10.0
# Reference §4: three retries; the docs disagree between "every 60 s" and "30, 60, 120 s".
CALLBACK_RETRY_DELAYS = (30.0, 60.0, 120.0)
MAX_INTERACTIVE_STEPS = 10
NO_INPUT_EVENTS = ("COLLECTED_DIGITS", "PLAYED")
# glibc's mallopt(3) parameters, and asyncio's socket reads: a fresh 256 KiB buffer each, shrunk to what arrived.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
SOCKET_READ_BYTES = 256 * 1024
# The version (4) and variant (RFC 4122) bits of a random UUID, as uuid.UUID(version=4) sets them.
UUID4_MASK = ~((0xF000 << 64) | (0xC000 << 48))
UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)

Sleep = Callable[[float], Awaitable[Any]]


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
            code, retry_after = self.code or _default_code(self.status), self.retry_after
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
class _Replay:
    path: str
    body: dict[str, Any]  # the request's, compared only when its Idempotency-Key comes back
    at: float
    answer: dict[str, Any]
    message_id: str


class Simulator:
    """The simulator's state and behaviour; the aiohttp handlers are thin wrappers around it."""

    def __init__(
        self,
        *,
        service_key: str,
        callback_auth: Mapping[str, Mapping[str, str]],
        hub_secret: str | None,
        callback_delay: float,
        step_delay: float,
        sleep: Sleep,
        clock: Callable[[], float],
        callback_retry_delays: Sequence[float],
    ) -> None:
        self.service_key = service_key
        self._service_key_bytes = service_key.encode()
        self.callback_auth = {k: dict(v) for k, v in callback_auth.items()}
        self.hub_secret = hub_secret
        self.callback_delay = callback_delay
        self.step_delay = step_delay
        self.sleep = sleep
        self.clock = clock
        self.callback_retry_delays = tuple(callback_retry_delays)
        self.session: aiohttp.ClientSession | None = None
        self._random = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._clear()

    def _clear(self) -> None:
        self.scripts: dict[str, NumberScript] = {}
        self.outage: Failure | None = None
        self.requests: list[LoggedRequest] = []
        self.calls: dict[str, SimCall] = {}
        self.callbacks: list[dict[str, Any]] = []
        self._replays: dict[str, _Replay] = {}

    async def reset(self) -> None:
        """Cancel pending callbacks and forget every script, request, call and callback."""
        await self.cancel_tasks()
        self._clear()

    async def cancel_tasks(self) -> None:
        """Cancel the background call flows and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until every background call flow and callback retry has ended (for in-process tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a call flow in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def new_id(self) -> str:
        """Return a random version-4 UUID as text, like str(uuid.uuid4())."""
        # Every answer needs one or two: uuid4() costs a syscall and a dozen Python steps each, and a
        # simulator's ids need to be unique, not unpredictable.
        digits = f"{self._random.getrandbits(128) & UUID4_MASK | UUID4_BITS:032x}"
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

    # --- the provider API -------------------------------------------------------------------------

    async def handle(self, request: web.Request, inner: Endpoint) -> web.Response:
        """Log the request, apply outage and authentication, run the endpoint, log the answer."""
        # A plain dict of strings is never tracked by the garbage collector, unlike the request's multidict.
        headers = dict(request.headers)
        entry = LoggedRequest(len(self.requests) + 1, self.clock(), request.method, request.path, headers)
        self.requests.append(entry)
        try:
            self._check_outage()
            self._authenticate(request)
            response = await inner(request, entry)
        except ApiError as err:
            entry.code = err.code
            response = err.response()
        entry.status = response.status
        if entry.delay:
            await self.sleep(entry.delay)
        return response

    def request_log(self) -> list[dict[str, Any]]:
        """Return the body of GET /_sim/requests, the service key masked in every entry."""
        return [entry.to_json(self._mask_request_headers(entry.headers)) for entry in self.requests]

    async def post_messages(self, request: web.Request, entry: LoggedRequest) -> web.Response:
        """POST /v1/voice/messages: validate, accept, then send the delivery receipts."""
        body = await self._read_json(request, entry)
        script = self._script_for_request(body, entry)
        audio, fallbacks = rules.validate_message(body)
        return self._accept(request, entry, body, "message", script, audio, fallbacks)

    async def post_calls(self, request: web.Request, entry: LoggedRequest) -> web.Response:
        """POST /v1/voice/calls: validate, accept, then drive the call through callback responses."""
        body = await self._read_json(request, entry)
        script = self._script_for_request(body, entry)
        rules.validate_call(body)
        return self._accept(request, entry, body, "interactive", script, None, ())

    async def get_call(self, request: web.Request, entry: LoggedRequest) -> web.Response:
        """GET /v1/voice/calls/{id}: the status shape of reference §6, or 404 with an empty body."""
        call = self.calls.get(request.match_info["id"])
        if call is None:
            return web.Response(status=404)
        entry.message_id = call.message_id
        entry.delay = self._script(call.dialed_number).take_delay()
        return web.json_response(call.status_json())

    def _check_outage(self) -> None:
        if self.outage is not None:
            failure = self.outage
            if failure.count is not None:
                failure.count -= 1
                if failure.count <= 0:
                    self.outage = None
            raise failure.error()

    def _authenticate(self, request: web.Request) -> None:
        key = request.headers.get("Authorization")
        if not key:
            raise ApiError(403, "7002")
        if not hmac.compare_digest(key.encode(), self._service_key_bytes):
            raise ApiError(403, "7001")

    async def _read_json(self, request: web.Request, entry: LoggedRequest) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise ApiError(400, "7126")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(400, "7022") from None
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            entry.raw = raw[:200].decode("utf-8", "replace")
            raise ApiError(400, "7000") from None
        entry.body = body
        if not isinstance(body, dict):
            raise ApiError(400, "7000")
        return body

    def _script_for_request(self, body: dict[str, Any], entry: LoggedRequest) -> NumberScript:
        number = body.get("dialedNumber")
        script = self._script(number if isinstance(number, str) else "")
        entry.delay = script.take_delay()
        if script.fail is not None:
            failure = script.fail
            failure.count = (failure.count or 1) - 1
            if failure.count <= 0:
                script.fail = None
            raise failure.error()
        return script

    def _script(self, number: str) -> NumberScript:
        return self.scripts.get(number) or NumberScript()

    def _accept(
        self,
        request: web.Request,
        entry: LoggedRequest,
        body: dict[str, Any],
        mode: str,
        script: NumberScript,
        audio: dict[str, Any] | None,
        fallbacks: tuple[str, ...],
    ) -> web.Response:
        headers = {"Request-Id": self.new_id()}
        replay = self._replay(request, body)
        if replay is not None:
            entry.message_id, entry.replayed = replay.message_id, True
            return web.json_response(replay.answer, status=202, headers=headers)
        now = self.clock()
        call = SimCall(
            message_id=self.new_id(),
            mode=mode,
            caller_id=body["callerId"],
            dialed_number=body["dialedNumber"],
            correlation_id=body.get("correlationId") or "",
            callback_url=body.get("callbackUrl") or None,
            callback_auth_id=body.get("callbackUrlAuthId"),
            outcome=script.outcome,
            digit=script.digit,
            keys=script.keys or (script.digit,),
            callbacks=script.callbacks,
            no_input_event=script.no_input_event,
            detect_voicemail=body.get("detectVoiceMail") is True,
            audio=audio,
            fallbacks=fallbacks,
            accepted_time=rules.stamp_offset(now),
            status_at=now,
        )
        self.calls[call.message_id] = call
        entry.message_id = call.message_id
        if mode == "message":
            answer = {
                "acceptedTime": call.accepted_time,
                "messageId": call.message_id,
                "correlationId": call.correlation_id,
            }
            self._start_message_call(call)
        else:
            # The 2021 SDKs saw this shape from /calls (reference §3).
            answer = {"sessionId": call.message_id, "status": "QUEUED"}
            self.spawn(self._run_interactive_call(call))
        key = request.headers.get("Idempotency-Key")
        if key:
            self._replays[key] = _Replay(request.path, body, now, answer, call.message_id)
        return web.json_response(answer, status=202, headers=headers)

    def _replay(self, request: web.Request, body: dict[str, Any]) -> _Replay | None:
        # Simulator choice (enforcement is unconfirmed): the same key with the same body within the
        # window replays the original 202 without a second call; with another body it is a 7004.
        key = request.headers.get("Idempotency-Key")
        if not key:
            return None
        replay = self._replays.get(key)
        if replay is None or self.clock() - replay.at >= IDEMPOTENCY_WINDOW:
            return None
        if _canonical(replay.path, replay.body) != _canonical(request.path, body):
            raise rules.invalid("Idempotency-Key")
        return replay

    def _mask_request_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        masked = dict(headers)
        for name in list(masked):
            if name.lower() == "authorization":
                value = masked[name]
                if hmac.compare_digest(value.encode(), self._service_key_bytes):
                    masked[name] = "<service-key>"
                else:
                    scheme, sep, _ = value.partition(" ")
                    masked[name] = f"{scheme} ***" if sep else "***"
        return masked

    # --- call flows ---------------------------------------------------------------------------------

    def _advance(self, call: SimCall, event: str, at: float) -> None:
        call.events.append(event)
        status = rules.STATUS_AFTER.get(event)
        if event == "OFFERED":
            call.offered_at = at
        elif event == "ANSWERED":
            call.answered_at = at
        elif event in ("DROPPED", "Released", "DISCONNECTED") and call.answered_at is not None:
            call.duration_seconds = max(0, round(at - call.answered_at))
        if status is not None and status != call.status:
            call.status, call.status_at = status, at

    def _sends_callbacks(self, call: SimCall) -> bool:
        return call.callbacks and call.callback_url is not None

    async def _pause(self, seconds: float) -> None:
        # A zero delay needs no trip through the event loop: the flow's next step is due now.
        if seconds > 0:
            await self.sleep(seconds)

    def _start_message_call(self, call: SimCall) -> None:
        if self._sends_callbacks(call) or self.callback_delay > 0 or self.step_delay > 0:
            self.spawn(self._run_message_call(call))
            return
        # Nothing to wait for and no one to tell: the whole call happens now, without a task.
        at = self.clock()
        for group in rules.SEQUENCES[call.outcome]:
            for event in group:
                self._advance(call, event[0], at)
        call.done = True

    async def _run_message_call(self, call: SimCall) -> None:
        await self._pause(self.callback_delay)
        for i, group in enumerate(rules.SEQUENCES[call.outcome]):
            if i:
                await self._pause(self.step_delay)
            at = self.clock()
            for event in group:
                self._advance(call, event[0], at)
                if self._sends_callbacks(call):
                    payload = rules.receipt(
                        call.message_id, call.dialed_number, call.correlation_id, event, rules.stamp_z(at)
                    )
                    await self._deliver(call, event[0], payload, retry=True)
        call.done = True

    async def _run_interactive_call(self, call: SimCall) -> None:
        await self._pause(self.callback_delay)
        self._advance(call, "OFFERED", self.clock())
        await self._pause(self.step_delay)
        if call.outcome in rules.NOT_ANSWERED:
            dropped_by, code, text = rules.NOT_ANSWERED[call.outcome]
            self._advance(call, "REJECTED", self.clock())
            if call.outcome == "failed":
                # The network never reached the callee: nothing was rejected, the call just dropped.
                call.status = "DROPPED"
            await self._end(call, dropped_by, {"code": code, "message": text}, status="FAILURE")
            return
        self._advance(call, "ANSWERED", self.clock())
        if not self._sends_callbacks(call):
            await self._end(call, "CALLEE", None)
            return
        action = await self._event(
            call,
            {
                "event": "ANSWERED",
                "callerId": call.caller_id,
                "dialedNumber": call.dialed_number,
                "offeredTime": call.offered_time,
                "answeredTime": call.answered_time,
            },
        )
        if action is not None and call.outcome == "voicemail" and call.detect_voicemail:
            await self._pause(self.step_delay)
            vm_action = await self._event(
                call,
                {
                    "event": "VMDETECTED",
                    "callerId": call.caller_id,
                    "dialedNumber": call.dialed_number,
                    "correlationId": call.correlation_id,
                    "transactionId": self.new_id(),
                },
                optional=True,
            )
            action = vm_action or action
        pressed = 0
        for _ in range(MAX_INTERACTIVE_STEPS):
            if action is None:
                await self._end(call, "APPLICATION", {"code": "3000", "message": "Invalid action"}, "FAILURE")
                return
            if action["action"] in ("HANGUP", "REJECT"):
                await self._end(call, "APPLICATION", None)
                return
            if action["action"] != "PLAY":
                call.actions[-1]["error"] = f"action {action['action']} is not simulated"
                await self._end(call, "APPLICATION", {"code": "3000", "message": "Unsupported action"}, "FAILURE")
                return
            await self._pause(self.step_delay)
            if call.outcome == "hangup_playing":
                await self._end(call, "CALLEE", {"code": "2008", "message": "Call Dropped by Network/End user"})
                return
            event = self._after_play(call, action, pressed)
            pressed += event.get("numOfDigits", 0) > 0
            action = await self._event(call, event)
        await self._end(call, "APPLICATION", {"code": "3000", "message": "Too many steps"}, "FAILURE")

    def _after_play(self, call: SimCall, action: dict[str, Any], pressed: int) -> dict[str, Any]:
        transaction = {"transactionId": self.new_id()}
        collect = rules.collect_spec(action)
        if collect is None:
            return {"event": "PLAYED", "status": "SUCCESS", "playedDuration": 1, **transaction}
        if call.outcome == "press" and pressed < len(call.keys):
            key = call.keys[pressed]
            return {
                "event": "COLLECTED_DIGITS",
                "status": "SUCCESS",
                "numOfDigits": len(key),
                "digitsReceived": key,
                "terminationDigit": collect.get("terminationDigit", "#"),
                "playedDuration": 1,
                **transaction,
            }
        # What fires when nobody presses before digitTimeout is unconfirmed; scriptable per number.
        if call.no_input_event == "PLAYED":
            return {"event": "PLAYED", "status": "SUCCESS", "playedDuration": 1, **transaction}
        return {
            "event": "COLLECTED_DIGITS",
            "status": "SUCCESS",
            "numOfDigits": 0,
            "digitsReceived": "",
            "terminationDigit": collect.get("terminationDigit", "#"),
            "playedDuration": 1,
            **transaction,
        }

    async def _end(self, call: SimCall, dropped_by: str, error: dict[str, str] | None, status: str = "SUCCESS") -> None:
        self._advance(call, "DROPPED", self.clock())
        if self._sends_callbacks(call):
            event: dict[str, Any] = {"event": "DROPPED", "status": status, "droppedBy": dropped_by}
            if error is not None:
                event["error"] = error
            await self._send_event(call, event)
        call.done = True

    async def _event(self, call: SimCall, event: dict[str, Any], *, optional: bool = False) -> dict[str, Any] | None:
        """Send a programmable-call event; return the app's action, None when it is missing or invalid."""
        status, raw = await self._send_event(call, event)
        record: dict[str, Any] = {"event": event["event"], "action": None, "error": None}
        call.actions.append(record)
        if status is None:
            record["error"] = "callback not delivered"
            return None
        if optional and status == 200 and raw.strip() in (b"", b"{}"):
            # An empty answer to VMDETECTED lets the current action go on.
            return None
        try:
            record["action"] = rules.validate_action(status, raw)
        except ValueError as exc:
            record["error"] = str(exc)
            return None
        return record["action"]

    async def _send_event(self, call: SimCall, event: dict[str, Any]) -> tuple[int | None, bytes]:
        payload = {**event, "eventTime": rules.stamp_z(self.clock()), "sessionId": call.message_id}
        return await self._deliver(call, event["event"], payload, retry=False)

    # --- callbacks ----------------------------------------------------------------------------------

    async def _deliver(
        self, call: SimCall, event: str, payload: dict[str, Any], *, retry: bool
    ) -> tuple[int | None, bytes]:
        """POST one callback as the platform does (auth header, signature); retry receipts that fail."""
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        auth = self.callback_auth.get(call.callback_auth_id or "", {})
        headers.update(auth)
        if self.hub_secret is not None:
            digest = hmac.new(self.hub_secret.encode(), body, hashlib.sha256).hexdigest()
            headers["x-hub-signature"] = f"sha256={digest}"
        status, raw = await self._post_callback(call, event, payload, body, headers, attempt=1)
        # Reference §4: retried three times after a failure, never after a 4xx.
        if retry and (status is None or status >= 500):
            self.spawn(self._redeliver(call, event, payload, body, headers))
        return status, raw

    async def _redeliver(
        self, call: SimCall, event: str, payload: dict[str, Any], body: bytes, headers: dict[str, str]
    ) -> None:
        for attempt, delay in enumerate(self.callback_retry_delays, start=2):
            await self.sleep(delay)
            status, _ = await self._post_callback(call, event, payload, body, headers, attempt=attempt)
            if status is not None and status < 500:
                return

    async def _post_callback(
        self,
        call: SimCall,
        event: str,
        payload: dict[str, Any],
        body: bytes,
        headers: dict[str, str],
        *,
        attempt: int,
    ) -> tuple[int | None, bytes]:
        assert self.session is not None and call.callback_url is not None
        secret_headers = {name.lower() for name in self.callback_auth.get(call.callback_auth_id or "", {})}
        record: dict[str, Any] = {
            "id": len(self.callbacks) + 1,
            "time": rules.stamp_offset(self.clock()),
            "messageId": call.message_id,
            "url": call.callback_url,
            "event": event,
            "attempt": attempt,
            "headers": {k: "***" if k.lower() in secret_headers else v for k, v in headers.items()},
            "body": payload,
            "status": None,
            "error": None,
        }
        self.callbacks.append(record)
        try:
            async with self.session.post(
                call.callback_url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT),
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                record["status"] = resp.status
                return resp.status, raw
        except (aiohttp.ClientError, TimeoutError) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.info("simulator callback %s to %s failed: %s", event, call.callback_url, record["error"])
            return None, b""


def _canonical(path: str, body: dict[str, Any]) -> str:
    """Return the request's path and body as canonical JSON: equal for the same body in any key order."""
    return json.dumps([path, body], sort_keys=True, separators=(",", ":"))


def _default_code(status: int) -> str:
    if status in (401, 403):
        return "7001"
    if status >= 500:
        return "7006"
    if status == 400:
        return "7004"
    return "7016"


# --- the admin API ------------------------------------------------------------------------------------

# Loopback test tool, so no auth. Routes:
#   PUT    /_sim/numbers/{number}  {"outcome", "digit", "keys", "fail": {"status", "count", "retry_after", "code"},
#                                   "delay", "delay_count", "callbacks", "no_input_event"}  (replaces that
#                                   number's script; "delay_count": only the next N requests wait "delay";
#                                   "keys": ["*", "1"] pressed one per prompt, for "press")
#   GET    /_sim/numbers           DELETE /_sim/numbers/{number}
#   PUT    /_sim/fail              {"status", "count"?, "retry_after"?, "code"?}: every number, until DELETE
#   GET    /_sim/fail              DELETE /_sim/fail
#   GET    /_sim/requests | /_sim/calls | /_sim/callbacks      POST /_sim/reset
SIMULATOR = web.AppKey("simulator", Simulator)


def _admin_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _admin_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}', content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body is not a JSON object"}', content_type="application/json")
    return body


def parse_failure(data: object, *, with_count_default: int | None) -> Failure:
    """Parse a {"status", "count", "retry_after", "code"} failure script; raise ValueError when invalid."""
    if not isinstance(data, dict):
        raise ValueError("fail must be an object")
    unknown = set(data) - {"status", "count", "retry_after", "code"}
    if unknown:
        raise ValueError(f"unknown fail keys: {', '.join(sorted(unknown))}")
    status = data.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise ValueError("fail.status must be an HTTP error status (400-599)")
    count = data.get("count", with_count_default)
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ValueError("fail.count must be a positive integer")
    retry_after = data.get("retry_after")
    if retry_after is not None and (not _is_number(retry_after) or retry_after < 0):
        raise ValueError("fail.retry_after must be a non-negative number of seconds")
    code = data.get("code")
    if code is not None and not isinstance(code, str):
        raise ValueError("fail.code must be a string")
    return Failure(status, count, None if retry_after is None else float(retry_after), code)


def parse_script(data: dict[str, Any]) -> NumberScript:
    """Parse a PUT /_sim/numbers/{number} body; raise ValueError when invalid."""
    unknown = set(data) - {"outcome", "digit", "keys", "fail", "delay", "delay_count", "callbacks", "no_input_event"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    script = NumberScript()
    outcome = data.get("outcome", script.outcome)
    if outcome not in rules.OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(rules.OUTCOMES)}")
    digit = data.get("digit", script.digit)
    if not _is_keys(digit):
        raise ValueError("digit must be a string of 0-9, * or #")
    keys = data.get("keys", [])
    if not isinstance(keys, list) or not all(_is_keys(k) for k in keys):
        raise ValueError("keys must be a list of strings of 0-9, * or # (one for each prompt)")
    delay = data.get("delay", 0.0)
    if not _is_number(delay) or delay < 0:
        raise ValueError("delay must be a non-negative number of seconds")
    delay_count = data.get("delay_count")
    if delay_count is not None and (not isinstance(delay_count, int) or isinstance(delay_count, bool)
                                    or delay_count < 1):
        raise ValueError("delay_count must be a positive integer")
    callbacks = data.get("callbacks", True)
    if not isinstance(callbacks, bool):
        raise ValueError("callbacks must be true or false")
    no_input = data.get("no_input_event", script.no_input_event)
    if no_input not in NO_INPUT_EVENTS:
        raise ValueError(f"no_input_event must be one of {', '.join(NO_INPUT_EVENTS)}")
    fail = parse_failure(data["fail"], with_count_default=1) if data.get("fail") is not None else None
    return NumberScript(outcome, digit, fail, float(delay), callbacks, no_input, delay_count, tuple(keys))


def _is_keys(value: object) -> bool:
    """Whether `value` is what a callee may press: a non-empty string of 0-9, * and #."""
    return isinstance(value, str) and bool(value) and all(c in "0123456789*#" for c in value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def _put_number(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        script = parse_script(await _admin_json(request))
    except ValueError as exc:
        return _admin_error(str(exc))
    sim.scripts[request.match_info["number"]] = script
    return web.json_response(asdict(script))


async def _delete_number(request: web.Request) -> web.Response:
    request.app[SIMULATOR].scripts.pop(request.match_info["number"], None)
    return web.Response(status=204)


async def _get_numbers(request: web.Request) -> web.Response:
    return web.json_response({n: asdict(s) for n, s in request.app[SIMULATOR].scripts.items()})


async def _put_fail(request: web.Request) -> web.Response:
    try:
        failure = parse_failure(await _admin_json(request), with_count_default=None)
    except ValueError as exc:
        return _admin_error(str(exc))
    request.app[SIMULATOR].outage = failure
    return web.json_response(asdict(failure))


async def _get_fail(request: web.Request) -> web.Response:
    outage = request.app[SIMULATOR].outage
    return web.json_response(asdict(outage) if outage is not None else None)


async def _delete_fail(request: web.Request) -> web.Response:
    request.app[SIMULATOR].outage = None
    return web.Response(status=204)


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].request_log())


async def _get_calls(request: web.Request) -> web.Response:
    calls = request.app[SIMULATOR].calls.values()
    return web.json_response([c.to_json() for c in calls])


async def _get_callbacks(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].callbacks)


async def _reset(request: web.Request) -> web.Response:
    await request.app[SIMULATOR].reset()
    return web.Response(status=204)


# --- assembly -------------------------------------------------------------------------------------------


def create_simulator_app(
    *,
    service_key: str = DEFAULT_SERVICE_KEY,
    callback_auth: Mapping[str, Mapping[str, str]] | None = None,
    hub_secret: str | None = None,
    callback_delay: float = 0.05,
    step_delay: float = 0.0,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.time,
    callback_retry_delays: Sequence[float] = CALLBACK_RETRY_DELAYS,
) -> web.Application:
    """Return the simulator as an aiohttp application."""
    sim = Simulator(
        service_key=service_key,
        callback_auth=callback_auth or {},
        hub_secret=hub_secret,
        callback_delay=callback_delay,
        step_delay=step_delay,
        sleep=sleep,
        clock=clock,
        callback_retry_delays=callback_retry_delays,
    )
    # Bodies over the limit must get the provider's 7022, so aiohttp's own limit sits exactly there.
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SIMULATOR] = sim

    async def callbacks_session(app: web.Application) -> Any:
        async with aiohttp.ClientSession() as session:
            sim.session = session
            yield
            await sim.cancel_tasks()
            sim.session = None

    app.cleanup_ctx.append(callbacks_session)

    def provider(inner: Endpoint) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return await sim.handle(request, inner)

        return handler

    app.router.add_post("/v1/voice/messages", provider(sim.post_messages))
    app.router.add_post("/v1/voice/calls", provider(sim.post_calls))
    app.router.add_get("/v1/voice/calls/{id}", provider(sim.get_call))
    app.router.add_get("/_sim/numbers", _get_numbers)
    app.router.add_put("/_sim/numbers/{number}", _put_number)
    app.router.add_delete("/_sim/numbers/{number}", _delete_number)
    app.router.add_get("/_sim/fail", _get_fail)
    app.router.add_put("/_sim/fail", _put_fail)
    app.router.add_delete("/_sim/fail", _delete_fail)
    app.router.add_get("/_sim/requests", _get_requests)
    app.router.add_get("/_sim/calls", _get_calls)
    app.router.add_get("/_sim/callbacks", _get_callbacks)
    app.router.add_post("/_sim/reset", _reset)
    return app


async def run_simulator(
    host: str, port: int, *, on_listening: Callable[[str], None] | None = None, **kwargs: Any
) -> None:
    """Serve the simulator on host:port until cancelled; log (and pass to on_listening) its base URL."""
    app = create_simulator_app(**kwargs)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        _settle_process()
        bound_host, bound_port = runner.addresses[0][:2]
        url = f"http://{bound_host}:{bound_port}" if ":" not in bound_host else f"http://[{bound_host}]:{bound_port}"
        log.info(
            "Webex Connect simulator listening on %s (service key %s)",
            url,
            _mask_key(app[SIMULATOR].service_key),
        )
        if on_listening is not None:
            on_listening(url)
        await asyncio.Event().wait()
    finally:
        gc.unfreeze()
        await runner.cleanup()


def _settle_process() -> None:
    """Ready the process for a long run of small requests, once everything is loaded."""
    # Everything loaded so far lives as long as the process: keep it out of the collector's generations
    # (as `alert2voice serve` does), or every collection that the growing request log causes walks it again.
    gc.freeze()
    # glibc gives a block as large as asyncio's socket reads its own mmap whenever the heap's top lacks
    # room, so under load most requests mapped, shrank and unmapped their read buffer (one mmap, mremap
    # and munmap each in strace). Serve such blocks from the heap, and let its top stay that large
    # instead of being trimmed after every request.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # a libc without mallopt: nothing to tune
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 4 * SOCKET_READ_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, 8 * SOCKET_READ_BYTES)


def _mask_key(key: str) -> str:
    # The default key is public test data and worth showing; a configured one is a secret.
    return key if key == DEFAULT_SERVICE_KEY else "<configured>"
