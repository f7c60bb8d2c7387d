"""End to end (issue 21, deliverable 4): a silence created in a real Alertmanager stops a page before its next call.

A real, unclustered Alertmanager -> `alert2voice serve` (with `alertmanager.urls` pointing back at it) -> the
Webex Connect simulator, all on loopback. Alertmanager's port is chosen before alert2voice starts: each asks
the other.
"""
# ruff: noqa: F811 (the http fixture imported from test_e2e_alertmanager is requested by name)

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.procs import free_port
from tests.e2e_support import (
    Stack,
    dumps,
    in_ci,
    one_page,
    require_alertmanager,
    running_stack,
    start_alertmanager,
)
from tests.test_e2e_alertmanager import http, payments  # noqa: F401 (http: a fixture)

pytestmark = pytest.mark.e2e

ROUTE = "payments-critical"
BOB = "+442071838750"


@pytest.fixture(scope="module")
def am_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, am_port: int) -> Iterator[Stack]:
    if not in_ci():
        require_alertmanager()  # skips the module before starting anything; in CI the test fails instead

    def configure(config: dict[str, Any]) -> None:
        config["contacts"]["bob"] = {"number": BOB, "timezone": "UTC"}
        # alice first; unanswered, bob 4 seconds later: the silence is created (Alertmanager stopped) within them.
        config["routes"][0]["escalation"] = [{"call": "alice", "attempts": 1, "interval": "4s"}, {"call": "bob"}]
        config["alertmanager"] = {"urls": [f"http://127.0.0.1:{am_port}"], "timeout": "1s", "cache_ttl": "1s"}

    with running_stack(request, tmp_path_factory.mktemp("e2e-silences"), store="sqlite", configure=configure) as s:
        yield s


def steps(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["contact"], c["state"]) for c in page["calls"] if c["kind"] == "page"]


async def test_a_silence_in_alertmanager_stops_the_escalation_and_an_unsilenced_alert_escalates(
        stack: Stack, am_port: int, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    am = start_alertmanager(tmp_path, stack, "am", port=am_port)
    try:
        await stack.script_number(http, stack.number, {"outcome": "no_answer"})  # alice never answers
        before = await stack.metrics(http)
        silenced, escalates = payments("E2ESilencedInAM"), payments("E2EEscalatesPastAM")
        await am.fire(http, silenced, {"summary": "Payout API slow"})
        await am.fire(http, escalates, {"summary": "Ledger lagging"})
        await one_page(stack, http, "E2ESilencedInAM", lambda p: len(p["calls"]) >= 1, "alice called")
        # She sees the alert in chat and silences it in Alertmanager, without answering the phone.
        await am.silence(http, {"alertname": "E2ESilencedInAM"})

        page = await one_page(stack, http, "E2ESilencedInAM", lambda p: p["state"] != "active",
                              "the page ended before its next call", within=20)
        assert page["state"] == "silenced" and page["due_at"] is None, dumps(page)
        assert steps(page) == [("alice", "no_answer")], dumps(page)
        other = await one_page(stack, http, "E2EEscalatesPastAM", lambda p: p["state"] != "active",
                               "the unsilenced page escalated to bob", within=20)
        assert other["state"] == "answered" and steps(other) == [("alice", "no_answer"), ("bob", "answered")], \
            dumps(other)
        silenced_ids = {c["correlation_id"] for c in page["calls"]}
        to_bob = [c for c in await stack.sim_calls(http) if c["dialed_number"] == BOB]
        assert [c["correlation_id"] for c in to_bob] == [other["calls"][1]["correlation_id"]]
        assert not silenced_ids & {c["correlation_id"] for c in to_bob}
        after = await stack.metrics(http)
        assert after.delta(before, "alert2voice_pages_silenced_total", route=ROUTE) == 1
        assert after.delta(before, "alert2voice_alertmanager_checks_total", result="silenced") >= 1
        assert after.delta(before, "alert2voice_alertmanager_checks_total", result="active") >= 3

        # Alertmanager stopped: a page's calls go ahead all the same.
        await am.fire(http, payments("E2EWithoutAM"), {"summary": "Card auth errors"})
        await one_page(stack, http, "E2EWithoutAM", lambda p: steps(p) == [("alice", "no_answer")],
                       "alice called, not answering")
        am.process.stop()
        page = await one_page(stack, http, "E2EWithoutAM", lambda p: p["state"] != "active",
                              "bob called with Alertmanager stopped", within=20)
        assert steps(page) == [("alice", "no_answer"), ("bob", "answered")], dumps(page)
        last = await stack.metrics(http)
        assert last.delta(after, "alert2voice_alertmanager_checks_total", result="unreachable") >= 1
    finally:
        am.process.stop()
        with contextlib.suppress(ValueError):
            stack.logs.processes.remove(am.process)

