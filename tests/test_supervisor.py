"""The dispatcher cannot die quietly: what escapes its loop is logged, the loop restarts, a dead one fails health."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import pytest

from alert2voice.provider.fake import RecordingProvider
from alert2voice.store.memory import MemoryStore
from alert2voice.supervisor import DOWN_AFTER, Supervisor
from alert2voice.web.keys import SUPERVISOR
from tests.harness import JSON_AUTH as AUTH
from tests.support import PAYMENTS, SleepingClock, alert, payload


class CrashingStore(MemoryStore):
    """take_due raises a plain bug (not StoreUnavailable) its first `crashes` times."""

    def __init__(self, crashes: int) -> None:
        super().__init__()
        self.crashes = crashes

    async def take_due(self, *args, **kwargs):
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("a bug in take_due")
        return await super().take_due(*args, **kwargs)


async def until(condition, what: str, steps: int = 2000) -> None:
    """Let the event loop run until the condition holds (bounded; no timer is waited for)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


async def serve(harness, store, clock, provider):
    harness.store, harness.clock, harness.provider = store, clock, provider
    return await harness.start()


async def test_a_crashing_loop_is_logged_restarted_and_places_the_call(harness, caplog):
    caplog.set_level(logging.ERROR, logger="alert2voice.supervisor")
    clock, provider = SleepingClock(), RecordingProvider()
    store = CrashingStore(crashes=2)
    client = await serve(harness, store, clock, provider)
    resp = await client.post("/alerts", data=json.dumps(payload(alert(PAYMENTS))), headers=AUTH)
    assert resp.status == 200
    await until(lambda: len(provider.requests) == 1, "the call placed after the restarts")
    assert clock.slept[:2] == [0.5, 1.0]  # backoff between restarts
    crashes = [r for r in caplog.records if "dispatcher crashed" in r.getMessage()]
    assert len(crashes) == 2
    assert "a bug in take_due" in caplog.text  # the traceback is in the log
    assert (await client.get("/-/healthy")).status == 200


async def test_a_loop_that_stays_down_fails_health_so_the_pod_is_restarted(harness):
    clock = SleepingClock()
    client = await serve(harness, CrashingStore(crashes=10**6), clock, RecordingProvider())
    await until(lambda: client.app[SUPERVISOR].crashes >= DOWN_AFTER, "the dispatcher down")
    resp = await client.get("/-/healthy")
    assert resp.status == 503
    assert "dispatcher crashed" in await resp.text()
    assert (await client.get("/-/ready")).status == 503


@pytest.mark.parametrize(("ran_for", "expected"), [(1.0, 2), (30.0, 1)])
async def test_a_crash_after_a_long_healthy_run_starts_a_new_count(ran_for, expected):
    clock = SleepingClock()
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first")
        if runs == 2:
            clock.advance(timedelta(seconds=ran_for))
            raise RuntimeError("second")

    supervisor = Supervisor("loop", run, monotonic=clock.monotonic, sleep=clock.sleep, stopping=lambda: False)
    await supervisor.run()
    assert runs == 3
    assert supervisor.crashes == expected
