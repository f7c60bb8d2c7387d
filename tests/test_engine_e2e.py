"""Issue 19's engine bugs with real processes on loopback: `serve` on SQLite or on a real redis-server (one, or
two replicas sharing it), the simulator holding or replaying the provider's answers.

Each test drives one bug from outside, as an operator would meet it: a provider answering after our timeout,
a replica killed while its request is pending, Redis refusing writes when a 202 arrives. The provider timeout
is short (1-2 s), so the leases sized from it (dispatch.context.lease_span) are short too; the tests poll the
processes' HTTP APIs with deadlines and never sleep for a timer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import difflib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alert2voice.config_file import load_config
from alert2voice.dispatch.context import lease_span
from tests.e2e_support import (
    Stack,
    dumps,
    eventually,
    one_page,
    running_stack,
)
from tests.redis_support import RedisServer, redis_server_in
from tests.support import alert, payload
from tests.test_replicas_e2e import (
    ALICE,
    MESSAGES,
    NO_THROTTLE,
    Replicas,
    at,
    payments,
    post_webhook,
    replica_pairs,
    webhook,
)

pytestmark = pytest.mark.e2e

CHANGED_BY_ANOTHER = "page changed by another writer"
STORE_FAILED = "store unavailable"
HELD = 30.0  # a 202 held this long is still pending when the test acts on it (kill -9, Redis refusing writes)


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Replicas]]:
    """Start the simulator and two replicas on a redis-server of the test's own (keyword arguments as
    start_replicas'), stopped at the end."""
    with redis_server_in(tmp_path / "redis") as redis, replica_pairs(request, tmp_path, redis) as start:
        yield start


@contextlib.contextmanager
def store_server(tmp_path: Path, store: str) -> Iterator[RedisServer | None]:
    """A redis-server of the test's own for store "redis"; None for "sqlite"."""
    if store != "redis":
        yield None
        return
    with redis_server_in(tmp_path / "redis") as server:
        yield server


def single(provider_timeout: str, *, escalation: list[dict[str, Any]] | None = None,
           redis: RedisServer | None = None) -> Callable[[dict[str, Any]], None]:
    """A `configure` for running_stack: the provider timeout, the route's escalation, Redis as the store."""
    def configure(config: dict[str, Any]) -> None:
        config["provider"]["timeout"] = provider_timeout
        if escalation is not None:
            config["routes"][0]["escalation"] = escalation
        if redis is not None:
            config["store"] = {"backend": "redis", "url": redis.url, "key_prefix": f"e2e{os.urandom(4).hex()}:"}
    return configure


# ---------------------------------------------------------------------------------------------- helpers


def lease_of(stack: Stack) -> timedelta:
    """How long a replica holds a page it works on, for this stack's config."""
    return lease_span(load_config(stack.config_path))


async def posts(http: aiohttp.ClientSession, stack: Stack) -> list[dict[str, Any]]:
    """Every POST /v1/voice/messages the simulator received, whatever it answered."""
    return [r for r in await stack.sim_requests(http) if (r["method"], r["path"]) == ("POST", MESSAGES)]


def of_page(requests: list[dict[str, Any]], page: dict[str, Any]) -> list[dict[str, Any]]:
    """The requests whose correlationId belongs to this page."""
    prefix = f"a2v-{page['key'][:24]}-"
    return [r for r in requests if str(r["body"].get("correlationId", "")).startswith(prefix)]


