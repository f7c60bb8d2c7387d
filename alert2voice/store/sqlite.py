"""The SQLite store: one file, durable on every commit, for a single alert2voice replica; its rules are rules.py's."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ..pages import FINAL_PAGE_STATES, Page
from . import rules
from .base import Admitted, Conflict, FirstCall, Lease, OpenPage, StoreUnavailable
from .codec import dump_page as _dump
from .codec import load_page as _load
from .local import LocalLimits
from .lockfile import lock_path, take_lock
from .rules import PURGE_CHUNK
from .sqlite_writer import WAL_SIZE_LIMIT, Changes, Writer

T = TypeVar("T")
log = logging.getLogger("alert2voice.store")

# The mirror of a group's unresolved pages: key -> (rowid, identities), in rowid order (first seen first).
Group = dict[str, tuple[int, tuple[str, ...]]]

# Each migration is a list of statements; migration N leaves the database at PRAGMA user_version N.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE pages (
            key TEXT PRIMARY KEY,
            route TEXT NOT NULL,
            group_key TEXT NOT NULL,
            state TEXT NOT NULL,
            due_at REAL,
            lease_until REAL,
            updated_at REAL NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX pages_due ON pages (due_at)",
        "CREATE INDEX pages_group ON pages (route, group_key)",
        "CREATE INDEX pages_updated ON pages (updated_at)",
        """CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            page_key TEXT NOT NULL REFERENCES pages (key) ON DELETE CASCADE
        )""",
        "CREATE INDEX calls_page ON calls (page_key)",
        "CREATE TABLE claims (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
        "CREATE INDEX claims_expiry ON claims (expires_at)",
    ),
    (
        # Versioned writes (compare-and-set) and leases with an owner (the version is their fencing token).
        "ALTER TABLE pages ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE pages ADD COLUMN lease_owner TEXT",
    ),
    (
        # Heartbeats' last-seen times (IF NOT EXISTS: whatever number this migration ends up with).
        "CREATE TABLE IF NOT EXISTS heartbeats (name TEXT PRIMARY KEY, last_seen REAL NOT NULL)",
    ),
    (
        # One row readiness writes (ping): a store that cannot write is not ready.
        "CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
    ),
    (
        # A group's pages are read from the in-memory mirror (loaded by a scan at connect): an index nobody
        # reads, rewritten at every page write, goes.
        "DROP INDEX IF EXISTS pages_group",
        # Call ids and claims are looked up by their key alone: stored in the order of that key (WITHOUT ROWID),
        # one b-tree instead of a table and its key's index, each written at every new id or claim.
        """CREATE TABLE calls_by_id (
            id TEXT PRIMARY KEY,
            page_key TEXT NOT NULL REFERENCES pages (key) ON DELETE CASCADE
        ) WITHOUT ROWID""",
        "INSERT INTO calls_by_id (id, page_key) SELECT id, page_key FROM calls",
        "DROP TABLE calls",
        "ALTER TABLE calls_by_id RENAME TO calls",
        "CREATE INDEX calls_page ON calls (page_key)",
        "CREATE TABLE claims_by_key (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID",
        "INSERT INTO claims_by_key (key, expires_at) SELECT key, expires_at FROM claims",
        "DROP TABLE claims",
        "ALTER TABLE claims_by_key RENAME TO claims",
        "CREATE INDEX claims_expiry ON claims (expires_at)",
    ),
)

BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock before reporting unavailable
MIN_FREE = 256 * 1024  # bytes free on the database's filesystem below which the store is not ready (ping)


def _ts(moment: datetime) -> float:
    return moment.timestamp()


class _Row(NamedTuple):
    """What a write stores of a page, taken on the event loop when the write is asked for: the page as it is
    then (the loop may change the object meanwhile), encoded outside the writer's transaction."""

    state: str
    due_at: float | None
    updated_at: float
    data: str
    ids: list[str]

    @classmethod
    def of(cls, page: Page) -> _Row:
        ids = [c.correlation_id for c in page.calls] + [c.message_id for c in page.calls if c.message_id]
        return cls(page.state.value, _ts(page.due_at) if page.due_at is not None else None,
                   _ts(page.updated_at or page.received_at), _dump(page), ids)


