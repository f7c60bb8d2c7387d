"""The store's rules on their own (store/rules.py): the pure functions every backend applies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alert2voice.store import redis_scripts, rules
from alert2voice.store.base import Lease, StormBatch, Tier

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_token_is_there_exactly_when_it_has_refilled():
    bucket, wait = rules.take_token(None, NOW, 10.0, 1.0)
    assert wait == 0.0  # a bucket never used is full
    bucket, wait = rules.take_token(bucket, NOW + 0.0999, 10.0, 1.0)
    assert wait == pytest.approx(0.0001, abs=1e-6)  # not yet: 0.999 of a token is not one
    bucket, wait = rules.take_token(bucket, NOW + 0.0999 + wait, 10.0, 1.0)
    assert wait == 0.0  # exactly when it said


@settings(max_examples=300, deadline=None)
@given(start=st.floats(1.6e9, 2.0e9), rate=st.floats(0.1, 1000.0),
       steps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=20))
def test_a_try_made_exactly_after_the_wait_takes_a_token(start, rate, steps):
    burst, now = max(1.0, rate), start
    bucket: rules.Bucket | None = None
    for step in steps:
        now += step
        bucket, wait = rules.take_token(bucket, now, rate, burst)
        if wait:
            assert wait > 0
            assert rules.take_token(bucket, now + wait, rate, burst)[1] == 0.0
        assert 0.0 <= bucket.tokens <= burst


def test_the_lua_bucket_gets_its_numbers_from_the_rules():
    assert "$" not in redis_scripts.RATE_LIMIT
    assert f"1 - rate * {rules.TOKEN_EARLY!r} then" in redis_scripts.RATE_LIMIT


def test_admit_refuses_an_active_page_or_one_whose_claims_are_all_held():
    assert rules.would_refuse(True, [None], at(0))
    assert rules.would_refuse(False, [at(300), at(1)], at(0))
    assert not rules.would_refuse(False, [at(300), at(0)], at(0))  # a claim expiring now is free
    assert not rules.would_refuse(False, [at(300), None], at(0))
    assert rules.would_refuse(False, [], at(0))  # no claims: nothing to hold, nothing admitted


def test_a_page_is_purged_once_finished_and_older_than_the_cutoff():
    assert rules.purgeable("answered", None, at(0), at(1))
    assert not rules.purgeable("answered", None, at(1), at(1))
    assert not rules.purgeable("answered", at(5), at(0), at(1))  # a resolved call still due
    assert not rules.purgeable("active", None, at(0), at(1))


def test_a_lease_is_free_when_missing_ended_or_ones_own():
    assert rules.lease_free(None, at(0), "a")
    assert rules.lease_free(Lease("b", at(60)), at(60), "a")
    assert not rules.lease_free(Lease("b", at(60)), at(59), "a")
    assert rules.lease_free(Lease("a", at(60)), at(0), "a")


def test_a_call_fits_when_every_tier_has_room_else_when_the_last_full_one_frees():
    per_number, everyone = Tier("number", 2, timedelta(seconds=60)), Tier("all", 3, timedelta(seconds=100))
    mine, all_calls = [at(0), at(10)], [at(0), at(5), at(10)]
    assert rules.tier_fit([mine, all_calls], [per_number, everyone], at(20)) == at(100)
    assert rules.tier_fit([mine], [per_number], at(60)) is None  # the call at 0 left the window at 60
    assert rules.tier_fit([], [], at(0)) is None


def test_storm_batches_open_join_lead_and_end():
    batch = rules.storm_join(None, "a", at(60))
    assert rules.storm_join(batch, "b", at(90)) == StormBatch(at(60), ["a", "b"])
    assert rules.storm_join(batch, "a", at(90)) == StormBatch(at(60), ["a"])
    led = rules.storm_lead(batch, "a")
    assert led == StormBatch(at(60), ["a"], "a")
    assert rules.storm_lead(led, "a") is None and rules.storm_lead(batch, "x") is None
    assert rules.storm_join(led, "c", at(120)) == StormBatch(at(120), ["c"])  # a led batch is going out
    assert rules.storm_ends(led, "a") and not rules.storm_ends(led, "c") and not rules.storm_ends(None, "a")


def test_a_counter_counts_in_order_and_keeps_a_day():
    placed: list = [at(0), at(20)]
    rules.count(placed, at(10))  # an earlier moment than the last (another replica's clock): in its place
    assert placed == [at(0), at(10), at(20)]
    rules.count(placed, at(0) + rules.RETAIN + timedelta(seconds=10))  # the calls at 0 and 10 leave
    assert placed == [at(20), at(0) + rules.RETAIN + timedelta(seconds=10)]
    assert rules.counted_within(placed, at(0) + rules.RETAIN, timedelta(hours=24)) == placed
    assert rules.counted_within(placed, at(0) + rules.RETAIN, timedelta(hours=23)) == placed[1:]
