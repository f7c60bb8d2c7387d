"""Never lose a page, never ring twice: a provider outage, kill -9 and restart, with real processes on loopback."""

from __future__ import annotations

import collections
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e_support import (
    Alertmanager,
    Process,
    Stack,
    alert2voice_command,
    alertmanagers,
    eventually,
    in_ci,
    require_alertmanager,
    running_stack,
    wait_http_ok,
)
from tests.support import alert, payload

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(request, tmp_path, store="sqlite") as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
def start_am(stack: Stack, tmp_path: Path) -> Iterator[Callable[[str], Alertmanager]]:
    if not in_ci():
        require_alertmanager()
    with alertmanagers(tmp_path, stack) as start:
        yield start


async def set_outage(http: aiohttp.ClientSession, stack: Stack, on: bool) -> None:
    if on:
        async with http.put(f"{stack.sim_url}/_sim/fail", json={"status": 500}) as resp:
            assert resp.status == 200, await resp.text()
    else:
        async with http.delete(f"{stack.sim_url}/_sim/fail") as resp:
            assert resp.status in (200, 204), await resp.text()


def accepted_per_correlation(calls: list[dict]) -> collections.Counter[str]:
    return collections.Counter(c["correlation_id"] for c in calls)


async def fire_direct(http: aiohttp.ClientSession, stack: Stack, n: int) -> None:
    for i in range(n):
        body = payload(alert({"alertname": f"Restart{i}", "team": "payments", "severity": "critical"}),
                       group_key=f'{{}}:{{alertname="Restart{i}"}}')
        async with http.post(f"{stack.a2v_url}/alerts", json=body,
                             headers={"Authorization": f"Bearer {stack.token}"}) as resp:
            assert resp.status == 200, await resp.text()


async def test_kill_9_with_calls_queued_behind_a_failing_provider(stack: Stack, http: aiohttp.ClientSession):
    await set_outage(http, stack, True)
    await fire_direct(http, stack, 20)

    async def every_page_tried():
        pages = (await stack.get_json(http, f"{stack.a2v_url}/api/v1/pages?limit=100"))["pages"]
        return len(pages) == 20 and all(p["calls"] and p["calls"][0]["tries"] >= 1 for p in pages)

    await eventually(every_page_tried, "every page's first attempt to fail at the provider")
    [a2v] = [p for p in stack.processes if p.name == "alert2voice"]
    assert a2v.popen is not None
    os.kill(a2v.popen.pid, signal.SIGKILL)
    a2v.popen.wait()
    await set_outage(http, stack, False)

    again = Process("alert2voice-restarted", [*alert2voice_command(), "serve", "--config", str(stack.config_path)],
                    stack.workdir / "alert2voice-restarted.log").start()
    stack.processes.append(again)
    stack.logs.processes.append(again)
    wait_http_ok(f"{stack.a2v_url}/-/ready", again)

    async def twenty_calls():
        calls = await stack.sim_calls(http)
        return calls if len(calls) >= 20 else None

    calls = await eventually(twenty_calls, "20 accepted calls after the restart", within=60)
    counts = accepted_per_correlation(calls)
    assert len(counts) == 20 and set(counts.values()) == {1}, counts

    async def all_answered():
        pages = (await stack.get_json(http, f"{stack.a2v_url}/api/v1/pages?limit=100"))["pages"]
        return pages if len(pages) == 20 and all(p["state"] == "answered" for p in pages) else None

    pages = await eventually(all_answered, "all 20 pages answered")
    for page in pages:
        assert [c["state"] for c in page["calls"]] == ["answered"], page
    assert len(await stack.sim_calls(http)) == 20


async def test_provider_outage_with_real_alertmanager(stack: Stack, http: aiohttp.ClientSession, start_am):
    am = start_am("am")
    await set_outage(http, stack, True)
    await am.post_alerts(http, [{"labels": {"alertname": f"Outage{i}", "team": "payments", "severity": "critical"},
                                 "annotations": {"summary": f"outage test {i}"}} for i in range(50)])

    async def fifty_pages_failing():
        pages = (await stack.get_json(http, f"{stack.a2v_url}/api/v1/pages?limit=200"))["pages"]
        failing = [p for p in pages if p["calls"] and p["calls"][0]["tries"] >= 2 and p["calls"][0]["error"]]
        return len(failing) >= 50

    await eventually(fifty_pages_failing, "50 pages retrying while the provider fails", within=30)
    assert await stack.sim_calls(http) == []
    await set_outage(http, stack, False)

    async def fifty_calls():
        calls = await stack.sim_calls(http)
        return calls if len(calls) >= 50 else None

    calls = await eventually(fifty_calls, "50 accepted calls once the provider recovers", within=60)
    counts = accepted_per_correlation(calls)
    assert len(counts) == 50 and set(counts.values()) == {1}, counts
    # Alertmanager keeps resending (repeat_interval 3s) while the alerts fire: still one call per page.
    async def resent():
        samples = await stack.metrics(http)
        return samples.get("alert2voice_pages_total", route="payments-critical", result="duplicate") >= 50

    await eventually(resent, "Alertmanager to resend every group once", within=30)
    assert len(await stack.sim_calls(http)) == 50


async def test_sighup_with_broken_config_keeps_serving(stack: Stack, http: aiohttp.ClientSession):
    await set_outage(http, stack, True)
    await fire_direct(http, stack, 1)
    [a2v] = [p for p in stack.processes if p.name == "alert2voice"]
    assert a2v.popen is not None
    good = stack.config_path.read_text()
    stack.config_path.write_text(good.replace("routes:", "routes_typo:"))
    a2v.popen.send_signal(signal.SIGHUP)

    async def reload_state(value: float):
        return (await stack.metrics(http)).get("alert2voice_config_last_reload_successful") == value

    await eventually(lambda: reload_state(0), "the failed reload to be reported")
    await fire_direct(http, stack, 1)  # still serving on the last good config: a duplicate, answered 200
    stack.config_path.write_text(good)
    a2v.popen.send_signal(signal.SIGHUP)
    await eventually(lambda: reload_state(1), "the fixed reload to be reported")
    await set_outage(http, stack, False)

    async def one_call():
        calls = await stack.sim_calls(http)
        return calls if calls else None

    calls = await eventually(one_call, "the queued call to be placed after the reloads", within=30)
    assert len(calls) == 1
    assert a2v.alive
