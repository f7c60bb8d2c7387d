"""Random ids read from the kernel in batches (entropy.py): as random as secrets', never repeated."""

from __future__ import annotations

import uuid

from alert2voice import entropy


def test_ids_are_unique_across_many_refills_and_shaped_as_their_standard_twins():
    many = [entropy.uuid4() for _ in range(3000)]  # 48 KB: a dozen reads of the pool
    assert len(set(many)) == len(many)
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in many)
    tokens = [entropy.token_hex(4) for _ in range(5000)]
    assert all(len(t) == 8 and int(t, 16) >= 0 for t in tokens)
    assert len(set(tokens)) > 4990  # 32 bits each: a collision or two among 5,000 is possible, not more


def test_a_request_larger_than_the_pool_is_served_whole():
    assert len(entropy.token_hex(5000)) == 10000
