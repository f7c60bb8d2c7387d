"""The lock file beside a SQLite store: one process per database file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .base import StoreLocked


def lock_path(path: Path) -> Path:
    """The lock file beside a database: `alert2voice.db` -> `alert2voice.db.lock`."""
    return path.with_name(path.name + ".lock")


def take_lock(path: Path) -> int:
    """Hold the exclusive lock beside the database (as Prometheus does for its TSDB); returns its descriptor.

    Two processes on one file each answer dedup from their own mirror and lease without seeing the other:
    they would ring phones twice. The lock is an flock(2), so the kernel drops it when the holder dies,
    even by kill -9; the file holds the holder's pid, to name it in the error of the next one.
    """
    lock = lock_path(path)
    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StoreLocked(f"{lock} is locked by another alert2voice process (pid {holder}): one process per "
                          "SQLite store: stop that one first (several replicas need a shared store)") from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
