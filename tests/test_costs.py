"""What a new page costs the store, counted (not timed): Redis round trips, SQLite writer operations.

A new page with an answered call needs two durable writes — the admit before the 200 (the page, its claims,
its lease, its first call's throttle slot and rate-limit token) and the call record after the provider's
202 — and, on Redis, one read beside them (what a resend asks: the group's open pages, whether the page is
seen). Real processes: `alert2voice serve` against the bundled simulator (its receipts held back, so that
only the new-page path runs) and a real redis-server, whose MONITOR shows every command a client sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alert2voice.store.redis import SCRIPTS, flagged
from tests.e2e_support import Stack, eventually, running_stack
from tests.redis_support import RedisServer, redis_server_in
from tests.support import PAYMENTS, alert, payload

pytestmark = pytest.mark.e2e

PAGES = 60
# Neither per page nor new-page work: the store clock's TIME, the memory gauge's INFO, the connection's setup.
BACKGROUND = frozenset({"time", "info", "ping", "hello", "client", "script", "subscribe", "config", "select"})
# Redis names a script by its SHA-1 (EVALSHA).
SCRIPT_NAMES = {hashlib.sha1(flagged(name, source).encode(), usedforsecurity=False).hexdigest(): name
                for name, source in SCRIPTS.items()}


def body(i: int) -> dict[str, Any]:
    """A webhook of a group never seen before: a new page, one call."""
    name = f"Cost{i}"
    return payload(alert({**PAYMENTS, "alertname": name}, summary="a new page"),
                   group_key=f'{{}}:{{alertname="{name}"}}', groupLabels={"alertname": name})


class Monitor:
    """Redis MONITOR on a socket of its own: every command a client sent (not those a script ran), by name."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._started.wait(5), "MONITOR did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _read(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
            sock.sendall(b"MONITOR\r\n")
            buffer = b""
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    buffer += sock.recv(1 << 16)
                *lines, buffer = buffer.split(b"\r\n")
                for line in lines:
                    if line == b"+OK":
                        self._started.set()
                    elif line.startswith(b"+") and b" lua] " not in line:  # "+<time> [db addr] "cmd" "arg" ..."
                        self.counts[self._name(line.split(b'"'))] += 1

    @staticmethod
    def _name(parts: list[bytes]) -> str:
        name = parts[1].decode().lower()
        return f"evalsha {SCRIPT_NAMES.get(parts[3].decode(), '?')}" if name == "evalsha" else name

    def per_page(self) -> dict[str, float]:
        """Commands per new page, background left out."""
        return {k: v / PAGES for k, v in self.counts.items() if k not in BACKGROUND}


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server_in(tmp_path_factory.mktemp("costs-redis")) as server:
        yield server


@contextlib.contextmanager
def stack_on(request: pytest.FixtureRequest, workdir: Path, store: dict[str, Any]) -> Iterator[Stack]:
    def configure(config: dict[str, Any]) -> None:
        config["store"] = store
        # Every page called at once, and a slot free for each as it comes (max_in_flight): a page admitted while
        # every slot is taken is left to the dispatcher's loop, which clears its call with operations of its own.
        config["provider"] |= {"rate_limit": "1000/s", "max_in_flight": 64}

    # Receipts 10 minutes after the call: only the new-page path runs while the test counts.
    with running_stack(request, workdir, store=store["backend"], configure=configure,
                       simulator_args=["--callback-delay", "600"]) as stack:
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def new_pages(stack: Stack, http: aiohttp.ClientSession, concurrently: int, count: int = PAGES,
                    first: int = 0) -> None:
    """`count` webhooks of new groups, `concurrently` at a time, each answered "called"; then every call placed."""
    gate = asyncio.Semaphore(concurrently)

    async def one(i: int) -> None:
        async with gate, http.post(f"{stack.a2v_url}/alerts", json=body(i),
                                   headers={"Authorization": f"Bearer {stack.token}"}) as resp:
            assert resp.status == 200, await resp.text()
            assert [p["result"] for p in (await resp.json())["pages"]] == ["called"]

    await asyncio.gather(*(one(i) for i in range(first, first + count)))

    async def placed() -> int | None:
        calls = await stack.sim_calls(http)
        return len(calls) if len(calls) >= first + count else None

    assert await eventually(placed, "every call placed") == first + count


async def warmed_up(stack: Stack, http: aiohttp.ClientSession) -> int:
    """One new page before counting, its call written accepted: Redis loads each script at its first use (NOSCRIPT,
    SCRIPT LOAD, again). Returns the number of the first page to count."""
    await new_pages(stack, http, 1, count=1)

    async def written() -> bool:
        return any(c["state"] == "accepted" for p in await stack.pages(http) for c in p["calls"])

    await eventually(written, "the first page's call written accepted")
    return 1


async def store_metric(stack: Stack, http: aiohttp.ClientSession, name: str) -> float:
    return (await stack.metrics(http)).sum(name)


@pytest.mark.parametrize("concurrently", [1, 8])
async def test_a_new_page_costs_redis_three_round_trips(request, tmp_path: Path, redis: RedisServer, http,
                                                       concurrently: int) -> None:
    prefix = f"costs{concurrently}:"
    with stack_on(request, tmp_path, {"backend": "redis", "url": redis.url, "key_prefix": prefix}) as stack:
        first = await warmed_up(stack, http)
        with Monitor(redis.port) as monitor:
            await new_pages(stack, http, concurrently, first=first)
            await asyncio.sleep(0.3)  # MONITOR lines of the last commands still in flight
        per_page = monitor.per_page()
    # look (what a resend asks), admit (page, claims, lease, throttle slot, token), put (the call record).
    assert per_page == {"evalsha look": 1.0, "evalsha admit": 1.0, "evalsha put": 1.0}, monitor.counts


async def test_a_new_page_costs_sqlite_two_writer_operations(request, tmp_path: Path, http) -> None:
    store = {"backend": "sqlite", "path": str(tmp_path / "alert2voice.db")}
    with stack_on(request, tmp_path, store) as stack:
        first = await warmed_up(stack, http)
        scraped = await store_metric(stack, http, "alert2voice_store_operations_total")
        before = await store_metric(stack, http, "alert2voice_store_operations_total")
        scrape = before - scraped  # what a scrape itself costs (the queue depth gauge's count)
        await new_pages(stack, http, 8, first=first)
        after = await store_metric(stack, http, "alert2voice_store_operations_total")
    # admit (the page, its claims and lease) and put (the call record); what a resend asks is the mirror's.
    assert (after - before - scrape) / PAGES == 2.0, (after - before - scrape) / PAGES
