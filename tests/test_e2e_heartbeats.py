"""End to end: a real Alertmanager's Watchdog keeps a heartbeat alive; Alertmanager stopped, a call; back, resolved.

The stack (the simulator and `alert2voice serve`) runs with one heartbeat matching `alertname="Watchdog"`,
timeout 8s. The test's Alertmanager resends the firing Watchdog every ~4 s (repeat_interval 3s, checked at
each 2s group_interval), well inside it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e_support import (
    Stack,
    alertmanagers,
    dumps,
    eventually,
    in_ci,
    one_page,
    require_alertmanager,
    running_stack,
)

pytestmark = pytest.mark.e2e

STORE_BACKEND = os.environ.get("A2V_E2E_STORE", "sqlite")
NAME = "alertmanager-watchdog"
HEARTBEAT = {"name": NAME, "matchers": ['alertname="Watchdog"'], "timeout": "8s",
             "escalation": [{"call": "alice"}], "send_resolved": True}
WATCHDOG = {"alertname": "Watchdog", "severity": "none"}  # as kube-prometheus ships it


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not in_ci():
        require_alertmanager()
    with running_stack(request, tmp_path_factory.mktemp("e2e-heartbeats"), store=STORE_BACKEND,
                       heartbeats=[HEARTBEAT]) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def beats(stack: Stack, http: aiohttp.ClientSession) -> tuple[float, float]:
    """(heartbeat_up, heartbeat_last_seen_timestamp_seconds) as /metrics shows them now."""
    samples = await stack.metrics(http)
    labels = frozenset({("heartbeat", NAME)})
    return (samples.values.get(("alert2voice_heartbeat_up", labels), -1.0),
            samples.values.get(("alert2voice_heartbeat_last_seen_timestamp_seconds", labels), -1.0))


async def calls(stack: Stack, http: aiohttp.ClientSession, page: dict[str, Any], *, resolved: bool = False) -> list:
    """The simulator's calls of this page: its page calls, or its "resolved" call (attempt `r<n>`)."""
    prefix = f"a2v-{page['key'][:24]}-"
    return [c for c in await stack.sim_calls(http) if c["correlation_id"].startswith(prefix)
            and c["correlation_id"].rsplit("-", 1)[1].startswith("r") is resolved]


async def test_watchdog_stops_a_call_watchdog_back_the_page_resolved(stack: Stack, http: aiohttp.ClientSession,
                                                                     tmp_path: Path) -> None:
    stack.reset_simulator()
    with alertmanagers(tmp_path, stack) as start:
        am = start("am")
        assert await beats(stack, http) == (0.0, 0.0)  # configured, not armed yet
        await am.fire(http, WATCHDOG)

        async def armed() -> tuple[float, float] | None:
            up, seen = await beats(stack, http)
            return (up, seen) if up == 1 else None

        _, first_seen = await eventually(armed, "the Watchdog arming the heartbeat")

        async def refreshed_again() -> bool:
            return (await beats(stack, http))[1] > first_seen

        await eventually(refreshed_again, "a resend of the Watchdog refreshing the heartbeat")
        assert await stack.sim_calls(http) == []  # a Watchdog never rings by itself
        am.process.stop()  # Alertmanager dies: nothing fires any more

        page = await one_page(stack, http, "HeartbeatMissing", lambda p: p["state"] == "answered",
                              "the heartbeat's page answered", within=30)
        assert page["route"] == f"heartbeat:{NAME}" and page["heartbeat"] == NAME, dumps(page)
        [call] = await calls(stack, http, page)
        assert call["dialed_number"] == stack.number
        assert f"No heartbeat from {NAME} within 8 seconds" in call["audio"]["text"], dumps(call)
        assert (await beats(stack, http))[0] == 0

        am = start("am-again")  # Alertmanager back, and Prometheus's Watchdog with it
        await am.fire(http, WATCHDOG)
        page = await one_page(stack, http, "HeartbeatMissing", lambda p: p["resolved_at"] is not None,
                              "the heartbeat's page resolved", within=30)
        assert await eventually(lambda: calls(stack, http, page, resolved=True), "the resolved call")
        assert len(await calls(stack, http, page)) == 1, dumps(await stack.sim_calls(http))
        assert (await beats(stack, http))[0] == 1
