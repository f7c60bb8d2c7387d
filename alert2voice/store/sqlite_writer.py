"""The SQLite store's writer: one thread, one connection, operations committed in groups, the log checkpointed.

Operations queue up for the thread, which runs whatever is waiting in one transaction (each in its own
savepoint) and one fsync: concurrent webhooks share the cost of durability. Between transactions it copies
the write-ahead log back into the database (_checkpoint). What a committed operation changes in the store's
in-memory mirror is applied on the event loop, in commit order, before its caller resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .base import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger("alert2voice.store")

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


class Writer:
    """The thread that runs a SQLite store's operations: `connect()` opens the connection (and tells who the
    file is), `dropped()` is told when it is closed after a failure (the next operation connects again)."""

    def __init__(self, path: Path, connect: Callable[[], tuple[sqlite3.Connection, tuple[int, int]]],
                 dropped: Callable[[], None], monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._connect, self._dropped, self._monotonic = connect, dropped, monotonic
        self._checkpointed_at = monotonic()
        self._wal_dirty = False  # a batch committed (or failed) since the last checkpoint: the WAL may hold frames
        self.checkpoint_failures = 0  # checkpoints that failed since the writer was made (a metric)
        self.operations = self.commits = 0  # operations run, transactions committed (metrics)
        self._checkpoint_failing = False
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def conn(self) -> sqlite3.Connection | None:
        """The connection, while one is open (for tests that break it on purpose)."""
        return self._conn

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name="alert2voice-sqlite", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        """Finish what is queued, close the connection and end the thread; stopping twice is harmless."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) != self._identity:
                # Writes would go to a file nobody will ever open again: not durable, so not accepted.
                raise sqlite3.OperationalError("database file was replaced since it was opened")
            return self._conn
        self._conn, self._identity = self._connect()
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._dropped()
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

    async def run(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, changes, *args)` in the writer's next transaction; its result, or StoreUnavailable."""
        if self._thread is None:
            raise StoreUnavailable(f"sqlite store: {op} failed: store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Op(op, fn, args, future, loop))
        # A cancelled caller does not cancel the operation: it still commits, like any other in its batch.
        return await asyncio.shield(future)
