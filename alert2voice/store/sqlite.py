"""The SQLite store: one file, durable on every commit, for a single alert2voice replica; its rules are rules.py's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from ..pages import FINAL_PAGE_STATES, Page
from . import rules
from .base import Admitted, Conflict, FirstCall, Lease, OpenPage, StoreUnavailable
from .codec import dump_page as _dump
from .codec import load_page as _load
from .local import LocalLimits
from .lockfile import lock_path, take_lock
from .rules import PURGE_CHUNK

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
# The writer checkpoints between batches (see _checkpoint): once idle and CHECKPOINT_IDLE seconds after the
# last checkpoint, or after CHECKPOINT_EVERY seconds even if writes never pause; after a failed one (a full
# disk), again every CHECKPOINT_EVERY seconds until one succeeds, with or without writes.
CHECKPOINT_IDLE = 0.25
CHECKPOINT_EVERY = 1.0
# Bytes of log after which the writer checkpoints at once, idle or not: a burst of commits (a webhook is a few,
# each rewriting whole 4 KiB pages) must not grow the log past what a small disk holds, before it can be copied.
CHECKPOINT_AT = 512 * 1024
# Bytes SQLite truncates the -wal file to when it starts it over; a checkpoint that completes truncates it to
# zero anyway (TRUNCATE): a full disk must get back the log's space, or the database cannot grow into it.
WAL_SIZE_LIMIT = 4 * 1024 * 1024
MIN_FREE = 256 * 1024  # bytes free on the database's filesystem below which the store is not ready (ping)
MAX_BATCH = 256  # operations committed together at most (group commit)


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """Copy the WAL into the database and truncate it to zero bytes: (frames in the WAL, frames copied).

    Raises sqlite3.Error when it cannot (disk full: the database file cannot grow); SQLITE_BUSY (another
    connection reading) is reported in the result, not raised, and this store has no other connection.
    """
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise sqlite3.OperationalError("checkpoint blocked by a reader")
    return frames, copied


# Result codes after which the connection is not to be trusted for the rest of the batch, whether or not
# SQLite rolled the transaction back by itself: disk full, I/O error, corrupt, cannot open, not a database.
_FATAL_CODES = frozenset({13, 10, 11, 14, 26})


def _fatal(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _FATAL_CODES


def _ts(moment: datetime) -> float:
    return moment.timestamp()


@dataclass
class _Op:
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


# What a committed operation changes in the in-memory mirror; applied on the event loop's thread.
Changes = list[Callable[[], None]]
# One operation's end: its result or error, and its mirror changes (empty unless it committed).
_Outcome = tuple[_Op, Any, BaseException | None, Changes]


def _resolve(outcomes: list[_Outcome]) -> None:
    """On the event loop: apply each committed operation's mirror changes, then settle its future."""
    for op, result, exc, changes in outcomes:
        if exc is None:
            for change in changes:
                change()
            if not op.future.done():
                op.future.set_result(result)
            continue
        if isinstance(exc, StoreUnavailable):
            error: BaseException = exc
        elif isinstance(exc, sqlite3.Error | OSError):
            error = StoreUnavailable(f"sqlite store: {op.name} failed: {exc}")
            error.__cause__ = exc
        else:
            error = exc
        if not op.future.done():
            op.future.set_exception(error)


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
        self._monotonic = monotonic
        self._checkpointed_at = monotonic()
        self._wal_dirty = False  # a batch committed (or failed) since the last checkpoint: the WAL may hold frames
        self.checkpoint_failures = 0  # checkpoints that failed since the store was made (a metric)
        self.operations = self.commits = 0  # operations the writer ran, transactions it committed (metrics)
        self._checkpoint_failing = False
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._claims: dict[str, float] = {}
        self._groups: dict[tuple[str, str], Group] = {}
        self._active: set[str] = set()
        self._mirrored = False
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
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
            # it: the worker checkpoints when it is idle (_checkpoint).
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
            self._load_mirror(conn)
        except BaseException:
            conn.close()
            raise
        self._identity = (st.st_dev, st.st_ino)
        return conn

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

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) != self._identity:
                # Writes would go to a file nobody will ever open again: not durable, so not accepted.
                raise sqlite3.OperationalError("database file was replaced since it was opened")
            return self._conn
        self._conn = self._connect()
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._mirrored = False
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):  # dropped because it failed; the next call reconnects
                conn.close()

    def _worker(self) -> None:
        while True:
            try:
                # With the WAL ahead of the database, wake up when idle to checkpoint it.
                first = self._queue.get(timeout=CHECKPOINT_IDLE) if self._wal_dirty else self._queue.get()
            except queue.Empty:
                self._checkpoint()
                continue
            if first is None:
                self._disconnect()
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(op)
            self._commit(batch)
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file (PASSIVE), between batches, when it is time.

        On the writer's own thread and connection, between two transactions: when the next one begins,
        the whole WAL is in the database and SQLite starts the WAL over from its beginning. A checkpoint
        on another thread, beside a writer that never pauses, never catches up with it, and the WAL grew
        without bound (over 100 MB in six seconds of continuous writes; commits slowed as it grew). It runs
        when the queue is empty, CHECKPOINT_IDLE seconds or more after the last one, so at a steady rate it
        mostly finds nothing waiting; a writer that never pauses gets one every CHECKPOINT_EVERY seconds, and a
        log past CHECKPOINT_AT bytes one at once. A completed checkpoint truncates the log to zero bytes.
        """
        if not self._wal_dirty:
            return
        since = self._monotonic() - self._checkpointed_at
        waiting = since < CHECKPOINT_IDLE or (since < CHECKPOINT_EVERY and (self._checkpoint_failing
                                                                            or not self._queue.empty()))
        if waiting and (self._checkpoint_failing or self._wal_size() < CHECKPOINT_AT):
            return
        try:
            # Also after a failed batch dropped the connection: the WAL it left must still go into the database.
            frames, _ = checkpoint(self._connection())
        except (sqlite3.Error, OSError) as exc:
            self._checkpoint_failed(exc)
        else:
            if self._checkpoint_failing:
                log.info("sqlite write-ahead log checkpointed again", extra={"path": str(self.path),
                                                                              "frames": frames})
            self._checkpoint_failing = self._wal_dirty = False
        self._checkpointed_at = self._monotonic()

    def _wal_size(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    def _checkpoint_failed(self, exc: BaseException) -> None:
        """Count a failed checkpoint, and say so once per run of failures: the WAL grows until one succeeds."""
        self.checkpoint_failures += 1
        if not self._checkpoint_failing:
            log.warning("sqlite write-ahead log checkpoint failed: retried every %gs; until it succeeds the log "
                        "keeps its disk space and grows with every write", CHECKPOINT_EVERY,
                        extra={"path": str(self.path), "error": str(exc)})
        self._checkpoint_failing = True
        self._disconnect()  # afresh at the next try: after an I/O error the connection is not to be trusted

    def _commit(self, batch: list[_Op]) -> None:
        """Run a batch in one transaction, each operation in its own savepoint; one COMMIT for all."""
        outcomes: list[_Outcome] = []
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for op in batch:
                    changes: Changes = []
                    conn.execute("SAVEPOINT op")
                    try:
                        result = op.fn(conn, changes, *op.args)
                        conn.execute("RELEASE op")
                        outcomes.append((op, result, None, changes))
                    except Exception as exc:  # this operation fails alone; the others of the batch go on
                        if not conn.in_transaction or _fatal(exc):
                            raise  # the whole transaction is lost (disk full, I/O error): all fail, reconnect
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        outcomes.append((op, None, exc, []))
                conn.execute("COMMIT")
                self._wal_dirty = True
                self.operations += len(batch)
                self.commits += 1
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
        except Exception as exc:
            # Drop the connection so that the next call starts afresh once the problem is gone, and checkpoint
            # (retried while idle) what the WAL holds: on a full disk that is what gives the database room.
            self._disconnect()
            self._wal_dirty = True
            failures: list[_Outcome] = []
            for op in batch:
                error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(
                    f"sqlite store: {op.name} failed: {exc}")
                if error is not exc:
                    error.__cause__ = exc
                failures.append((op, None, error, []))
            self._settle(failures)
            return
        self._settle(outcomes)

    @staticmethod
    def _settle(outcomes: list[_Outcome]) -> None:
        """Hand a batch's outcomes to the event loop, which applies the mirror changes and wakes the callers.

        The mirror is read on the loop's thread (seen(), by_group() iterate it) and so changed only there,
        in commit order (one callback per batch, run in the order posted), before any caller of the batch
        resumes: whoever awaited a write sees it in the mirror.
        """
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, mine in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits for these any more
                loop.call_soon_threadsafe(_resolve, mine)

    async def _run(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise StoreUnavailable(f"sqlite store: {op} failed: store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Op(op, fn, args, future, loop))
        # A cancelled caller does not cancel the operation: it still commits, like any other in its batch.
        return await asyncio.shield(future)

    # ------------------------------------------------------------------------------------ protocol

    async def open(self) -> None:
        """Take the store's lock file, create the database file (0600) or migrate it, and connect."""
        if self._lock_fd is None:
            try:
                self._lock_fd = take_lock(self.path)
            except OSError as exc:
                raise StoreUnavailable(f"sqlite store: cannot lock {lock_path(self.path)}: {exc}") from exc
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name="alert2voice-sqlite", daemon=True)
            self._thread.start()
        try:
            await self._run("open", lambda conn, changes: None)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        thread, self._thread = self._thread, None
        loop = asyncio.get_running_loop()
        if thread is not None:
            self._queue.put(None)
            await loop.run_in_executor(None, thread.join)
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
        if not await self._run("admit", self._admit, page, claims, window, now, lease):
            return None
        return await self._cleared(first, now)

    def _admit(self, conn: sqlite3.Connection, changes: Changes, page: Page, claims: Sequence[str],
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
        self._save(conn, changes, page, expect=None, lease=lease)
        return True

    async def release(self, claims: Sequence[str]) -> None:
        """Drop these dedup claims."""
        def release(conn: sqlite3.Connection, changes: Changes) -> None:
            conn.executemany("DELETE FROM claims WHERE key = ?", [(c,) for c in claims])
            changes.append(lambda: [self._claims.pop(c, None) for c in claims])
        await self._run("release", release)

    def _save(self, conn: sqlite3.Connection, changes: Changes, page: Page, *, expect: int | None,
              lease: Lease | None) -> None:
        """Write the page at version `expect` + 1 (Conflict when it is not at `expect`; None: admit() decided),
        released or held under `lease`."""
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
            (page.key, page.route, page.group_key, page.state.value,
             _ts(page.due_at) if page.due_at is not None else None,
             _ts(page.updated_at or page.received_at), _dump(page), expect,
             _ts(lease.until) if lease is not None else None, lease.owner if lease is not None else None)).fetchone()
        if row is None:
            raise Conflict(f"page {page.key[:12]} changed since it was read (version {expect})")
        version, rowid = row
        changes.append(lambda: setattr(page, "version", version))
        ids = [c.correlation_id for c in page.calls] + [c.message_id for c in page.calls if c.message_id]
        # Written only where new or another page's: the ids a page had are left as they are.
        conn.executemany("INSERT INTO calls (id, page_key) VALUES (?, ?)"
                         " ON CONFLICT (id) DO UPDATE SET page_key = excluded.page_key"
                         " WHERE calls.page_key IS NOT excluded.page_key",
                         [(i, page.key) for i in ids])
        changes.extend(self._mirror_page(page, rowid))

    async def put(self, page: Page, lease: Lease | None = None) -> None:
        """Compare-and-set the page at the version it was read at, index its calls, and release its lease
        (or keep it held under `lease`)."""
        await self._run("put", lambda conn, changes: self._save(conn, changes, page, expect=page.version,
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