def by_key(requests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Requests grouped by their Idempotency-Key, in the order the keys were first sent."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in requests:
        groups.setdefault(r["headers"].get("Idempotency-Key", ""), []).append(r)
    return groups


def bodies_differing(requests: list[dict[str, Any]]) -> list[str]:
    """What breaks the IETF Idempotency-Key draft (every try of an attempt sends the same request): per key
    whose tries sent more than one body, the answers and the lines that differ."""
    problems = []
    for key, tries in by_key(requests).items():
        bodies = [json.dumps(r["body"], sort_keys=True, indent=1).replace("\\n", "\n").splitlines() for r in tries]
        for later, r in zip(bodies[1:], tries[1:], strict=True):
            changed = [line for line in difflib.ndiff(bodies[0], later) if line[:1] in "+-"]
            if changed:
                problems.append(f"Idempotency-Key {key}: try {tries.index(r) + 1} (answered {r['status']} {r['code']}) "
                                f"sent another body than try 1 (answered {tries[0]['status']}): {changed}")
    return problems


def one_body_per_key(requests: list[dict[str, Any]]) -> None:
    """Every try of an attempt sent the same request."""
    problems = bodies_differing(requests)
    assert not problems, "\n".join(problems)


async def held_request(http: aiohttp.ClientSession, stack: Stack, number: str, *, within: float = 20.0,
                       seen: int = 0) -> dict[str, Any]:
    """Wait for the simulator to receive a POST to `number` whose answer it holds (a `delay` script), past the
    first `seen` POSTs to it."""
    async def probe() -> dict[str, Any] | None:
        mine = [r for r in await posts(http, stack) if r["body"].get("dialedNumber") == number][seen:]
        return next((r for r in mine if r.get("delay")), None)

    return await eventually(probe, f"a held POST to {number}", within=within, interval=0.05)


def sender(replicas: Replicas, request: dict[str, Any], *, cross_callbacks: bool) -> int:
    """Which replica sent a request: its callbackUrl is its own public_url (or, crossed, the other's)."""
    urls = [f"{s.a2v_url}/callbacks/webex" for s in replicas.replicas]
    named = urls.index(request["body"]["callbackUrl"])
    return 1 - named if cross_callbacks else named


def sim_time(entry: dict[str, Any]) -> datetime:
    """When the simulator received a request (its log's time, this machine's clock)."""
    return datetime.fromisoformat(entry["time"])


def count_lines(stack: Stack, text: str) -> int:
    """How many lines of this stack's serve log hold `text`."""
    log = stack.processes[-1].log_path.read_text(encoding="utf-8", errors="replace")
    return sum(text in line for line in log.splitlines())


# ------------------------------------------------------------------------------------------------ tests


async def test_a_retry_after_a_timeout_sends_the_same_request_and_rings_once(
        request: pytest.FixtureRequest, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    # Receipts come after the retry (a real phone rings for seconds): only the retry's answer settles the attempt.
    interval = timedelta(seconds=4)
    with running_stack(request, tmp_path, store="sqlite", simulator_args=["--callback-delay", "3"],
                       configure=single("1s", escalation=[{"call": "alice", "attempts": 2,
                                                           "interval": f"{interval.seconds}s"}])) as stack:
        # The first try is answered after the client gave up (1 s); its retry is answered at once.
        await stack.script_number(http, ALICE, {"outcome": "no_answer", "delay": 2.5, "delay_count": 1})
        # Firing for 59 s when the webhook comes, over a minute at the retry (1 s timeout and a backoff later):
        # "for less than a minute" is what the default template says at the first try, "for 1 minute" of a
        # request rendered again.
        starts_at = datetime.now(UTC) - timedelta(seconds=59)
        body = payload(alert(payments("EngineSlowAnswer"), starts=starts_at + timedelta(minutes=5)),  # alert() -5m
                       group_key='{}:{alertname="EngineSlowAnswer"}')
        status, answer, _ = await post_webhook(http, stack, body)
        assert status == 200 and answer["pages"][0]["result"] == "called", answer
        page = await one_page(stack, http, "EngineSlowAnswer", lambda p: len(p["calls"]) >= 2 or p["due_at"] is None,
                              "the second attempt queued", within=30)

        async def second_attempt_sent() -> list[dict[str, Any]] | None:
            sent = of_page(await posts(http, stack), page)
            return sent if len(by_key(sent)) >= 2 else None

        sent = await eventually(second_attempt_sent, "attempt 2 sent", within=interval.seconds + 15)
        problems = bodies_differing(sent)
        first, second = (tries[0] for tries in list(by_key(sent).values())[:2])
        calls = [c["correlation_id"] for c in await stack.sim_calls(http) if c["dialed_number"] == ALICE]
        rang = calls.count(first["body"]["correlationId"])
        if rang != 1:
            problems.append(f"attempt 1 made {rang} calls")
        # Attempt 2 waits for its interval after attempt 1 (placed at its first try, ended later).
        gap = sim_time(second) - sim_time(first)
        if gap < interval:
            problems.append(f"attempt 2 was sent {gap.total_seconds():.1f}s after attempt 1 (interval "
                            f"{interval.seconds}s)")
        assert not problems, "\n".join(problems)
        if sim_time(first) - starts_at >= timedelta(minutes=1):
            pytest.skip("the first try went out over a minute after the alert started (a loaded machine): the "
                        "retry did not cross the minute, so nothing was tested")


@pytest.mark.parametrize("receipts", ["delivered", "lost"])
async def test_a_replica_killed_sending_a_storm_summary_the_other_completes_the_batch(
        pair: Callable[..., Replicas], http: aiohttp.ClientSession, receipts: str) -> None:
    # Crossed callbacks: the summary call's receipts reach the survivor, as they would through a load balancer.
    # "delivered": the receipts come at once, the summary's 202 still held: the survivor adopts the call on the
    # leader page (outcomes._reconcile) and the followers find it there (storms.Storms.hold).
    # "lost": the summary call sends no receipts: the survivor takes the leader page over at its lease end, sends
    # the frozen summary again (replayed by its Idempotency-Key, no new call) and marks the followers.
    storm = {**NO_THROTTLE, "storm": {"pages": 1, "per": "3s"}}
    replicas = pair(cross_callbacks=True, throttle=storm, provider_timeout="2s")
    a = replicas.replicas[0]
    names = [f"EngineStorm{i}" for i in range(4)]
    status, answer, _ = await post_webhook(http, a, webhook(names[0]))
    assert status == 200, answer

    async def first_called() -> list[dict[str, Any]] | None:
        return await a.sim_calls(http) or None

    await eventually(first_called, "the storm's first page called")
    # The next call to alice is the storm summary: its 202 is held until the replica sending it is gone.
    await a.script_number(http, ALICE, {"delay": HELD, "delay_count": 1, "callbacks": receipts == "delivered"})
    for name in names[1:]:
        status, answer, _ = await post_webhook(http, a, webhook(name))
        assert status == 200 and answer["pages"][0]["result"] == "called", answer
    summary = await held_request(http, a, ALICE, seen=1)
    killed = sender(replicas, summary, cross_callbacks=True)
    replicas.kill_9(killed)
    killed_at = datetime.now(UTC)
    survivor = replicas.replicas[1 - killed]
    lease = lease_of(survivor)

    async def batch_done() -> list[dict[str, Any]] | None:
        pages = [p for p in await survivor.pages(http) if p["alerts"][0]["labels"]["alertname"] in names]
        if receipts == "delivered":
            done = all(p["state"] == "answered" for p in pages)
        else:
            # No receipt comes: the folded pages are done with the storm once the summary's call is theirs
            # (accepted: the provider took it; with two calls to alice in all, that is the summary).
            done = all(p["calls"][-1]["state"] in ("accepted", "answered") for p in pages)
        return pages if len(pages) == len(names) and done else None

    within = lease + timedelta(seconds=4)
    try:
        pages = await eventually(batch_done, "every page of the batch done", within=within.total_seconds())
    except AssertionError as exc:
        pages = [p for p in await survivor.pages(http) if p["alerts"][0]["labels"]["alertname"] in names]
        held = [(p["alerts"][0]["labels"]["alertname"], p["state"], [(c["state"], c["error"]) for c in p["calls"]],
                 p["due_at"]) for p in pages]
        calls = [(c["correlation_id"], c["accepted_time"]) for c in await survivor.sim_calls(http)]
        raise AssertionError(f"{exc}; {datetime.now(UTC) - killed_at} after the kill, the pages "
                             f"(name, state, calls, due): {held}; the calls "
                             f"to alice (two expected: the first page's and the summary): {calls}") from None
    # One summary call spoke for the three folded pages; every try of it was the same request.
    calls = await survivor.sim_calls(http)
    assert len(calls) == 2, dumps(calls)
    sent = await posts(http, survivor)
    one_body_per_key(sent)
    if receipts == "delivered":
        assert all(p["calls"][-1]["state"] == "answered" for p in pages), dumps(pages)
    else:
        # The survivor sent the summary again, and the simulator replayed its 202.
        tries = by_key(sent)[summary["headers"]["Idempotency-Key"]]
        assert len(tries) == 2 and tries[1].get("replayed"), dumps(tries)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_three_hundred_new_pages_on_one_replica_each_called_once_without_conflicts(
        request: pytest.FixtureRequest, tmp_path: Path, http: aiohttp.ClientSession, store: str) -> None:
    count = 300
    with store_server(tmp_path, store) as server, running_stack(
            request, tmp_path, store="sqlite", configure=single("2s", redis=server)) as stack:
        names = [f"EngineBurst{i:03d}" for i in range(count)]
        gate = asyncio.Semaphore(16)  # Alertmanager sends its groups in parallel, but not all 300 at once

        async def send(name: str) -> None:
            async with gate:
                status, answer, _ = await post_webhook(http, stack, webhook(name))
            assert status == 200 and answer["pages"][0]["result"] == "called", answer

        await asyncio.gather(*(send(n) for n in names))

        async def every_page_answered() -> list[dict[str, Any]] | None:
            pages = [p for p in await stack.pages(http) if p["alerts"][0]["labels"]["alertname"] in names]
            return pages if len(pages) == count and all(p["state"] == "answered" for p in pages) else None

        pages = await eventually(every_page_answered, f"{count} pages answered", within=90)
        calls = await stack.sim_calls(http)
        per_page = collections.Counter(c["correlation_id"].rsplit("-", 2)[0] for c in calls)
        twice = {k: n for k, n in per_page.items() if n > 1}
        assert len(calls) == count and not twice, f"{len(calls)} calls for {count} pages; twice: {twice}"
        assert {f"a2v-{p['key'][:24]}" for p in pages} == set(per_page)
        lines = count_lines(stack, CHANGED_BY_ANOTHER)
        assert lines == 0, f"{lines} log lines '{CHANGED_BY_ANOTHER}' with one replica and no other writer"


async def test_a_replica_killed_placing_a_call_the_other_takes_the_page_when_its_lease_ends(
        pair: Callable[..., Replicas], http: aiohttp.ClientSession) -> None:
    replicas = pair(provider_timeout="2s")
    a = replicas.replicas[0]
    # No receipts: only the provider's answer, which the killed replica never gets, tells that the call went out.
    await a.script_number(http, ALICE, {"outcome": "no_answer", "callbacks": False, "delay": HELD, "delay_count": 1})
    status, answer, _ = await post_webhook(http, a, webhook("EngineKilledPlacing"))
    assert status == 200 and answer["pages"][0]["result"] == "called", answer
    first = await held_request(http, a, ALICE)
    killed = sender(replicas, first, cross_callbacks=False)
    replicas.kill_9(killed)
    survivor = replicas.replicas[1 - killed]
    lease = lease_of(survivor)
    page = await one_page(survivor, http, "EngineKilledPlacing", lambda p: bool(p["calls"]), "the page listed")
    # The lease was renewed just before the request: it ends at most `lease` after the simulator received it.
    lease_ends = sim_time(first) + lease

    async def next_request() -> dict[str, Any] | None:
        sent = of_page(await posts(http, survivor), page)
        return sent[1] if len(sent) > 1 else None

    until = (lease_ends + timedelta(seconds=10) - datetime.now(UTC)).total_seconds()
    try:
        later = await eventually(next_request, "the survivor's request for the page", within=until)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: nothing sent for the page 10s after the killed replica's lease ended "
                             f"(lease {lease.total_seconds():g}s)") from None
    problems = []
    late = sim_time(later) - lease_ends
    if late > timedelta(seconds=2):
        problems.append(f"the survivor sent the page's next request {late.total_seconds():.1f}s after the killed "
                        f"replica's lease ended (lease {lease.total_seconds():g}s)")
    # The same attempt, sent again byte for byte: the simulator replays it, alice's phone rings once.
    if later["headers"].get("Idempotency-Key") != first["headers"].get("Idempotency-Key"):
        problems.append(f"the survivor sent another attempt ({later['body']['correlationId']}) rather than the "
                        f"killed replica's ({first['body']['correlationId']})")
    problems += bodies_differing(of_page(await posts(http, survivor), page))
    calls = await survivor.sim_calls(http)
    if len(calls) != 1:
        problems.append(f"{len(calls)} calls placed, to {[c['dialed_number'] for c in calls]}: one expected (the "
                        f"killed replica's, its retry replayed)")
    assert not problems, "\n".join(problems)


async def test_a_call_accepted_while_redis_refuses_writes_is_not_sent_again(
        request: pytest.FixtureRequest, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    with redis_server_in(tmp_path / "redis") as redis, running_stack(
            request, tmp_path, store="sqlite", configure=single("2s", redis=redis)) as stack:
        # The 202 comes 1 s after the call was placed: by then Redis refuses every write.
        await stack.script_number(http, ALICE, {"callbacks": False, "delay": 1.0, "delay_count": 1})
        status, answer, _ = await post_webhook(http, stack, webhook("EngineRedisFull"))
        assert status == 200 and answer["pages"][0]["result"] == "called", answer
        first = await held_request(http, stack, ALICE)
        client = redis.client()
        try:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)  # every write is refused: "OOM command not allowed"

            async def got_202() -> float:
                return (await stack.metrics(http)).sum("alert2voice_provider_requests_total", code="202")

            await eventually(got_202, "the provider's 202 to reach alert2voice")

            async def refused_twice() -> bool:
                return count_lines(stack, STORE_FAILED) >= 2

            # Refused long enough for the dispatcher to fail to record the call, and to fail once more after.
            await eventually(refused_twice, "the dispatcher to find the store refusing writes", within=10)
        finally:
            client.config_set("maxmemory", 0)
            client.close()
        recovered = datetime.now(UTC)
        # Today the attempt is sent again (~1 s after recovery) before it is recorded: once it is, count.
        page = await one_page(stack, http, "EngineRedisFull", lambda p: p["calls"][0]["state"] != "queued",
                              "the call recorded once Redis takes writes again")
        key = first["headers"]["Idempotency-Key"]
        again = [r for r in await posts(http, stack) if r["headers"].get("Idempotency-Key") == key]
        assert len(again) == 1, (
            f"the accepted call was sent {len(again)} times, again "
            f"{', '.join(f'{(sim_time(r) - recovered).total_seconds():.2f}s' for r in again[1:])} after Redis took "
            f"writes again (answers, replayed: {[(r['status'], r.get('replayed', False)) for r in again]}); "
            f"calls of the page: {dumps(page['calls'])}")
        assert at(page["calls"][0]["accepted_at"]) is not None
