"""RecordingProvider, the in-memory Provider the unit tests of other modules use."""

from __future__ import annotations

import asyncio

import pytest

from alert2voice.provider import (
    Accepted,
    CallRequest,
    CallStatus,
    NetworkError,
    RateLimited,
    Rejected,
    TtsAudio,
)
from alert2voice.provider.fake import RecordingProvider


def call(correlation_id: str = "p-1-1", **kwargs) -> CallRequest:
    return CallRequest(
        "+15550001234", "+14155550101", TtsAudio("<speak>x</speak>"), correlation_id, "http://cb", **kwargs
    )


async def test_records_and_accepts():
    provider = RecordingProvider()
    accepted = await provider.place_call(call("a"))
    second = await provider.place_interactive_call(call("b"))
    assert accepted == Accepted("msg-1", "a", None)
    assert second.message_id == "msg-2"
    assert [p.mode for p in provider.placed] == ["message", "interactive"]
    assert provider.requests == [call("a"), call("b")]


async def test_scripted_errors_then_success_and_the_retry_is_recorded():
    provider = RecordingProvider()
    provider.fail_next(RateLimited(2.0), times=2)
    provider.fail_next(NetworkError("boom"))
    for expected in (RateLimited, RateLimited, NetworkError):
        with pytest.raises(expected):
            await provider.place_call(call())
    assert (await provider.place_call(call())).message_id == "msg-1"
    assert len(provider.requests) == 4
    assert [p.error is None for p in provider.placed] == [False, False, False, True]


async def test_same_idempotency_key_is_the_same_call():
    provider = RecordingProvider()
    first = await provider.place_call(call("p-1-1"))
    again = await provider.place_call(call("p-1-1"))
    other = await provider.place_call(call("p-1-2"))
    assert first == again != other
    assert [a.message_id for a in provider.accepted] == ["msg-1", "msg-2"]


async def test_status_and_queries():
    provider = RecordingProvider()
    status = CallStatus("ANSWERED", 3, "t", {"status": "ANSWERED"})
    provider.set_status("msg-1", status)
    assert await provider.call_status("msg-1") == status
    assert await provider.call_status("unknown") is None
    assert provider.status_queries == ["msg-1", "unknown"]


async def test_gate_holds_calls_in_flight():
    provider = RecordingProvider()
    provider.gate = asyncio.Event()
    task = asyncio.create_task(provider.place_call(call()))
    await asyncio.sleep(0)
    assert not task.done() and provider.requests == []
    provider.gate.set()
    assert (await task).message_id == "msg-1"


async def test_reset():
    provider = RecordingProvider()
    provider.fail_next(Rejected("7102"))
    provider.reset()
    assert (await provider.place_call(call())).message_id == "msg-1"
    assert len(provider.placed) == 1
