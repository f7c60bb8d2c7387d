"""store.replicas_ack: a 200 only once Redis replicas have what it promises (WAIT), so a failover keeps it.

Against real redis-server processes: a master and a replica (`--replicaof`), and a Sentinel that promotes
the replica when the master is killed (`kill -9`).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alert2voice.config_file import ConfigError
from alert2voice.provider.fake import RecordingProvider
from alert2voice.store import NotReplicated, open_store
from alert2voice.store.redis import RedisStore
from alert2voice.web import create_app
from tests.e2e_support import LOOPBACK, eventually
from tests.harness import JSON_AUTH as AUTH
from tests.redis_support import fresh_prefix
from tests.replication_support import master_and_replica, master_of, replication, wait_until, watched
from tests.support import PAYMENTS, alert, make_config, payload
from tests.test_store import T0, WINDOW, make_page

WAIT = 1.0  # store.replicas_ack_timeout in these tests, seconds: the default, room for a loaded machine


def webhook(n: int) -> str:
    """A webhook of its own group and alert: one new page."""
    return json.dumps(payload(alert({**PAYMENTS, "instance": f"node{n}:9100"}), group_key=f'{{}}:{{n="{n}"}}'))


REDIS = "backend: redis, url: 'redis://127.0.0.1:6379/0'"


def store_config(section: str):
    return make_config(**{"store: {backend: memory}": "store: {" + section + "}"})


@pytest.mark.parametrize(("section", "error"), [
    ("backend: memory, replicas_ack: 1", "store.replicas_ack is for backend redis; backend memory has no replicas"),
    (REDIS + ", replicas_ack: -1", "store.replicas_ack: Input should be greater than or equal to 0"),
    (REDIS + ", replicas_ack: 1, replicas_ack_timeout: 0s",
     "store.replicas_ack_timeout: must be between 10ms and 10s: the webhook waits for it"),
    (REDIS + ", replicas_ack: 1, replicas_ack_timeout: 1m",
     "store.replicas_ack_timeout: must be between 10ms and 10s: the webhook waits for it"),
])
def test_replicas_ack_settings_are_checked_naming_the_key(section, error):
    with pytest.raises(ConfigError, match=re.escape(error)):
        store_config(section)


def test_the_store_gets_replicas_ack_from_the_config():
    store = open_store(store_config(REDIS + ", replicas_ack: 2, replicas_ack_timeout: 500ms"))
    assert (store.replicas_ack, store.replicas_ack_timeout) == (2, 0.5)
    default = open_store(store_config(REDIS))
    assert (default.replicas_ack, default.replicas_ack_timeout) == (0, 1.0)


@pytest.fixture
def pair(tmp_path: Path):
    with master_and_replica(tmp_path) as (master, replica, _):
        yield master, replica


async def test_replicated_waits_for_a_write_made_on_any_connection(pair):
    master, replica = pair
    prefix = fresh_prefix()
    other = RedisStore(master.url, key_prefix=prefix)  # another alert2voice replica, which admitted the page
    store = RedisStore(master.url, key_prefix=prefix, replicas_ack=1, replicas_ack_timeout=WAIT)
    await other.open()
    await store.open()
    try:
        page = make_page("p1")
        assert await other.admit(page, page.claims, WINDOW, T0)
        await store.replicated()  # the replica streams: acknowledged at once
        replica.pause()
        try:
            second = make_page("p2")
            assert await other.admit(second, second.claims, WINDOW, T0)
            # A bare WAIT on this store's connections would count the replica: they wrote nothing it lacks.
            assert await store.seen(second.key, second.claims, T0)
            with pytest.raises(NotReplicated, match=r"^store: 0 of 1 replicas acknowledged within 1s$"):
                await store.replicated()
        finally:
            replica.resume()
        await store.replicated()
        client = replica.client()
        try:
            assert client.exists(f"{prefix}page:{second.key}")
        finally:
            client.close()
    finally:
        await store.close()
        await other.close()


async def test_without_replicas_ack_nothing_waits_and_nothing_is_asked():
    store = RedisStore(f"redis://{LOOPBACK}:1/0")  # never opened: any round trip would raise StoreUnavailable
    await store.replicated()


async def test_more_replicas_asked_than_there_are_is_refused_naming_the_counts(pair):
    master, _ = pair
    store = RedisStore(master.url, key_prefix=fresh_prefix(), replicas_ack=2, replicas_ack_timeout=WAIT)
    await store.open()
    try:
        with pytest.raises(NotReplicated, match=r"1 of 2 replicas acknowledged within 1s"):
            await store.replicated()
    finally:
        await store.close()


async def test_a_stalled_replica_makes_alerts_answer_503_and_the_resend_is_called_once(aiohttp_client, pair):
    master, replica = pair
    provider, registry = RecordingProvider(), CollectorRegistry()
    store = RedisStore(master.url, key_prefix=fresh_prefix(), replicas_ack=1, replicas_ack_timeout=WAIT)
    client = await aiohttp_client(create_app(make_config(), provider=provider, store=store, registry=registry))
    resp = await client.post("/alerts", data=webhook(1), headers=AUTH)
    assert resp.status == 200 and (await resp.json())["pages"][0]["result"] == "called"
    replica.pause()
    try:
        for _ in range(2):  # the admit, then Alertmanager's retry (a duplicate of an admit no replica has)
            resp = await client.post("/alerts", data=webhook(2), headers=AUTH)
            assert resp.status == 503
            assert (await resp.json())["error"] == ("store unavailable, retry later "
                                                    "(store: 0 of 1 replicas acknowledged within 1s)")
    finally:
        replica.resume()
    resp = await client.post("/alerts", data=webhook(2), headers=AUTH)
    assert resp.status == 200 and (await resp.json())["pages"][0]["result"] == "duplicate"
    # The page the first try admitted was called from the master at once; the retries were duplicates of it.
    page = await store.get((await resp.json())["pages"][0]["page_key"])
    assert page is not None and len(page.calls) == 1
    await eventually(lambda: asyncio.sleep(0, len(provider.requests) == 2), "both pages' calls")
    assert len({r.correlation_id for r in provider.requests}) == 2
    metrics = await (await client.get("/metrics")).text()
    assert "alert2voice_store_replication_timeouts_total 2.0" in metrics
    assert 'alert2voice_webhooks_total{result="unavailable"} 2.0' in metrics


async def failover(aiohttp_client, directory: Path, replicas_ack: int, *, before: int = 3,
                   during: int = 4) -> dict[str, int]:
    """Pages sent to /alerts before and while the replica falls behind, the master killed (`kill -9`) and the
    replica promoted by Sentinel: how many were answered 200, 503, and answered 200 yet missing afterwards."""
    with master_and_replica(directory, linked=True) as (master, replica, link), \
            watched(master, directory / "sentinel") as sentinel:
        assert link is not None
        prefix = fresh_prefix()
        store = RedisStore(f"redis+sentinel://{LOOPBACK}:{sentinel}/mymaster/0", key_prefix=prefix,
                           replicas_ack=replicas_ack, replicas_ack_timeout=WAIT)
        # A short grace: at the end, the work in flight when the master died gives up sooner.
        config = make_config(**{"max_body_bytes: 64KiB}": "max_body_bytes: 64KiB, shutdown_grace: 1s}"})
        client = await aiohttp_client(create_app(config, provider=RecordingProvider(), store=store,
                                                 registry=CollectorRegistry()))
        answered: list[str] = []
        refused = 0

        async def send(n: int) -> None:
            nonlocal refused
            resp = await client.post("/alerts", data=webhook(n), headers=AUTH)
            if resp.status == 200:
                answered.append((await resp.json())["pages"][0]["page_key"])
            else:
                assert resp.status == 503, await resp.text()
                refused += 1

        for n in range(before):
            await send(n)
        link.hold()  # the replica falls behind: what the master sends now reaches it only if released
        for n in range(before, before + during):
            await send(n)
        master.kill()
        wait_until(lambda: master_of(sentinel) == replica.port and replication(replica)["role"] == "master",
                   "Sentinel to promote the replica")
        promoted = replica.client()
        try:
            lost = sum(1 for key in answered if not promoted.exists(f"{prefix}page:{key}"))
        finally:
            promoted.close()
        await client.close()
        return {"answered": len(answered), "refused": refused, "lost": lost}


async def test_a_failover_loses_no_page_answered_200_with_replicas_ack_1(aiohttp_client, tmp_path):
    found = await failover(aiohttp_client, tmp_path, replicas_ack=1)
    assert found == {"answered": 3, "refused": 4, "lost": 0}


async def test_a_failover_loses_pages_answered_200_without_replicas_ack(aiohttp_client, tmp_path):
    # What replicas_ack guards against: Redis replicates asynchronously, so a 200 can outrun the replica.
    found = await failover(aiohttp_client, tmp_path, replicas_ack=0)
    # Every page answered after the replica fell behind is lost, and sometimes one answered just before (its
    # write not yet forwarded when the link was held).
    assert found["answered"] == 7 and found["refused"] == 0 and 4 <= found["lost"] <= 7, found

