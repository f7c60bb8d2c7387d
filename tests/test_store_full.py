"""A store that cannot take a write: Redis at maxmemory with noeviction, SQLite's disk full.

Nothing is answered 200 that was not stored, /-/ready says so, and the service recovers by itself when
room returns: the page Alertmanager sends again is admitted and called once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alert2voice.provider.fake import RecordingProvider
from alert2voice.store import StoreUnavailable
from alert2voice.store import sqlite as sqlite_store
from alert2voice.store.redis import RedisRefused, RedisStore
from alert2voice.store.sqlite import SQLiteStore
from alert2voice.web import create_app
from alert2voice.web.keys import DISPATCHER
from tests.e2e_support import eventually
from tests.harness import JSON_AUTH as AUTH
from tests.redis_support import RedisServer, fresh_prefix, opened, redis_server_in
from tests.support import PAYMENTS, alert, make_config, payload
from tests.test_store import T0, WINDOW, make_page


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test: its maxmemory is changed at run time."""
    with redis_server_in(tmp_path / "redis") as server:
        yield server


def full(server: RedisServer) -> None:
    """maxmemory below what Redis uses now, noeviction: every memory-checked write is refused (OOM)."""
    client = server.client()
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
    finally:
        client.close()


def room_again(server: RedisServer) -> None:
    client = server.client()
    try:
        client.config_set("maxmemory", "0")
    finally:
        client.close()


async def test_a_full_redis_refuses_the_admit_whole_and_grows_no_further(own_server):
    async with opened(own_server) as store:
        full(own_server)
        client = own_server.client()
        try:
            before = client.dbsize()
            page = make_page("p1")
            with pytest.raises(StoreUnavailable, match="maxmemory"):
                await store.admit(page, page.claims, WINDOW, T0)
            assert client.dbsize() == before  # nothing of it written: not the claims, not the page
        finally:
            client.close()
        room_again(own_server)
        assert await store.admit(page, page.claims, WINDOW, T0)


async def test_a_redis_older_than_7_is_refused_at_open_with_the_reason(own_server, monkeypatch):
    async def info(self, section=None, *args, **kwargs):
        return {"redis_version": "6.2.14"}

    monkeypatch.setattr("redis.asyncio.Redis.info", info)
    store = RedisStore(own_server.url, key_prefix=fresh_prefix())
    with pytest.raises(RedisRefused, match=r"Redis 6\.2\.14 is too old: alert2voice needs Redis 7\.0"):
        await store.open()


async def test_a_full_redis_is_not_ready_and_says_how_much_room_it_has(own_server):
    async with opened(own_server) as store:
        await store.ping()
        assert (await store.memory_headroom()) is None  # maxmemory 0: unbounded
        full(own_server)
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            await store.ping()
        assert (await store.memory_headroom()) <= 0
        room_again(own_server)
        await store.ping()


