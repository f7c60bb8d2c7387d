"""The Store contract, run against every backend, and what only the SQLite store promises."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alert2voice.pages import Call, CallState, Page, PageState
from alert2voice.store import Store, StoreUnavailable
from alert2voice.store import sqlite as sqlite_module
from alert2voice.store.base import Conflict, Lease, OpenPage, StormBatch, Tier
from alert2voice.store.memory import MemoryStore
from alert2voice.store.redis import RedisStore
from alert2voice.store.sqlite import MIGRATIONS, SQLiteStore
from tests.redis_support import fresh_prefix, redis_server  # noqa: F401 (a fixture)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
LEASE = timedelta(seconds=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_call(attempt: int, state: CallState = CallState.QUEUED, *, key: str = "p", message_id: str | None = None,
              **kwargs) -> Call:
    return Call(attempt=attempt, correlation_id=f"{key}-{attempt}", idempotency_key=f"idem-{key}-{attempt}",
                contact="alice", number="+14155550101", step=0, round=0, created_at=at(attempt), state=state,
                message_id=message_id, **kwargs)


async def overwrite(store, page: Page) -> None:
    """put() the page over whatever the store holds under its key (as a writer that read it just now)."""
    stored = await store.get(page.key)
    page.version, page.epoch = (stored.version, stored.epoch) if stored is not None else (0, "")
    await store.put(page)


def make_page(key: str, *, route: str = "db", group_key: str = "{}:{alertname=\"Down\"}",
              state: PageState = PageState.ACTIVE, due_at: datetime | None = None,
              updated_at: datetime | None = None, received_at: datetime = T0,
              calls: list[Call] | None = None, **kwargs) -> Page:
    alert = {"status": "firing", "labels": {"alertname": "Down", "instance": key},
             "annotations": {"summary": "down <&> ünïcode"}, "startsAt": "2024-05-01T11:59:00Z"}
    return Page(key=key, route=route, group_key=group_key, received_at=received_at, alerts=[alert],
                group={"receiver": "voice", "groupLabels": {"alertname": "Down"}, "truncatedAlerts": 0},
                identities=[f"id-{key}"], claims=[f"claim-{key}"], severities=["critical"], state=state,
                calls=calls or [], due_at=due_at, updated_at=updated_at, **kwargs)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "redis":
        s: Store = RedisStore(request.getfixturevalue("redis_server").url, key_prefix=fresh_prefix())
    else:
        s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "state" / "a2v.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "state" / "a2v.db")
    await s.open()
    yield s
    await s.close()


def keys(pages: list[Page]) -> list[str]:
    return [p.key for p in pages]


# ---------------------------------------------------------------------------------------------- contract


async def test_ping_and_missing_page(store):
    await store.ping()
    assert await store.get("nope") is None


async def test_round_trip_keeps_every_field_and_type(store):
    calls = [
        make_call(1, CallState.NO_ANSWER, message_id="m-1", accepted_at=at(1.5), ended_at=at(30), tries=2, polls=1),
        make_call(2, CallState.ACKNOWLEDGED, message_id="m-2", accepted_at=at(61), ended_at=at(90.123456)),
        make_call(3, CallState.ACCEPTED, message_id="m-3", accepted_at=at(120)),
        make_call(4, CallState.FAILED, error="7003 invalid number"),
        make_call(5, CallState.QUEUED, kind="resolved"),
    ]
    page = make_page("p", calls=calls, state=PageState.RESOLVED, due_at=at(200), updated_at=at(150.000001),
                     resolved_at=at(150), step=1, round=2, attempts_in_step=1)
    await store.put(page)
    got = await store.get("p")
    assert got == page
    assert type(got.state) is PageState
    assert all(type(c.state) is CallState for c in got.calls)
    moments = [got.received_at, got.due_at, got.updated_at, got.resolved_at,
               *(m for c in got.calls for m in (c.created_at, c.accepted_at, c.ended_at) if m is not None)]
    assert all(isinstance(m, datetime) and m.utcoffset() == timedelta(0) for m in moments)
    assert got.calls[3].accepted_at is None and got.calls[4].message_id is None


async def test_pages_are_copied_in_and_out(store):
    page = make_page("p", due_at=T0)
    await store.put(page)
    page.state = PageState.EXHAUSTED
    got = await store.get("p")
    got.calls.append(make_call(1))
    assert await store.get("p") == make_page("p", due_at=T0)


async def test_put_replaces_and_indexes_new_calls(store):
    page = make_page("p", calls=[make_call(1)])
    await store.put(page)
    page.calls[0].state, page.calls[0].message_id = CallState.ACCEPTED, "m-1"
    page.calls.append(make_call(2))
    await store.put(page)
    assert (await store.get("p")).calls == page.calls
    assert await store.find_call(message_id="m-1") == "p"
    assert await store.find_call(correlation_id="p-2") == "p"


async def test_find_call_by_correlation_id_or_message_id(store):
    await overwrite(store, make_page("p", calls=[make_call(1, key="p", message_id="m-p1"), make_call(2, key="p")]))
    await overwrite(store, make_page("q", calls=[make_call(1, key="q", message_id="m-q1")]))
    assert await store.find_call(correlation_id="p-2") == "p"
    assert await store.find_call(message_id="m-q1") == "q"
    assert await store.find_call(correlation_id="p-1", message_id="m-q1") == "p"  # correlationId first
    assert await store.find_call(correlation_id="unknown", message_id="m-p1") == "p"
    assert await store.find_call(correlation_id="unknown") is None
    assert await store.find_call() is None


async def test_admit_saves_the_page_and_holds_its_claims(store):
    assert await store.admit(make_page("p", due_at=T0), ["a", "b"], WINDOW, T0)
    assert await store.get("p") == make_page("p", due_at=T0)
    # Every claim held: the other page is refused and not saved.
    assert not await store.admit(make_page("q", due_at=T0), ["b", "a"], WINDOW, at(10))
    assert await store.get("q") is None


async def test_admit_with_one_free_claim_holds_them_all(store):
    assert await store.admit(make_page("p"), ["a"], WINDOW, T0)
    assert await store.admit(make_page("q"), ["a", "b"], WINDOW, at(60))  # b is new
    # a was renewed until 60s + window by the second admission.
    assert not await store.admit(make_page("r"), ["a"], WINDOW, T0 + WINDOW)
    assert await store.admit(make_page("r"), ["a"], WINDOW, at(60) + WINDOW)


async def test_claims_expire_at_now_plus_window(store):
    assert await store.admit(make_page("p"), ["a"], WINDOW, T0)
    assert not await store.admit(make_page("q"), ["a"], WINDOW, T0 + WINDOW - timedelta(microseconds=1))
    assert await store.admit(make_page("q"), ["a"], WINDOW, T0 + WINDOW)


async def test_a_refused_admission_changes_nothing(store):
    assert await store.admit(make_page("p"), ["a"], WINDOW, T0)
    assert not await store.admit(make_page("q"), ["a"], WINDOW, at(60))  # must not renew a
    assert await store.admit(make_page("r"), ["a"], WINDOW, T0 + WINDOW)
    # Refused because page p is active: its free claim x must stay free.
    assert not await store.admit(make_page("p", state=PageState.RESOLVED), ["x"], WINDOW, at(1))
    assert (await store.get("p")).state is PageState.ACTIVE
    assert await store.admit(make_page("s"), ["x"], WINDOW, at(1))


async def test_an_active_page_is_never_admitted_again(store):
    assert await store.admit(make_page("p", due_at=T0), ["a"], WINDOW, T0)
    await store.release(["a"])
    assert not await store.admit(make_page("p", due_at=at(5)), ["a"], WINDOW, at(5))
    assert (await store.get("p")).due_at == T0


async def test_a_finished_page_can_be_admitted_again(store):
    assert await store.admit(make_page("p"), ["a"], WINDOW, T0)
    await overwrite(store, make_page("p", state=PageState.EXHAUSTED, calls=[make_call(1, CallState.NO_ANSWER)]))
    await store.release(["a"])
    assert await store.admit(make_page("p", due_at=at(5)), ["a"], WINDOW, at(5))
    assert await store.get("p") == make_page("p", due_at=at(5))


async def test_release_frees_claims_for_another_page(store):
    assert await store.admit(make_page("p"), ["a", "b"], WINDOW, T0)
    await store.release(["a", "b", "never-held"])
    assert await store.admit(make_page("q"), ["a", "b"], WINDOW, at(1))


async def test_concurrent_admissions_admit_once(store):
    results = await asyncio.gather(*(store.admit(make_page("p"), ["a"], WINDOW, T0) for _ in range(20)))
    assert sum(result is not None for result in results) == 1


async def test_by_group_returns_the_pages_whose_alerts_are_not_resolved(store):
    await overwrite(store, make_page("active"))
    await overwrite(store, make_page("answered", state=PageState.ANSWERED))
    await overwrite(store, make_page("resolved", state=PageState.RESOLVED, resolved_at=at(5), due_at=at(5)))
    await overwrite(store, make_page("answered-then-resolved", state=PageState.ANSWERED, resolved_at=at(5)))
    await overwrite(store, make_page("other-group", group_key="x"))
    await overwrite(store, make_page("other-route", route="web"))
    await overwrite(store, make_page("exhausted", state=PageState.EXHAUSTED))
    assert keys(await store.by_group("db", make_page("k").group_key)) == ["active", "answered", "exhausted"]
    assert keys(await store.by_group("web", make_page("k").group_key)) == ["other-route"]
    assert await store.by_group("nope", "x") == []


async def test_take_due_orders_by_due_time_and_respects_limit(store):
    await overwrite(store, make_page("late", due_at=at(20)))
    await overwrite(store, make_page("early", due_at=at(0)))
    await overwrite(store, make_page("middle", due_at=at(10)))
    await overwrite(store, make_page("future", due_at=at(100)))
    await overwrite(store, make_page("idle"))
    assert keys(await store.take_due(at(20), 2, LEASE, "me")) == ["early", "middle"]
    assert keys(await store.take_due(at(20), 10, LEASE, "other")) == ["late"]
    assert await store.take_due(at(20), 10, LEASE, "another") == []


async def test_take_due_passes_over_skipped_keys_without_leasing_them(store):
    for name, second in (("a", 0), ("b", 1), ("c", 2)):
        await overwrite(store, make_page(name, due_at=at(second)))
    assert keys(await store.take_due(at(20), 1, LEASE, "me", skip={"a"})) == ["b"]  # the limit counts taken pages only
    assert keys(await store.take_due(at(20), 10, LEASE, "other")) == ["a", "c"]  # "a" was never leased


async def test_a_leased_page_is_not_taken_again_until_the_lease_expires(store):
    await overwrite(store, make_page("p", due_at=T0))
    assert keys(await store.take_due(T0, 10, LEASE, "me")) == ["p"]
    assert await store.take_due(T0 + LEASE - timedelta(microseconds=1), 10, LEASE, "other") == []
    assert keys(await store.take_due(T0 + LEASE, 10, LEASE, "other")) == ["p"]


async def test_an_owner_takes_back_a_page_it_holds(store):
    # Its own lease: a page it admitted but could not start at once, or whose task died.
    await overwrite(store, make_page("p", due_at=T0))
    [first] = await store.take_due(T0, 10, LEASE, "me")
    [again] = await store.take_due(at(1), 10, LEASE, "me")
    assert again.version == first.version + 1


async def test_a_page_admitted_under_a_lease_is_held_for_its_owner(store):
    page = make_page("p", due_at=T0)
    assert await store.admit(page, ["c"], WINDOW, T0, lease=Lease("replica-a", T0 + LEASE))
    assert await store.take_due(at(1), 10, LEASE, "replica-b") == []
    await store.put(page, lease=Lease("replica-a", at(1) + LEASE))  # committed before a call is sent: still held
    assert await store.take_due(at(1) + LEASE - timedelta(microseconds=1), 10, LEASE, "replica-b") == []
    await store.put(page)  # done: released
    assert keys(await store.take_due(at(2), 10, LEASE, "replica-b")) == ["p"]


async def test_only_the_holder_renews_a_lease_and_only_while_it_holds_it(store):
    await overwrite(store, make_page("p", due_at=T0))
    [page] = await store.take_due(T0, 10, LEASE, "replica-a")
    assert not await store.renew("p", Lease("replica-b", at(1) + LEASE))
    assert await store.renew("p", Lease("replica-a", T0 + 2 * LEASE))
    assert await store.take_due(T0 + LEASE, 10, LEASE, "replica-b") == []  # the first lease would have ended
    assert (await store.get("p")).version == page.version  # renewing is not a write: no fencing change
    [taken] = await store.take_due(T0 + 2 * LEASE, 10, LEASE, "replica-b")
    assert not await store.renew("p", Lease("replica-a", T0 + 3 * LEASE))  # taken over
    await store.put(taken)
    assert not await store.renew("p", Lease("replica-b", T0 + 3 * LEASE))  # released by the write
    assert not await store.renew("nope", Lease("replica-a", T0 + 3 * LEASE))


async def test_put_releases_the_lease(store):
    await overwrite(store, make_page("p", due_at=T0))
    [page] = await store.take_due(T0, 10, LEASE, "me")
    await store.put(page)
    assert keys(await store.take_due(at(1), 10, LEASE, "me")) == ["p"]


async def test_concurrent_takers_never_share_a_page(store):
    for i in range(10):
        await overwrite(store, make_page(f"p{i}", due_at=at(i)))
    batches = await asyncio.gather(*(store.take_due(at(60), 3, LEASE, f"replica-{i}") for i in range(6)))
    taken = [k for batch in batches for k in keys(batch)]
    assert sorted(taken) == sorted(f"p{i}" for i in range(10))


async def test_next_due_is_the_earliest_due_time_even_when_leased(store):
    assert await store.next_due() is None
    await overwrite(store, make_page("idle"))
    assert await store.next_due() is None
    await overwrite(store, make_page("b", due_at=at(30.5)))
    await overwrite(store, make_page("a", due_at=at(10.25)))
    await store.take_due(at(20), 10, LEASE, "me")
    assert await store.next_due() == at(10.25)


async def test_recent_is_newest_first(store):
    await overwrite(store, make_page("old", updated_at=at(10)))
    await overwrite(store, make_page("never-updated", received_at=at(20)))
    await overwrite(store, make_page("new", updated_at=at(30)))
    await overwrite(store, make_page("middle", updated_at=at(15)))
    assert keys(await store.recent(10)) == ["new", "never-updated", "middle", "old"]
    assert keys(await store.recent(2)) == ["new", "never-updated"]


async def test_depth_counts_pages_with_work_due(store):
    assert await store.depth() == 0
    await overwrite(store, make_page("a", due_at=T0))
    await overwrite(store, make_page("b", due_at=at(100)))
    await overwrite(store, make_page("c", state=PageState.ANSWERED))
    await store.take_due(T0, 10, LEASE, "me")
    assert await store.depth() == 2


async def test_purge_forgets_old_finished_pages_and_their_calls(store):
    old = at(10)
    await overwrite(store, make_page("gone", state=PageState.ANSWERED, updated_at=old,
                              calls=[make_call(1, CallState.ANSWERED, key="gone", message_id="m-gone")]))
    await overwrite(store, make_page("gone-too", state=PageState.CANCELLED, received_at=old))
    await overwrite(store, make_page("active", updated_at=old, calls=[make_call(1, key="active")]))
    await overwrite(store, make_page("notice-due", state=PageState.RESOLVED, due_at=old, updated_at=old))
    await overwrite(store, make_page("recent", state=PageState.EXHAUSTED, updated_at=at(100)))
    assert await store.purge(at(100)) == 2
    assert await store.get("gone") is None and await store.get("gone-too") is None
    assert await store.find_call(correlation_id="gone-1") is None
    assert await store.find_call(message_id="m-gone") is None
    assert await store.find_call(correlation_id="active-1") == "active"
    assert sorted(keys(await store.recent(10))) == ["active", "notice-due", "recent"]
    assert await store.purge(at(100)) == 0


async def test_purge_drops_expired_claims(store):
    assert await store.admit(make_page("p"), ["a"], WINDOW, T0)
    await store.purge(T0 + WINDOW - timedelta(seconds=1))
    assert not await store.admit(make_page("q"), ["a"], WINDOW, at(1))
    await store.purge(T0 + WINDOW)
    # Proof that the claim row is gone: even a clock earlier than its expiry now finds it free.
    assert await store.admit(make_page("q"), ["a"], WINDOW, at(1))


async def test_seen_tells_whether_admit_would_refuse(store):
    assert not await store.seen("p", ["a"], T0)
    assert await store.admit(make_page("p"), ["a", "b"], WINDOW, T0)
    assert await store.seen("q", ["a", "b"], at(1))  # every claim held
    assert not await store.seen("q", ["a", "c"], at(1))  # c is free
    await store.release(["a", "b"])
    assert await store.seen("p", ["a"], at(1))  # p itself is active
    await overwrite(store, make_page("p", state=PageState.EXHAUSTED))
    assert not await store.seen("p", ["a"], at(1))
    assert await store.admit(make_page("q"), ["c"], WINDOW, at(1))
    assert not await store.seen("r", ["c"], at(1) + WINDOW)  # expired


async def test_look_answers_by_group_and_seen_in_one_operation(store):
    group = make_page("k").group_key
    assert await store.look("db", group, "p", ["a"], T0) == ([], False)
    assert await store.admit(make_page("p"), ["a", "b"], WINDOW, T0)
    await overwrite(store, make_page("gone", state=PageState.RESOLVED, resolved_at=at(1)))
    await overwrite(store, make_page("other-route", route="web"))
    p = [OpenPage("p", ("id-p",))]
    assert await store.look("db", group, "q", ["a", "b"], at(1)) == (p, True)  # every claim held
    assert await store.look("db", group, "q", ["a", "c"], at(1)) == (p, False)  # c is free
    assert await store.look("web", group, "q", ["a"], at(1)) == ([OpenPage("other-route", ("id-other-route",))], True)
    await store.release(["a", "b"])
    assert await store.look("db", group, "p", ["a"], at(1)) == (p, True)  # p itself is active
    assert await store.look("db", group, "q", ["a"], at(1)) == (p, False)
    assert await store.look("db", "x", "q", ["a"], at(1)) == ([], False)
    for key, claims, moment in (("p", ["a"], at(1)), ("q", ["c"], at(2)), ("r", ["b"], at(1) + WINDOW)):
        expected = (await store.by_group("db", group), await store.seen(key, claims, moment))
        assert await store.look("db", group, key, claims, moment) == expected


# ------------------------------------------------------------------------------ versions and leases


async def test_put_is_a_compare_and_set_on_the_version(store):
    page = make_page("p", due_at=T0)
    await store.put(page)
    assert page.version == 1 and (await store.get("p")).version == 1
    first, second = await store.get("p"), await store.get("p")
    first.step = 1
    await store.put(first)
    assert first.version == 2
    second.step = 2
    with pytest.raises(Conflict):
        await store.put(second)
    assert second.version == 1
    assert (await store.get("p")).step == 1  # the loser changed nothing
    again = await store.get("p")  # a lost race re-reads and applies its change again
    again.step = 2
    await store.put(again)
    assert (again.version, (await store.get("p")).step) == (3, 2)


async def test_put_over_a_stored_page_needs_its_version(store):
    await store.put(make_page("p"))
    with pytest.raises(Conflict):
        await store.put(make_page("p", state=PageState.EXHAUSTED))  # version 0: written blind
    assert (await store.get("p")).state is PageState.ACTIVE


async def test_put_of_a_page_that_is_not_stored_needs_version_0(store):
    stale = make_page("p")
    stale.version = 4  # read before the page was purged
    with pytest.raises(Conflict):
        await store.put(stale)
    assert await store.get("p") is None


async def test_admit_saves_version_1_and_a_new_incarnation_continues_the_versions(store):
    page = make_page("p")
    assert await store.admit(page, ["a"], WINDOW, T0)
    assert page.version == 1 and (await store.get("p")).version == 1
    old = await store.get("p")
    old.state = PageState.EXHAUSTED
    await store.put(old)
    await store.release(["a"])
    late = await store.get("p")  # a writer still holding the finished incarnation
    again = make_page("p", due_at=at(5))
    assert await store.admit(again, ["a"], WINDOW, at(5))
    assert again.version == 3 and (await store.get("p")).version == 3
    late.step = 4
    with pytest.raises(Conflict):
        await store.put(late)


async def test_taking_a_lease_bumps_the_version_so_an_earlier_reader_cannot_write(store):
    await overwrite(store, make_page("p", due_at=T0))
    reader = await store.get("p")
    [taken] = await store.take_due(T0, 10, LEASE, "replica-a")
    assert taken.version == reader.version + 1
    assert (await store.get("p")).version == taken.version
    with pytest.raises(Conflict):
        await store.put(reader)
    await store.put(taken)  # the holder writes, and so releases the lease
    assert taken.version == reader.version + 2


async def test_a_lease_passes_to_another_owner_only_when_it_ends_and_fences_the_first(store):
    await overwrite(store, make_page("p", due_at=T0))
    [first] = await store.take_due(T0, 10, LEASE, "replica-a")
    assert await store.take_due(at(1), 10, LEASE, "replica-b") == []
    [second] = await store.take_due(T0 + LEASE, 10, LEASE, "replica-b")  # replica-a paused past its lease
    assert second.version == first.version + 1
    first.step = 1
    with pytest.raises(Conflict):
        await store.put(first)  # its write would undo replica-b's work
    await store.put(second)
    assert (await store.get("p")).step == 0


# ---------------------------------------------------------------------------------------- shared limits

SECOND, MINUTE = timedelta(seconds=1), timedelta(minutes=1)
ALICE, BOB, CAROL, DAVE = "+14155550101", "+442071838750", "+14155550102", "+14155550103"


async def test_a_number_tier_counts_each_number_on_its_own(store):
    tiers = [Tier("number", 2, MINUTE)]
    assert await store.reserve_call(ALICE, at(0), tiers) is None
    assert await store.reserve_call(ALICE, at(10), tiers) is None
    assert await store.reserve_call(ALICE, at(20), tiers) == at(60)  # when the call at 0 leaves the window
    assert await store.reserve_call(BOB, at(20), tiers) is None
    assert await store.calls_within(ALICE, at(20), MINUTE) == [at(0), at(10)]  # the refused one not counted
    assert await store.reserve_call(ALICE, at(60), tiers) is None
    assert await store.calls_within(ALICE, at(60), MINUTE) == [at(10), at(60)]
    assert await store.calls_within(ALICE, at(60), 15 * SECOND) == [at(60)]


async def test_an_all_tier_counts_every_number(store):
    tiers = [Tier("all", 3, MINUTE)]
    for i, number in enumerate((ALICE, BOB, CAROL)):
        assert await store.reserve_call(number, at(i), tiers) is None
    assert await store.reserve_call(DAVE, at(3), tiers) == at(60)
    assert await store.calls_within(DAVE, at(3), MINUTE) == []


async def test_a_call_is_counted_only_when_every_tier_has_room(store):
    tiers = [Tier("number", 1, MINUTE), Tier("all", 2, 100 * SECOND)]
    assert await store.reserve_call(ALICE, at(0), tiers) is None
    assert await store.reserve_call(BOB, at(10), tiers) is None
    # Both tiers are full for Alice; the call fits once the later of the two has room.
    assert await store.reserve_call(ALICE, at(20), tiers) == at(100)
    assert await store.reserve_call(CAROL, at(20), tiers) == at(100)
    assert await store.calls_within(ALICE, at(20), MINUTE) == [at(0)]
    assert await store.calls_within(CAROL, at(20), MINUTE) == []
    assert await store.reserve_call(CAROL, at(100), tiers) is None


async def test_unreserve_gives_the_slot_back_to_every_tier(store):
    tiers = [Tier("number", 1, MINUTE), Tier("all", 1, MINUTE)]
    assert await store.reserve_call(ALICE, at(0), tiers) is None
    assert await store.reserve_call(BOB, at(5), tiers) == at(60)
    await store.unreserve_call(ALICE, at(0))  # the provider did not take that call
    await store.unreserve_call(ALICE, at(0))  # nothing left to give back: no change
    assert await store.calls_within(ALICE, at(5), MINUTE) == []
    assert await store.reserve_call(BOB, at(5), tiers) is None
    assert await store.calls_within(BOB, at(5), MINUTE) == [at(5)]


async def test_calls_at_the_same_instant_count_and_give_back_one_by_one(store):
    for _ in range(3):
        assert await store.reserve_call(ALICE, at(0), ()) is None  # no tiers: counted whatever was before
    await store.unreserve_call(ALICE, at(0))
    assert await store.calls_within(ALICE, at(0), MINUTE) == [at(0), at(0)]
    assert await store.reserve_call(ALICE, at(1), [Tier("number", 3, MINUTE)]) is None
    assert await store.reserve_call(ALICE, at(2), [Tier("number", 3, MINUTE)]) == at(60)


async def test_storm_pages_join_one_batch_and_one_of_them_leads_it(store):
    assert await store.storm_batch(ALICE) is None
    assert await store.storm_join(ALICE, "a", at(60)) == StormBatch(at(60), ["a"])
    assert await store.storm_join(ALICE, "b", at(90)) == StormBatch(at(60), ["a", "b"])  # released as opened
    assert await store.storm_join(ALICE, "a", at(90)) == StormBatch(at(60), ["a", "b"])
    assert not await store.storm_lead(ALICE, "x")  # not in the batch
    assert await store.storm_lead(ALICE, "b")
    assert not await store.storm_lead(ALICE, "a")  # led already
    assert await store.storm_batch(ALICE) == StormBatch(at(60), ["a", "b"], "b")
    assert await store.storm_batch(BOB) is None


async def test_a_new_storm_batch_opens_while_one_is_led_and_only_its_leader_ends_a_batch(store):
    await store.storm_join(ALICE, "a", at(60))
    assert await store.storm_lead(ALICE, "a")
    # The led batch's summary call is going out: a page arriving now starts the next batch.
    assert await store.storm_join(ALICE, "c", at(120)) == StormBatch(at(120), ["c"])
    await store.storm_end(ALICE, "a")  # the old leader ends its own batch, not the new one
    await store.storm_end(ALICE, "c")  # not a leader
    assert await store.storm_batch(ALICE) == StormBatch(at(120), ["c"])
    assert await store.storm_lead(ALICE, "c")
    await store.storm_end(ALICE, "c")
    assert await store.storm_batch(ALICE) is None


async def test_the_token_bucket_refills_with_time(store):
    now = T0.timestamp()
    assert [await store.take_token(now, 2.0, 2.0) for _ in range(2)] == [0.0, 0.0]  # a full bucket: the burst
    assert await store.take_token(now, 2.0, 2.0) == pytest.approx(0.5)  # nothing taken
    assert await store.take_token(now + 0.25, 2.0, 2.0) == pytest.approx(0.25)
    assert await store.take_token(now + 0.5, 2.0, 2.0) == 0.0
    assert await store.take_token(now + 0.5, 2.0, 2.0) == pytest.approx(0.5)
    assert [await store.take_token(now + 100, 2.0, 2.0) for _ in range(3)][:2] == [0.0, 0.0]  # never over burst


# ---------------------------------------------------------------------------------------------- SQLite only


async def test_pages_survive_a_restart(tmp_path):
    path = tmp_path / "a2v.db"
    first = SQLiteStore(path)
    await first.open()
    page = make_page("p", due_at=T0, calls=[make_call(1, CallState.ACCEPTED, message_id="m-1")])
    assert await first.admit(page, ["a"], WINDOW, T0)
    await first.close()
    await first.close()

    second = SQLiteStore(path)
    await second.open()
    try:
        assert await second.get("p") == page
        assert await second.next_due() == T0
        assert await second.find_call(message_id="m-1") == "p"
        assert not await second.admit(make_page("q"), ["a"], WINDOW, at(1))
        assert keys(await second.take_due(T0, 10, LEASE, "me")) == ["p"]
    finally:
        await second.close()


async def test_a_lease_survives_a_restart(tmp_path):
    path = tmp_path / "a2v.db"
    first = SQLiteStore(path)
    await first.open()
    await overwrite(first, make_page("p", due_at=T0))
    await first.take_due(T0, 10, LEASE, "me")
    await first.close()
    second = SQLiteStore(path)
    await second.open()
    try:
        assert await second.take_due(at(1), 10, LEASE, "restarted") == []  # a new process is a new owner
        assert keys(await second.take_due(T0 + LEASE, 10, LEASE, "restarted")) == ["p"]
    finally:
        await second.close()


async def test_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        store = SQLiteStore(tmp_path / "new" / "dir" / "a2v.db")
        await store.open()
        await overwrite(store, make_page("p"))
    finally:
        os.umask(old)
    try:
        for name in ("a2v.db", "a2v.db-wal", "a2v.db-shm"):
            assert stat.S_IMODE(os.stat(tmp_path / "new" / "dir" / name).st_mode) == 0o600, name
    finally:
        await store.close()


async def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "a2v.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


async def test_the_schema_version_is_recorded(sqlite_store):
    with sqlite3.connect(sqlite_store.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert {"pages", "calls", "claims"} <= tables


async def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "a2v.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match=rf"schema version {len(MIGRATIONS) + 1} is newer than this "
                                               rf"alert2voice supports \({len(MIGRATIONS)}\); upgrade alert2voice"):
        await store.open()
    await store.close()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "a2v.db"
    path.write_bytes(b"this is not sqlite" * 100)
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match="open failed"):
        await store.open()


async def test_a_closed_store_is_unavailable(sqlite_store):
    await sqlite_store.close()
    with pytest.raises(StoreUnavailable, match="not open"):
        await sqlite_store.get("p")


async def test_recovers_when_the_directory_comes_back(tmp_path):
    state = tmp_path / "state"
    store = SQLiteStore(state / "a2v.db")
    await store.open()
    try:
        await overwrite(store, make_page("p", due_at=T0))
        # Root ignores file modes, so break the path itself: the directory becomes a plain file.
        state.rename(tmp_path / "moved")
        state.write_text("not a directory")
        with pytest.raises(StoreUnavailable, match="put failed"):
            await store.put(make_page("q"))
        with pytest.raises(StoreUnavailable, match="ping failed"):
            await store.ping()
        state.unlink()
        (tmp_path / "moved").rename(state)
        await overwrite(store, make_page("q"))
        assert await store.get("p") == make_page("p", due_at=T0)
        assert keys(await store.take_due(T0, 10, LEASE, "me")) == ["p"]
    finally:
        await store.close()


async def test_recovers_from_a_read_only_connection(sqlite_store):
    sqlite_store._conn.execute("PRAGMA query_only = ON")
    page = make_page("secret-page-key")
    with pytest.raises(StoreUnavailable, match="put failed: attempt to write a readonly database") as info:
        await sqlite_store.put(page)
    assert "secret-page-key" not in str(info.value) and "Down" not in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    await sqlite_store.put(page)
    assert await sqlite_store.get("secret-page-key") == page


async def test_recovers_from_a_full_disk(sqlite_store):
    conn = sqlite_store._conn
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    big = make_page("p")
    big.group["blob"] = "x" * 200_000
    with pytest.raises(StoreUnavailable, match="admit failed: database or disk is full"):
        await sqlite_store.admit(big, ["a"], WINDOW, T0)
    # Nothing of the failed transaction remains.
    assert await sqlite_store.get("p") is None
    assert await sqlite_store.admit(big, ["a"], WINDOW, T0)


async def test_recovers_from_a_closed_connection(sqlite_store):
    sqlite_store._conn.close()
    with pytest.raises(StoreUnavailable, match="depth failed"):
        await sqlite_store.depth()
    assert await sqlite_store.depth() == 0


async def test_a_deleted_database_file_is_not_written_to(sqlite_store):
    await sqlite_store.put(make_page("p"))
    os.unlink(sqlite_store.path)
    # The connection would happily write into the unlinked file, and lose it at the next restart.
    with pytest.raises(StoreUnavailable, match="put failed"):
        await sqlite_store.put(make_page("q"))
    await sqlite_store.put(make_page("q"))
    assert await sqlite_store.get("q") == make_page("q")
    assert stat.S_IMODE(os.stat(sqlite_store.path).st_mode) == 0o600


def _wal_size(store: SQLiteStore) -> int:
    return Path(f"{store.path}-wal").stat().st_size


async def _wal_after(store: SQLiteStore, prefix: str, pages: int = 40) -> int:
    for i in range(pages):
        await overwrite(store, make_page(f"{prefix}{i}", due_at=T0))
    return _wal_size(store)


@pytest.mark.parametrize("advance, starts_over", [
    (0.0, False),  # within CHECKPOINT_IDLE of the last checkpoint: none yet, the WAL grows on
    (0.3, True),   # idle past CHECKPOINT_IDLE: the writer checkpoints after its next commit
    (1.0, True),   # past CHECKPOINT_EVERY: checkpointed even though writes never paused
])
async def test_the_writer_checkpoints_and_the_wal_starts_over(tmp_path, monkeypatch, advance, starts_over):
    # Commits never copy the WAL into the database themselves (no autocheckpoint). The writer does, on
    # its own connection between two transactions, and truncates it, so the file stops growing.
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_AT", 1 << 40)  # not by its size, here
    now = [100.0]
    store = SQLiteStore(tmp_path / "a2v.db", monotonic=lambda: now[0])
    await store.open()
    try:
        first = await _wal_after(store, "a")
        now[0] += advance
        await overwrite(store, make_page("tick", due_at=T0))  # the commit after which the writer looks
        second = await _wal_after(store, "b")
        # Started over, the second batch overwrites the first one's frames; else it is appended after them.
        assert (second < 1.5 * first) is starts_over, (first, second)
        assert len(await store.take_due(T0, 1000, LEASE, "me")) == 81  # every page is there either way
    finally:
        await store.close()


async def test_a_log_past_checkpoint_at_is_checkpointed_at_once_though_writes_never_pause(tmp_path, monkeypatch):
    # A burst of commits within CHECKPOINT_IDLE grew the log by megabytes in a tenth of a second, past what a
    # small disk holds; then no checkpoint could copy it into a database that had no room left to grow.
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_AT", 64 * 1024)
    store = SQLiteStore(tmp_path / "a2v.db", monotonic=lambda: 100.0)  # the clock never moves
    await store.open()
    try:
        largest = max([await _wal_after(store, f"r{n}-", pages=5) for n in range(20)])
        assert largest < 64 * 1024 + 64 * 1024, largest  # at most one batch's frames past the threshold
        assert len(await store.take_due(T0, 1000, LEASE, "me")) == 100
    finally:
        await store.close()


async def test_purge_works_through_many_rows_in_chunks(sqlite_store, monkeypatch):
    import alert2voice.store.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "PURGE_CHUNK", 3)
    old = at(10)
    for i in range(8):
        page = make_page(f"done{i}", state=PageState.ANSWERED, updated_at=old, group_key=f"g{i % 2}")
        page.resolved_at = None
        assert await sqlite_store.admit(page, [f"c{i}a", f"c{i}b"], WINDOW, T0)
    await sqlite_store.put(make_page("open", updated_at=old, group_key="g0"))
    assert await sqlite_store.purge(T0 + WINDOW) == 8  # three operations of at most 3 pages and 3 claims
    assert keys(await sqlite_store.recent(100)) == ["open"]
    assert keys(await sqlite_store.by_group("db", "g0")) == ["open"]  # the mirror forgot the purged pages
    assert await sqlite_store.admit(make_page("again"), ["c0a", "c7b"], WINDOW, at(1))  # claims gone too


async def test_the_sqlite_mirror_changes_only_on_the_event_loop_thread(tmp_path, monkeypatch):
    # seen() and by_group() iterate the mirror on the loop's thread; the writer thread must not change it.
    store = SQLiteStore(tmp_path / "a2v.db")
    await store.open()
    try:
        threads: set[int] = set()
        mirror_page = store._mirror_page

        def spied(page: Page, *rest):
            def record(change):
                def apply() -> None:
                    threads.add(threading.get_ident())
                    change()
                return apply
            return [record(change) for change in mirror_page(page, *rest)]

        monkeypatch.setattr(store, "_mirror_page", spied)
        await asyncio.gather(*(store.put(make_page(f"p{i}")) for i in range(20)))
        assert threads == {threading.get_ident()}
        assert len(await store.by_group("db", "{}:{alertname=\"Down\"}")) == 20  # applied before put() returned
    finally:
        await store.close()


# -------------------------------------------------------------------------------------- heartbeats (contract)


async def test_a_heartbeat_never_seen_is_not_in_beats(store):
    assert await store.beats() == {}


async def test_beat_keeps_the_latest_last_seen_time(store):
    await store.beat("watchdog", at(10))
    await store.beat("watchdog", at(5))  # a late refresh does not move it back
    await store.beat("cron", at(7.25))
    assert await store.beats() == {"watchdog": at(10), "cron": at(7.25)}
    await store.beat("watchdog", at(12.5))
    assert (await store.beats())["watchdog"] == at(12.5)


async def test_concurrent_beats_keep_the_latest(store):
    await asyncio.gather(*(store.beat("watchdog", at(s)) for s in (3, 9, 1, 8, 9, 2)))
    assert await store.beats() == {"watchdog": at(9)}


async def test_last_seen_times_survive_a_restart(tmp_path):
    path = tmp_path / "a2v.db"
    first = SQLiteStore(path)
    await first.open()
    await first.beat("watchdog", at(42))
    await first.close()
    second = SQLiteStore(path)
    await second.open()
    try:
        assert await second.beats() == {"watchdog": at(42)}
    finally:
        await second.close()


async def test_a_database_from_before_heartbeats_is_migrated(tmp_path):
    path = tmp_path / "a2v.db"
    conn = sqlite3.connect(path)
    for statement in (s for migration in MIGRATIONS[:2] for s in migration):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.beat("watchdog", at(1))
        assert await store.beats() == {"watchdog": at(1)}
    finally:
        await store.close()


async def test_a_page_admitted_again_forgets_its_earlier_incarnations_call_ids(store):
    # The earlier incarnation ended with its "resolved" call still queued; the same alerts fire again.
    first = make_page("p", due_at=T0, calls=[make_call(1, CallState.ANSWERED, message_id="m-1"),
                                             make_call(2, CallState.QUEUED)])
    assert await store.admit(first, ["c"], WINDOW, T0)
    first.state, first.resolved_at = PageState.ANSWERED, T0
    await store.put(first)
    await store.release(["c"])
    again = make_page("p", due_at=at(60), calls=[make_call(1, key="p-again")])
    assert await store.admit(again, ["c"], WINDOW, at(60))
    for old in ("p-1", "p-2"):
        assert await store.find_call(correlation_id=old) is None, old
    assert await store.find_call(message_id="m-1") is None
    assert await store.find_call(correlation_id="p-again-1") == "p"


async def test_a_database_from_before_the_lean_rows_keeps_its_call_ids_and_claims(tmp_path):
    # Schema 4: calls and claims were rowid tables beside an index of their key; migration 5 rebuilds them.
    path = tmp_path / "a2v.db"
    old = SQLiteStore(path)
    await old.open()
    assert await old.admit(make_page("p", due_at=T0, calls=[make_call(1, message_id="m-1")]), ["c"], WINDOW, T0)
    await old.close()
    conn = sqlite3.connect(path)
    conn.executescript("""
        DROP TABLE calls; CREATE TABLE calls (id TEXT PRIMARY KEY, page_key TEXT NOT NULL
            REFERENCES pages (key) ON DELETE CASCADE);
        CREATE INDEX calls_page ON calls (page_key);
        INSERT INTO calls VALUES ('p-1', 'p'), ('m-1', 'p');
        DROP TABLE claims; CREATE TABLE claims (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
        CREATE INDEX claims_expiry ON claims (expires_at);
        CREATE INDEX pages_group ON pages (route, group_key);
        PRAGMA user_version = 4;""")
    conn.execute("INSERT INTO claims VALUES ('c', ?)", ((T0 + WINDOW).timestamp(),))
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.find_call(message_id="m-1") == "p"
        assert await store.seen("q", ["c"], at(1))  # the claim still holds
        assert not await store.admit(make_page("q"), ["c"], WINDOW, at(1))
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert {row[1] for row in conn.execute("PRAGMA index_list(pages)")} == {
        "sqlite_autoindex_pages_1", "pages_due", "pages_updated"}
    conn.close()


async def test_a_page_write_rewrites_only_what_changed(tmp_path, monkeypatch):
    # Counted in write-ahead log frames (one per b-tree page written), with no checkpoint meanwhile: a write that
    # changes a page's times and state rewrites its row and the two indexes queries read (due, updated), not
    # its call ids nor an index of its group.
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_IDLE", 3600.0)
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 3600.0)
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_AT", 1 << 40)
    store = SQLiteStore(tmp_path / "a2v.db")
    await store.open()
    try:
        for i in range(100):  # indexes deeper than one b-tree page
            key = f"bg{i:03d}"
            assert await store.admit(make_page(key, due_at=at(i), calls=[make_call(1, key=key)]), [key], WINDOW, T0)

        def frames() -> int:
            return (tmp_path / "a2v.db-wal").stat().st_size // (4096 + 24)

        page = make_page("p", due_at=T0, calls=[make_call(1)])
        before = frames()
        assert await store.admit(page, ["c"], WINDOW, T0)
        admitted = frames()
        page.due_at, page.updated_at, page.calls[0].message_id = at(120), at(1), "m-1"
        await store.put(page)  # the call accepted: one new id
        accepted = frames()
        page.updated_at = at(2)
        await store.put(page)
        # Before: 13, 10 and 5 (an index of groups, call ids and claims beside a rowid table each, every id rewritten).
        written = (admitted - before, accepted - admitted, frames() - accepted)
        assert written[0] <= 10 and written[1] <= 5 and written[2] <= 3, written
    finally:
        await store.close()
