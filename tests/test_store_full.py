"""A store that cannot take a write: Redis at maxmemory with noeviction, SQLite's disk full.

Nothing is answered 200 that was not stored, /-/ready says so, and the service recovers by itself when
room returns: the page Alertmanager sends again is admitted and called once.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alert2voice.provider.fake import RecordingProvider
from alert2voice.store import StoreUnavailable
from alert2voice.store.redis import RedisStore
from alert2voice.store.sqlite import SQLiteStore
from alert2voice.web import create_app
from alert2voice.web.keys import DISPATCHER
from tests.redis_support import RedisServer, fresh_prefix, opened, redis_server_in
from tests.support import PAYMENTS, alert, make_config, payload
from tests.test_store import T0, WINDOW, make_page

AUTH = {"Authorization": "Bearer tok-one-secret", "Content-Type": "application/json"}


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


def _cap(store: SQLiteStore, pages: int) -> None:
    """SQLITE_FULL without a small filesystem: the database may not grow beyond its pages now + `pages`."""
    db = store._db  # noqa: SLF001 (the test's lever on the connection)
    assert db is not None
    count = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {count + pages}")


async def test_a_full_sqlite_database_is_not_ready_and_recovers_by_itself(tmp_path):
    store = SQLiteStore(tmp_path / "a2v.db")
    await store.open()
    try:
        await store.ping()
        _cap(store, 0)
        admitted = []
        with pytest.raises(StoreUnavailable):
            for n in range(200):
                page = make_page(f"p{n}", group_key=f"{{}}:{{n=\"{n}{'x' * 4000}\"}}")
                await store.admit(page, page.claims, WINDOW, T0)
                admitted.append(page.key)
        with pytest.raises(StoreUnavailable):
            await store.ping()  # a write probe: the store cannot take a write
        store._db.execute("PRAGMA max_page_count = 1073741823")  # noqa: SLF001 (room again)
        await store.ping()
        for key in admitted:
            assert await store.get(key) is not None
    finally:
        await store.close()


async def test_a_checkpoint_that_fails_is_logged_and_counted(tmp_path, caplog, monkeypatch):
    store = SQLiteStore(tmp_path / "a2v.db")
    await store.open()
    try:
        def refuse(*args: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(store, "_run_checkpoint", refuse)
        with caplog.at_level(logging.WARNING, logger="alert2voice.store"):
            assert not await store.checkpoint()
        assert any("checkpoint" in r.getMessage() for r in caplog.records)
        assert store.checkpoint_failures == 1
    finally:
        await store.close()