class SQLiteStore(LocalLimits):
    """The Store protocol on one SQLite connection, driven by one worker thread that commits in groups.

    Operations queue up for the worker, which runs whatever is waiting in one transaction (each in its
    own savepoint) and one fsync: concurrent webhooks share the cost of durability. An in-memory mirror
    of the dedup claims and of the unresolved pages per group, updated only after a commit, answers the
    common case (a resent, already-paged group) without a transaction. One process owns the file.
    """

    def __init__(self, path: Path | str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.path = Path(path)
        self.writer = Writer(self.path, self._connect, self._dropped, monotonic)
        self._claims: dict[str, float] = {}
        self._groups: dict[tuple[str, str], Group] = {}
        self._active: set[str] = set()
        self._mirrored = False
        self._lock_fd: int | None = None

    @property
    def checkpoint_failures(self) -> int:
        return self.writer.checkpoint_failures

    @property
    def operations(self) -> int:
        return self.writer.operations

    @property
    def commits(self) -> int:
        return self.writer.commits

    # ------------------------------------------------------------------------------------ plumbing

    def _connect(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """Open the database (0600), migrate it and load the mirror; the connection, and the file's identity."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the database file's mode.
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a 200 to Alertmanager means the page is on disk
            # Not after whichever commit crosses 1,000 pages (SQLite's default), with webhooks queued behind
            # it: the writer checkpoints when it is idle (sqlite_writer.Writer._checkpoint).
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
            self._load_mirror(conn)
        except BaseException:
            conn.close()
            raise
        return conn, (st.st_dev, st.st_ino)

    def _dropped(self) -> None:
        """The writer closed the connection after a failure: the mirror is unknown until it connects again."""
        self._mirrored = False

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # read the version under the write lock: two processes may start at once
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreUnavailable(f"{self.path}: database schema version {version} is newer than this "
                                   f"alert2voice supports ({len(MIGRATIONS)}); upgrade alert2voice")
        for number in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")

    def _load_mirror(self, conn: sqlite3.Connection) -> None:
        """Read the claims and the unresolved pages into memory (at every (re)connect: the file is the truth)."""
        claims = dict(conn.execute("SELECT key, expires_at FROM claims"))
        groups: dict[tuple[str, str], Group] = {}
        active = set()
        rows = conn.execute("SELECT rowid, key, route, group_key, state, json_extract(data, '$.identities'),"
                            " json_extract(data, '$.resolved_at') FROM pages ORDER BY rowid")
        for rowid, key, route, group_key, state, identities, resolved_at in rows:
            if state not in FINAL_PAGE_STATES:
                active.add(key)
            if resolved_at is None:
                groups.setdefault((route, group_key), {})[key] = (rowid, tuple(json.loads(identities)))
        self._claims, self._groups, self._active, self._mirrored = claims, groups, active, True

    def _mirror_page(self, page: Page, rowid: int) -> Changes:
        def apply() -> None:
            group = self._groups.setdefault((page.route, page.group_key), {})
            if page.resolved_at is None:
                rejoins = page.key not in group and any(other > rowid for other, _ in group.values())
                group[page.key] = (rowid, tuple(page.identities))
                if rejoins:  # unresolved again (admitted anew): back to its place, first seen first
                    self._groups[(page.route, page.group_key)] = dict(sorted(group.items(), key=lambda kv: kv[1][0]))
            else:
                group.pop(page.key, None)
            if page.state in FINAL_PAGE_STATES:
                self._active.discard(page.key)
            else:
                self._active.add(page.key)
        return [apply]

    async def _run(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        return await self.writer.run(op, fn, *args)

    # ------------------------------------------------------------------------------------ protocol

    async def open(self) -> None:
        """Take the store's lock file, create the database file (0600) or migrate it, and connect."""
        if self._lock_fd is None:
            try:
                self._lock_fd = take_lock(self.path)
            except OSError as exc:
                raise StoreUnavailable(f"sqlite store: cannot lock {lock_path(self.path)}: {exc}") from exc
        self.writer.start()
        try:
            await self._run("open", lambda conn, changes: None)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        await self.writer.stop()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a write commits and the disk has room for more than that one.

        The probe's row alone can fit where a failed write left the log's file longer than its last frame, so
        the free space is checked too: below MIN_FREE a webhook's commit would likely fail (disk full).
        """
        def probe(conn: sqlite3.Connection, changes: Changes) -> None:
            conn.execute("INSERT INTO probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                         (time.time(),))
            st = os.statvfs(self.path.parent)
            if (free := st.f_bavail * st.f_frsize) < MIN_FREE:
                raise sqlite3.OperationalError(f"database or disk is full: {free} bytes free on the database's "
                                               f"filesystem, fewer than {MIN_FREE}")
        await self._run("ping", probe)

    async def seen(self, key: str, claims: Sequence[str], now: datetime) -> bool:
        """Whether admit() would refuse: answered from the mirror of committed state, without a transaction."""
        if not self._mirrored:
            return False  # not known: admit() decides
        return rules.would_refuse(key in self._active, [self._claims.get(c) for c in claims], _ts(now))

    async def look(self, route: str, group_key: str, key: str, claims: Sequence[str],
                   now: datetime) -> tuple[list[OpenPage], bool]:
        """by_group() and seen(), one after the other: both are in this process."""
        return await self.by_group(route, group_key), await self.seen(key, claims, now)

    async def admit(self, page: Page, claims: Sequence[str], window: timedelta, now: datetime,
                    lease: Lease | None = None, first: FirstCall | None = None) -> Admitted | None:
        """Save the page and hold its claims until now + window, unless all are held or the page is active; its
        first call is cleared in this process's memory (the throttle's and the rate limit's, see local.py)."""
        if await self.seen(page.key, claims, now):
            return None
        if not await self._run("admit", self._admit, page, _Row.of(page), claims, window, now, lease):
            return None
        return await self._cleared(first, now)

    def _admit(self, conn: sqlite3.Connection, changes: Changes, page: Page, stored: _Row, claims: Sequence[str],
               window: timedelta, now: datetime, lease: Lease | None) -> bool:
        row = conn.execute("SELECT state FROM pages WHERE key = ?", (page.key,)).fetchone()
        expiries = [conn.execute("SELECT max(expires_at) FROM claims WHERE key = ?", (c,)).fetchone()[0]
                    for c in claims]
        if rules.would_refuse(row is not None and row[0] not in FINAL_PAGE_STATES, expiries, _ts(now)):
            return False
        until = _ts(now + window)
        conn.executemany("INSERT INTO claims (key, expires_at) VALUES (?, ?)"
                         " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
                         [(c, until) for c in claims])
        changes.append(lambda: self._claims.update(dict.fromkeys(claims, until)))
        if row is not None:  # an earlier incarnation's call ids go with it, as on Redis and in memory
            conn.execute("DELETE FROM calls WHERE page_key = ?", (page.key,))
        self._save(conn, changes, page, stored, expect=None, lease=lease)
        return True

    async def release(self, claims: Sequence[str]) -> None:
        """Drop these dedup claims."""
        def release(conn: sqlite3.Connection, changes: Changes) -> None:
            conn.executemany("DELETE FROM claims WHERE key = ?", [(c,) for c in claims])
            changes.append(lambda: [self._claims.pop(c, None) for c in claims])
        await self._run("release", release)

    def _save(self, conn: sqlite3.Connection, changes: Changes, page: Page, stored: _Row, *, expect: int | None,
              lease: Lease | None) -> None:
        """Write the page (as `stored` has it) at version `expect` + 1 (Conflict when it is not at `expect`; None:
        admit() decided), released or held under `lease`."""
        # An upsert, not INSERT OR REPLACE: the row keeps its rowid, the tie-breaker that mirrors insertion order.
        row = conn.execute(
            # A page read at version N > 0 that is no longer stored (purged) is not written back: no row to insert.
            "INSERT INTO pages (key, route, group_key, state, due_at, lease_until, lease_owner, updated_at, data,"
            " version) SELECT ?1, ?2, ?3, ?4, ?5, ?9, ?10, ?6, ?7, 1"
            " WHERE ?8 IS NULL OR ?8 = 0 OR EXISTS (SELECT 1 FROM pages WHERE key = ?1)"
            # Not route and group_key: a key is made of them, so they never change (and a column set is rewritten).
            " ON CONFLICT (key) DO UPDATE SET state = excluded.state,"
            " due_at = excluded.due_at, lease_until = ?9, lease_owner = ?10, updated_at = excluded.updated_at,"
            " data = excluded.data, version = pages.version + 1 WHERE ?8 IS NULL OR pages.version = ?8"
            " RETURNING version, rowid",
            (page.key, page.route, page.group_key, stored.state, stored.due_at, stored.updated_at, stored.data, expect,
             _ts(lease.until) if lease is not None else None, lease.owner if lease is not None else None)).fetchone()
        if row is None:
            raise Conflict(f"page {page.key[:12]} changed since it was read (version {expect})")
        version, rowid = row
        changes.append(lambda: setattr(page, "version", version))
        # Written only where new or another page's: the ids a page had are left as they are.
        conn.executemany("INSERT INTO calls (id, page_key) VALUES (?, ?)"
                         " ON CONFLICT (id) DO UPDATE SET page_key = excluded.page_key"
                         " WHERE calls.page_key IS NOT excluded.page_key",
                         [(i, page.key) for i in stored.ids])
        changes.extend(self._mirror_page(page, rowid))

    async def put(self, page: Page, lease: Lease | None = None) -> None:
        """Compare-and-set the page at the version it was read at, index its calls, and release its lease
        (or keep it held under `lease`)."""
        stored = _Row.of(page)
        await self._run("put", lambda conn, changes: self._save(conn, changes, page, stored, expect=page.version,
                                                                lease=lease))

    async def get(self, key: str) -> Page | None:
        """The page with this key."""
        def get(conn: sqlite3.Connection, changes: Changes) -> Page | None:
            row = conn.execute("SELECT data, version FROM pages WHERE key = ?", (key,)).fetchone()
            return _load(*row) if row else None
        return await self._run("get", get)

    async def by_group(self, route: str, group_key: str) -> list[OpenPage]:
        """Pages of this route and group whose alerts have not been resolved, in insertion order."""
        if self._mirrored:
            return [OpenPage(k, ids) for k, (_, ids) in self._groups.get((route, group_key), {}).items()]
        def by_group(conn: sqlite3.Connection, changes: Changes) -> list[OpenPage]:
            return [OpenPage(k, ids) for k, (_, ids) in self._groups.get((route, group_key), {}).items()]
        return await self._run("by_group", by_group)

    async def find_call(self, *, correlation_id: str | None = None, message_id: str | None = None) -> str | None:
        """The key of the page holding the call with this correlationId (tried first) or messageId."""
        def find(conn: sqlite3.Connection, changes: Changes) -> str | None:
            for ident in (correlation_id or "", message_id or ""):
                row = conn.execute("SELECT page_key FROM calls WHERE id = ?", (ident,)).fetchone()
                if row:
                    return row[0]
            return None
        return await self._run("find_call", find)

    async def take_due(self, now: datetime, limit: int, lease: timedelta, owner: str,
                       skip: Collection[str] = ()) -> list[Page]:
        """Up to `limit` due pages nobody holds, earliest first, leased until now + lease; keys in `skip`
        (processed by the caller already) are passed over without being read or leased."""
        skipped = frozenset(skip)  # a copy: the caller's set changes while the worker runs this

        def take(conn: sqlite3.Connection, changes: Changes) -> list[Page]:
            taken: list[str] = []
            due = conn.execute("SELECT key, lease_until, lease_owner FROM pages WHERE due_at <= ?"
                               " ORDER BY due_at, key", (_ts(now),))  # rules.take_order
            for key, until, holder in due:
                if len(taken) == limit:
                    break
                held = Lease(holder, datetime.fromtimestamp(until, UTC)) if until is not None else None
                if key not in skipped and rules.lease_free(held, now, owner):
                    taken.append(key)
            due.close()
            # Taking the lease bumps the version, its fencing token: whoever read the page before cannot write.
            return [_load(*conn.execute("UPDATE pages SET lease_until = ?, lease_owner = ?, version = version + 1"
                                        " WHERE key = ? RETURNING data, version",
                                        (_ts(now + lease), owner, key)).fetchone()) for key in taken]
        return await self._run("take_due", take)

    async def renew(self, key: str, lease: Lease) -> bool:
        """Extend the lease `lease.owner` holds on the page; False when it holds none."""
        def renew(conn: sqlite3.Connection, changes: Changes) -> bool:
            row = conn.execute("SELECT lease_owner FROM pages WHERE key = ?", (key,)).fetchone()
            if not rules.renewable(row[0] if row is not None else None, "", lease):
                return False
            conn.execute("UPDATE pages SET lease_until = ? WHERE key = ?", (_ts(lease.until), key))
            return True
        return await self._run("renew", renew)

    async def next_due(self) -> datetime | None:
        """The earliest due time of any page, leased or not."""
        def next_due(conn: sqlite3.Connection, changes: Changes) -> datetime | None:
            # The page's own due_at, not the REAL column, so the exact datetime comes back.
            row = conn.execute("SELECT json_extract(data, '$.due_at') FROM pages WHERE due_at IS NOT NULL"
                               " ORDER BY due_at LIMIT 1").fetchone()
            return datetime.fromisoformat(row[0]) if row else None
        return await self._run("next_due", next_due)

    async def recent(self, limit: int) -> list[Page]:
        """The most recently updated pages, newest first."""
        def recent(conn: sqlite3.Connection, changes: Changes) -> list[Page]:
            rows = conn.execute("SELECT data, version FROM pages ORDER BY updated_at DESC, key DESC LIMIT ?",
                                (limit,))  # rules.recent_order
            return [_load(data, version) for data, version in rows]
        return await self._run("recent", recent)

    async def depth(self) -> int:
        """How many pages have work due."""
        return await self._run("depth", lambda conn, changes: conn.execute(
            "SELECT count(*) FROM pages WHERE due_at IS NOT NULL").fetchone()[0])

    async def purge(self, before: datetime) -> int:
        """Delete finished pages last updated before `before` (their call ids cascade) and expired claims.

        In chunks of PURGE_CHUNK rows, each its own operation: a storm's worth of expired claims does not
        hold the writer (and the webhooks waiting for it) in one long transaction.
        """
        def purge(conn: sqlite3.Connection, changes: Changes) -> tuple[int, int]:
            cutoff = _ts(before)
            # The index narrows the pages down, the rule decides.
            old = conn.execute("SELECT key, route, group_key, state, due_at, updated_at FROM pages"
                               " WHERE updated_at < ? ORDER BY updated_at", (cutoff,))
            gone = list(itertools.islice(((key, route, group_key) for key, route, group_key, *snapshot in old
                                          if rules.purgeable(*snapshot, cutoff)), PURGE_CHUNK))
            old.close()
            conn.executemany("DELETE FROM pages WHERE key = ?", [(key,) for key, _, _ in gone])
            expired: list[str] = []
            claims = conn.execute("SELECT key, expires_at FROM claims ORDER BY expires_at")
            for key, expires in claims:
                if len(expired) == PURGE_CHUNK or rules.claim_held(expires, cutoff):
                    break  # the rest expire later still
                expired.append(key)
            claims.close()
            conn.executemany("DELETE FROM claims WHERE key = ?", [(k,) for k in expired])

            def apply() -> None:
                for key in expired:
                    self._claims.pop(key, None)
                for key, route, group_key in gone:
                    self._groups.get((route, group_key), {}).pop(key, None)
            changes.append(apply)
            return len(gone), len(expired)

        removed = 0
        while True:
            pages, claims = await self._run("purge", purge)
            removed += pages
            if pages < PURGE_CHUNK and claims < PURGE_CHUNK:
                return removed

    # ------------------------------------------------------------------------------------ heartbeats

    async def beat(self, name: str, at: datetime) -> None:
        """Keep the later of the stored last-seen time and `at`."""
        await self._run("beat", lambda conn, changes: conn.execute(
            "INSERT INTO heartbeats (name, last_seen) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)", (name, _ts(at))))

    async def beats(self) -> dict[str, datetime]:
        """Every heartbeat's last-seen time."""
        rows = await self._run("beats", lambda conn, changes: conn.execute(
            "SELECT name, last_seen FROM heartbeats").fetchall())
        return {name: datetime.fromtimestamp(seen, UTC) for name, seen in rows}