async def test_a_full_redis_answers_503_never_200_and_the_same_group_is_called_once_with_room(
        aiohttp_client, own_server):
    provider, registry = RecordingProvider(), CollectorRegistry()
    store = RedisStore(own_server.url, key_prefix=fresh_prefix())
    app = create_app(make_config(), provider=provider, store=store, registry=registry)
    client = await aiohttp_client(app)
    assert (await client.get("/-/ready")).status == 200
    full(own_server)
    body = json.dumps(payload(alert(PAYMENTS), group_key='{}:{alertname="Full"}'))
    for _ in range(3):
        resp = await client.post("/alerts", data=body, headers=AUTH)
        assert resp.status == 503, await resp.text()
    ready = await client.get("/-/ready")
    assert ready.status == 503 and "store unavailable" in await ready.text()
    metrics = await (await client.get("/metrics")).text()
    assert "alert2voice_store_memory_headroom_bytes" in metrics
    assert provider.requests == []
    room_again(own_server)
    assert (await client.get("/-/ready")).status == 200
    resp = await client.post("/alerts", data=body, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["pages"][0]["result"] == "called"
    resp = await client.post("/alerts", data=body, headers=AUTH)
    assert (await resp.json())["pages"][0]["result"] == "duplicate"
    await app[DISPATCHER].settled()
    assert len(provider.requests) == 1


# ------------------------------------------------------------------------------------------------ SQLite


async def test_a_checkpoint_that_fails_is_logged_once_counted_and_retried_until_it_succeeds(
        tmp_path, caplog, monkeypatch):
    store = SQLiteStore(tmp_path / "a2v.db")
    await store.open()
    failing = True
    real = sqlite_store.checkpoint

    def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
        if failing:
            raise sqlite3.OperationalError("database or disk is full")
        return real(conn)

    monkeypatch.setattr(sqlite_store, "checkpoint", checkpoint)
    try:
        with caplog.at_level(logging.INFO, logger="alert2voice.store"):
            page = make_page("p1")
            assert await store.admit(page, page.claims, WINDOW, T0)
            await eventually(lambda: _async(store.checkpoint_failures >= 2), "two failed checkpoints", within=10)
            failed = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
            assert len(failed) == 1 and failed[0].levelno == logging.WARNING  # once per run of failures
            assert "disk is full" in failed[0].error
            failing = False  # retried without any write: the log goes into the database
            await eventually(lambda: _async(any("checkpointed again" in r.getMessage() for r in caplog.records)),
                             "a checkpoint that succeeds", within=10)
        wal = tmp_path / "a2v.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0  # truncated
    finally:
        await store.close()


async def _async(value: object) -> object:
    return value


async def test_the_checkpoint_failures_are_a_metric(aiohttp_client, tmp_path):
    store, registry = SQLiteStore(tmp_path / "a2v.db"), CollectorRegistry()
    app = create_app(make_config(), provider=RecordingProvider(), store=store, registry=registry)
    await aiohttp_client(app)
    store.checkpoint_failures = 3
    assert registry.get_sample_value("alert2voice_store_checkpoint_failures_total") == 3


# A real full filesystem: a small tmpfs, mounted where the test may (root, a mount namespace); skipped elsewhere.

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {exc}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True, timeout=10)


def fill(disk: Path, name: str = "filler") -> Path:
    """Fill the filesystem with one file, to the last byte; deleting it gives the space back."""
    filler = disk / name
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    return filler


async def test_sqlite_on_a_full_disk_is_not_ready_and_every_page_accepted_escalates_when_space_returns(
        aiohttp_client, small_disk):
    provider, registry = RecordingProvider(), CollectorRegistry()
    store = SQLiteStore(small_disk / "a2v.db")
    app = create_app(make_config(), provider=provider, store=store, registry=registry)
    client = await aiohttp_client(app)
    assert (await client.get("/-/ready")).status == 200
    accepted = set()

    async def send(n: int) -> int:
        body = json.dumps(payload(alert({**PAYMENTS, "instance": f"node{n}"}, summary="x" * 200),
                                  group_key=f'{{}}:{{n="{n}"}}'))
        resp = await client.post("/alerts", data=body, headers=AUTH)
        if resp.status == 200:
            accepted.add((await resp.json())["pages"][0]["page_key"])
        return resp.status

    for n in range(20):
        assert await send(n) == 200, n
    filler = fill(small_disk)
    statuses = [await send(n) for n in range(20, 60)]
    assert 503 in statuses and set(statuses) <= {200, 503}
    # A failed write drops the connection, and closing it may checkpoint and delete the log, freeing some:
    # filled again, nothing can be written, not even readiness's probe.
    again = fill(small_disk, "again")
    ready = await client.get("/-/ready")
    assert ready.status == 503 and "store unavailable" in await ready.text()
    filler.unlink()  # space returns
    again.unlink()
    await eventually(lambda: _status(client, "/-/ready", 200), "ready again", within=15)
    for n in range(60, 200):  # more than the disk held: the log is checkpointed and truncated as they come
        assert await send(n) == 200
    pages = {p.key: p for p in await store.recent(500)}
    assert accepted <= set(pages)
    assert (small_disk / "a2v.db-wal").stat().st_size < 1024 * 1024
    await app[DISPATCHER].settled()
    called = {r.correlation_id.split("-")[1] for r in provider.requests}
    for page in await store.recent(500):  # every page accepted was called, or waits for the throttle, with a time
        if page.key in accepted:
            assert page.key[:24] in called or page.due_at is not None, page
    assert called


async def _status(client, path: str, status: int) -> bool:
    return (await client.get(path)).status == status
