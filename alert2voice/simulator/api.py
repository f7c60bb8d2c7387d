"""The provider API the simulator answers: POST /v1/voice/messages and /calls, GET /v1/voice/calls/{id}."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from . import rules
from .calls import CallFlows
from .models import Endpoint, Failure, Ids, LoggedRequest, NumberScript, Replay, SimCall, Sleep
from .rules import ApiError

# The SDKs say a key reused within an hour is refused as a duplicate (reference §1).
IDEMPOTENCY_WINDOW = 3600.0


class Simulator:
    """The simulator's state and the provider API; the calls it accepts live on in `flows` (calls.py), and the
    aiohttp handlers (server.py, admin.py) are thin wrappers around it."""

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
        self.clock = clock
        self.new_id = Ids()
        self.flows = CallFlows(callback_auth=callback_auth, hub_secret=hub_secret, callback_delay=callback_delay,
                               step_delay=step_delay, sleep=sleep, clock=clock,
                               callback_retry_delays=callback_retry_delays, new_id=self.new_id)
        self.sleep = sleep
        self._clear()

    def _clear(self) -> None:
        self.scripts: dict[str, NumberScript] = {}
        self.outage: Failure | None = None
        self.requests: list[LoggedRequest] = []
        self.calls: dict[str, SimCall] = {}
        self.flows.callbacks = []
        self._replays: dict[str, Replay] = {}

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        """Every callback POSTed (and each retry), as GET /_sim/callbacks shows them."""
        return self.flows.callbacks

    async def reset(self) -> None:
        """Cancel pending callbacks and forget every script, request, call and callback."""
        await self.cancel_tasks()
        self._clear()

    async def cancel_tasks(self) -> None:
        """Cancel the background call flows and wait for them to end."""
        await self.flows.cancel_tasks()

    async def idle(self) -> None:
        """Wait until every background call flow and callback retry has ended (for in-process tests)."""
        await self.flows.idle()

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
        else:
            # The 2021 SDKs saw this shape from /calls (reference §3).
            answer = {"sessionId": call.message_id, "status": "QUEUED"}
        self.flows.start(call)
        key = request.headers.get("Idempotency-Key")
        if key:
            self._replays[key] = Replay(request.path, body, now, answer, call.message_id)
        return web.json_response(answer, status=202, headers=headers)

    def _replay(self, request: web.Request, body: dict[str, Any]) -> Replay | None:
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


SIMULATOR = web.AppKey("simulator", Simulator)


def _canonical(path: str, body: dict[str, Any]) -> str:
    """Return the request's path and body as canonical JSON: equal for the same body in any key order."""
    return json.dumps([path, body], sort_keys=True, separators=(",", ":"))
