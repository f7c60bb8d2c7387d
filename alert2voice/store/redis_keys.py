"""The Redis store's keys: their names under one prefix, and what each holds.

Key layout (prefix `a2v:` by default; times are Unix seconds):

    epoch             string: a random id, made anew whenever Redis lost its data (set at open, at every
                      reconnection and by any write that finds it missing). Each page is stored with
                      the epoch it was written under; put() refuses a page read under another.
    page:<key>        hash: d (page JSON), v (version), e (epoch), st, live (1 unless finished with nothing due),
                      upd, ids, calls, grp, seq; lu, lo while leased. No TTL while live; `retention`
                      once finished.
    claim:<claim>     string: the claim's expiry (now + window); PX window.
    claims            zset of claim keys by expiry, for purge(); each admit drops the expired ones and
                      extends its TTL to the window.
    call:<id>         string: the key of the page with this correlationId or messageId; its page's TTL.
    due               zset of the keys of pages with work due (due_at set), by due time.
    group:<hash>      zset of a route and alert group's unresolved page keys, by first-seen order; no TTL
                      while one of them is live, else `retention`.
    recent            zset of page keys by last update, the newest RECENT_KEPT only.
    done              zset of finished page keys by last update, for purge(); entries older than the
                      retention are dropped as pages finish.
    seq               counter behind the first-seen order.
    placed:<number>   zset of the calls counted for the number, by placement time; trimmed to and
    placed-all        expiring after RETAIN (every number's calls).
    storm:<number>    hash: release (ISO 8601), keys, leader; RETAIN after its last change.
    tokens            hash: the provider's token bucket (tokens, t); expires once it would be full again.
    beats             hash: each heartbeat's last-seen time, by heartbeat name; no TTL.
    wake              the pub/sub channel of wake-ups ("due|<when>|<sender's instance id>": due work that can be
                      taken then; the bare instance id: look now) and of invalidations of remembered
                      duplicates ("look|<group key>" or "look|*"; redis_cache.py).
    ack               a pub/sub channel nobody subscribes to: replicated() publishes to it before its WAIT.
"""

from __future__ import annotations

import hashlib


class Keys:
    """The names of the store's keys under one prefix (the layout is in the module's docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pages = prefix + "page:"
        self.calls = prefix + "call:"
        self.claims = prefix + "claims"
        self.due = prefix + "due"
        self.recent = prefix + "recent"
        self.done = prefix + "done"
        self.seq = prefix + "seq"
        self.placed_all = prefix + "placed-all"
        self.tokens = prefix + "tokens"
        self.epoch = prefix + "epoch"
        self.wake = prefix + "wake"
        self.ack = prefix + "ack"
        self.ready = prefix + "ready:"  # + instance: readiness's write probe, expiring

    def page(self, key: str) -> str:
        return self.pages + key

    def claim(self, claim: str) -> str:
        return self.prefix + "claim:" + claim

    def call(self, ident: str) -> str:
        return self.calls + ident

    def group(self, route: str, group_key: str) -> str:
        # Hashed: an Alertmanager group key is long and full of quotes and braces.
        digest = hashlib.sha256(f"{route}\0{group_key}".encode()).hexdigest()[:32]
        return self.prefix + "group:" + digest

    def placed(self, number: str) -> str:
        return self.prefix + "placed:" + number

    def storm(self, number: str) -> str:
        return self.prefix + "storm:" + number
