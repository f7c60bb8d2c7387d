"""The SQLite store: one file, durable on every commit, for a single alert2voice replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from ..pages import FINAL_PAGE_STATES, Call, CallState, Page, PageState
from .base import StoreUnavailable

T = TypeVar("T")

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
)

BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock before reporting unavailable

_FINAL = json.dumps(sorted(FINAL_PAGE_STATES))
_PAGE_TIMES = tuple(f.name for f in fields(Page) if "datetime" in str(f.type))
_CALL_TIMES = tuple(f.name for f in fields(Call) if "datetime" in str(f.type))


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store a {type(value).__name__}")


def _dump(page: Page) -> str:
    return json.dumps(page.to_dict(), default=_encode, separators=(",", ":"))


def _times(d: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if d.get(name) is not None:
            d[name] = datetime.fromisoformat(d[name])


def _load(data: str) -> Page:
    d = json.loads(data)
    _times(d, _PAGE_TIMES)
    d["state"] = PageState(d["state"])
    for call in d.get("calls", []):
        _times(call, _CALL_TIMES)
        call["state"] = CallState(call["state"])
    return Page.from_dict(d)


class SQLiteStore:
    """The Store protocol on one SQLite connection, used from one worker thread so operations never overlap."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._executor: ThreadPoolExecutor | None = None

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
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
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
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):  # dropped because it failed; the next call reconnects
                conn.close()

    def _transaction(self, op: str, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            return result
        except (sqlite3.Error, OSError) as exc:
            # Drop the connection so that the next call starts afresh once the problem is gone.
            self._disconnect()
            raise StoreUnavailable(f"sqlite store: {op} failed: {exc}") from exc

    async def _run(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreUnavailable(f"sqlite store: {op} failed: store is not open")
        # A single worker thread: a cancelled caller can never let a second transaction overlap its own.
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, op, fn, args)

    # ------------------------------------------------------------------------------------ protocol

    async def open(self) -> None:
        """Create the database file (0600) or migrate it, and connect."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alert2voice-sqlite")
        try:
            await self._run("open", lambda conn: None)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
            executor.shutdown(wait=False)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the write lock can be taken."""
        await self._run("ping", lambda conn: None)

    async def admit(self, page: Page, claims: Sequence[str], window: timedelta, now: datetime) -> bool:
        """Save the page and hold its claims until now + window, unless all are held or the page is active."""
        return await self._run("admit", self._admit, page, claims, window, now)

    def _admit(self, conn: sqlite3.Connection, page: Page, claims: Sequence[str], window: timedelta,
               now: datetime) -> bool:
        row = conn.execute("SELECT state FROM pages WHERE key = ?", (page.key,)).fetchone()
        if row is not None and row[0] not in FINAL_PAGE_STATES:
            return False
        if all(conn.execute("SELECT 1 FROM claims WHERE key = ? AND expires_at > ?", (c, _ts(now))).fetchone()
               for c in claims):
            return False
        until = _ts(now + window)
        conn.executemany("INSERT INTO claims (key, expires_at) VALUES (?, ?)"
                         " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
                         [(c, until) for c in claims])
        self._save(conn, page)
        return True

    async def release(self, claims: Sequence[str]) -> None:
        """Drop these dedup claims."""
        await self._run("release", lambda conn: conn.executemany("DELETE FROM claims WHERE key = ?",
                                                                   [(c,) for c in claims]))

    @staticmethod
    def _save(conn: sqlite3.Connection, page: Page) -> None:
        # An upsert, not INSERT OR REPLACE: the row keeps its rowid, the tie-breaker that mirrors insertion order.
        conn.execute(
            "INSERT INTO pages (key, route, group_key, state, due_at, lease_until, updated_at, data)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " route = excluded.route, group_key = excluded.group_key, state = excluded.state,"
            " due_at = excluded.due_at, lease_until = NULL, updated_at = excluded.updated_at, data = excluded.data",
            (page.key, page.route, page.group_key, page.state.value,
             _ts(page.due_at) if page.due_at is not None else None,
             _ts(page.updated_at or page.received_at), _dump(page)))
        ids = [c.correlation_id for c in page.calls] + [c.message_id for c in page.calls if c.message_id]
        conn.executemany("INSERT INTO calls (id, page_key) VALUES (?, ?)"
                         " ON CONFLICT (id) DO UPDATE SET page_key = excluded.page_key",
                         [(i, page.key) for i in ids])

    async def put(self, page: Page) -> None:
        """Insert or replace the page, index its calls, and release its lease."""
        await self._run("put", self._save, page)

    async def get(self, key: str) -> Page | None:
        """The page with this key."""
        def get(conn: sqlite3.Connection) -> Page | None:
            row = conn.execute("SELECT data FROM pages WHERE key = ?", (key,)).fetchone()
            return _load(row[0]) if row else None
        return await self._run("get", get)

    async def by_group(self, route: str, group_key: str) -> list[Page]:
        """Pages of this route and group whose alerts have not been resolved."""
        def by_group(conn: sqlite3.Connection) -> list[Page]:
            rows = conn.execute("SELECT data FROM pages WHERE route = ? AND group_key = ?"
                                " AND json_extract(data, '$.resolved_at') IS NULL ORDER BY rowid",
                                (route, group_key))
            return [_load(data) for data, in rows]
        return await self._run("by_group", by_group)

    async def find_call(self, *, correlation_id: str | None = None, message_id: str | None = None) -> str | None:
        """The key of the page holding the call with this correlationId (tried first) or messageId."""
        def find(conn: sqlite3.Connection) -> str | None:
            for ident in (correlation_id or "", message_id or ""):
                row = conn.execute("SELECT page_key FROM calls WHERE id = ?", (ident,)).fetchone()
                if row:
                    return row[0]
            return None
        return await self._run("find_call", find)

    async def take_due(self, now: datetime, limit: int, lease: timedelta) -> list[Page]:
        """Up to `limit` due pages nobody holds, earliest first, leased until now + lease."""
        def take(conn: sqlite3.Connection) -> list[Page]:
            rows = conn.execute("SELECT key, data FROM pages WHERE due_at <= ?"
                                " AND (lease_until IS NULL OR lease_until <= ?)"
                                " ORDER BY due_at, rowid LIMIT ?", (_ts(now), _ts(now), limit)).fetchall()
            conn.executemany("UPDATE pages SET lease_until = ? WHERE key = ?",
                             [(_ts(now + lease), key) for key, _ in rows])
            return [_load(data) for _, data in rows]
        return await self._run("take_due", take)

    async def next_due(self) -> datetime | None:
        """The earliest due time of any page, leased or not."""
        def next_due(conn: sqlite3.Connection) -> datetime | None:
            # The page's own due_at, not the REAL column, so the exact datetime comes back.
            row = conn.execute("SELECT json_extract(data, '$.due_at') FROM pages WHERE due_at IS NOT NULL"
                               " ORDER BY due_at LIMIT 1").fetchone()
            return datetime.fromisoformat(row[0]) if row else None
        return await self._run("next_due", next_due)

    async def recent(self, limit: int) -> list[Page]:
        """The most recently updated pages, newest first."""
        def recent(conn: sqlite3.Connection) -> list[Page]:
            rows = conn.execute("SELECT data FROM pages ORDER BY updated_at DESC, rowid LIMIT ?", (limit,))
            return [_load(data) for data, in rows]
        return await self._run("recent", recent)

    async def depth(self) -> int:
        """How many pages have work due."""
        return await self._run(
            "depth", lambda conn: conn.execute("SELECT count(*) FROM pages WHERE due_at IS NOT NULL").fetchone()[0])

    async def purge(self, before: datetime) -> int:
        """Delete finished pages last updated before `before` (their call ids cascade) and expired claims."""
        def purge(conn: sqlite3.Connection) -> int:
            gone = conn.execute("DELETE FROM pages WHERE due_at IS NULL AND updated_at < ?"
                                " AND state IN (SELECT value FROM json_each(?))", (_ts(before), _FINAL)).rowcount
            conn.execute("DELETE FROM claims WHERE expires_at <= ?", (_ts(before),))
            return gone
        return await self._run("purge", purge)
