"""The redis-server behind a Redis-backed alert2voice of the bench: a free loopback port, a folder of its own,
and every write on disk before Redis acknowledges it (appendonly yes, appendfsync always), as in production."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.procs import LOOPBACK, Proc

BINARY = "redis-server"
# The append-only file, fsynced before every answer (what "200 means durable" needs), no RDB snapshots.
DURABLE = {"appendonly": "yes", "appendfsync": "always", "save": ""}
MISSING = ("redis-server not found: the Redis store is measured against Debian's redis-server "
           "(make bench installs it; or apt-get install redis-server; or --store sqlite)")


def redis_server_path() -> str | None:
    return shutil.which(BINARY)


def redis_version(path: str) -> str | None:
    """`redis-server --version` says `Redis server v=7.0.15 sha=...`."""
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"v=(\S+)", proc.stdout)
    return m.group(1) if m else None


def argv(binary: str, port: int, directory: Path) -> list[str]:
    """Loopback only, its files in `directory`, DURABLE."""
    durable = [arg for name, value in DURABLE.items() for arg in (f"--{name}", value)]
    return [binary, "--port", str(port), "--bind", LOOPBACK, "--dir", str(directory), *durable, "--daemonize", "no"]


@dataclass
class RedisServer:
    """One running redis-server."""

    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def wait_ready(self, *, within: float = 10.0, interval: float = 0.02) -> None:
        """Until it answers PING (LOADING while it reads its AOF), failing early if it exits."""
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=1)
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline:
                if not self.proc.alive:
                    raise RuntimeError(f"redis-server exited at start\n{self.proc.log_tail()}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(interval)
        finally:
            client.close()
        raise RuntimeError(f"redis-server not answering on port {self.port} within {within:g}s\n"
                           f"{self.proc.log_tail()}")
