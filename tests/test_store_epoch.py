"""The Redis store's epoch: a page read before Redis lost its data is never written back, whatever its version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alert2voice.pages import PageState
from alert2voice.store.base import Conflict, Lease
from alert2voice.store.codec import dump_page, load_page
from tests.redis_support import opened, redis_server_in
from tests.test_store import T0, WINDOW, at, make_page


async def test_a_writer_from_before_a_data_loss_cannot_win(tmp_path: Path):
    with redis_server_in(tmp_path / "redis") as server:
        async with opened(server) as store:
            assert await store.admit(make_page("p"), ["a"], WINDOW, T0)
            await store.put(await store.get("p"))
            stale = await store.get("p")  # version 2, read before the loss
            assert stale.version == 2 and stale.epoch

            server.client().flushall()  # Redis lost everything: versions start over
            assert await store.admit(make_page("p"), ["a"], WINDOW, at(1))
            await store.put(await store.get("p"))
            fresh = await store.get("p")
            assert fresh.version == stale.version and fresh.epoch != stale.epoch

            stale.state = PageState.ACKNOWLEDGED
            with pytest.raises(Conflict):
                await store.put(stale)
            assert await store.get("p") == fresh  # unchanged
            await store.put(fresh)  # a writer that read after the loss writes as ever
            assert (await store.get("p")).version == 3


async def test_a_lease_read_before_a_data_loss_is_not_renewed_even_by_its_owner(tmp_path: Path):
    with redis_server_in(tmp_path / "redis") as server:
        async with opened(server) as store:
            assert await store.admit(make_page("p"), ["a"], WINDOW, T0, Lease("r1", at(60)))
            stale = await store.get("p")
            assert await store.renew("p", Lease("r1", at(70), stale.epoch))

            server.client().flushall()
            assert await store.admit(make_page("p"), ["a"], WINDOW, at(1), Lease("r1", at(61)))  # r1 again
            assert not await store.renew("p", Lease("r1", at(80), stale.epoch))
            assert await store.renew("p", Lease("r1", at(80)))  # no epoch given: the owner alone decides
            assert await store.renew("p", Lease("r1", at(90), (await store.get("p")).epoch))


async def test_the_epoch_is_made_at_open_and_kept_while_redis_keeps_its_data(tmp_path: Path):
    with redis_server_in(tmp_path / "redis") as server:
        async with opened(server) as store:
            epoch = server.client().get(store.keys.epoch)
            assert epoch
            assert await store.admit(make_page("p"), ["a"], WINDOW, T0)
            assert (await store.get("p")).epoch == epoch
        async with opened(server, key_prefix=store.keys.prefix) as again:  # another replica, or a restart
            assert server.client().get(again.keys.epoch) == epoch
            page = await again.get("p")
            await again.put(page)
            assert (await again.get("p")).epoch == epoch


async def test_a_page_stored_before_epochs_is_written_back(tmp_path: Path):
    with redis_server_in(tmp_path / "redis") as server:
        async with opened(server) as store:
            assert await store.admit(make_page("p"), ["a"], WINDOW, T0)
            server.client().hdel(store.keys.page("p"), "e")  # as an older alert2voice left it
            page = await store.get("p")
            assert page.epoch == ""
            await store.put(page)
            assert (await store.get("p")).epoch == server.client().get(store.keys.epoch)


def test_the_page_json_leaves_the_epoch_out():
    # A replica of the version before epochs reads the same JSON during a rolling update: Page(**d) would refuse it.
    page = make_page("p")
    page.epoch = "e1"
    assert "epoch" not in json.loads(dump_page(page))
    assert load_page(dump_page(page), 3, "e2").epoch == "e2"
