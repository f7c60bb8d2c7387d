"""The life of an accepted call: its events in order, each POSTed to the app as the platform does, retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import aiohttp

from . import rules
from .models import Ids, SimCall, Sleep

log = logging.getLogger(__name__)

CALLBACK_TIMEOUT = 10.0
# Reference §4: three retries; the docs disagree between "every 60 s" and "30, 60, 120 s".
CALLBACK_RETRY_DELAYS = (30.0, 60.0, 120.0)
MAX_INTERACTIVE_STEPS = 10


class CallFlows:
    """Runs accepted calls in the background: a message call's delivery receipts, a programmable call's events and
    the actions the app answers with; every callback signed and authenticated as the tenant configured, receipts
    retried, each recorded for GET /_sim/callbacks."""

    def __init__(
        self,
        *,
        callback_auth: Mapping[str, Mapping[str, str]],
        hub_secret: str | None,
        callback_delay: float,
        step_delay: float,
        sleep: Sleep,
        clock: Callable[[], float],
        callback_retry_delays: Sequence[float],
        new_id: Ids,
    ) -> None:
        self.callback_auth = {k: dict(v) for k, v in callback_auth.items()}
        self.hub_secret = hub_secret
        self.callback_delay = callback_delay
        self.step_delay = step_delay
        self.sleep = sleep
        self.clock = clock
        self.callback_retry_delays = tuple(callback_retry_delays)
        self.new_id = new_id
        # The app's client session, open while the simulator serves (create_simulator_app's cleanup context).
        self.session: aiohttp.ClientSession | None = None
        self.callbacks: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, call: SimCall) -> None:
        """Let an accepted call happen: a message is played, a programmable call driven by the app's answers."""
        if call.mode == "message":
            self._start_message_call(call)
        else:
            self.spawn(self._run_interactive_call(call))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a call flow in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    # --- callback delivery ----------------------------------------------------------------------------

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
