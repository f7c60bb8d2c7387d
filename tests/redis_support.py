"""A real redis-server for the tests: started on a free loopback port with its own directory and AOF.

Debian's redis-server package (`make test` installs it when missing). Without it the Redis tests skip,
except under CI (env CI truthy), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from alert2voice.store.redis import RedisStore
from tests.e2e_support import LOOPBACK, Process, free_port, in_ci

REDIS_SERVER = "redis-server"


def require_redis_server() -> str:
    """The path of redis-server; skip without it (fail in CI)."""
    found = shutil.which(REDIS_SERVER)
    if found:
        return found
    message = ("redis-server not on PATH: the Redis store is tested against a real one; `make test` installs "
               "Debian's redis-server (or: apt-get install redis-server)")
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class RedisServer:
    """One redis-server process: durable as production should run it (appendonly, appendfsync always)."""

    binary: str
    directory: Path
    port: int
    process: Process | None = None
    options: tuple[str, ...] = ()  # more redis-server arguments; later ones win (`--appendonly no`)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def argv(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", *self.options]

    def start(self) -> RedisServer:
        """Start it (again, on the same port and directory: it loads its AOF) and wait until it answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = Process("redis-server", self.argv(), self.directory / "redis.log").start()
        client = self.client()
        try:
            for _ in range(100):  # polls the process we just started, bounded
                if not self.process.alive:
                    raise RuntimeError(f"redis-server exited at start\n{self.process.log_tail()}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():  # answers LOADING until its AOF is read
                        return self
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer on port {self.port}\n{self.process.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, as an orderly shutdown."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL: a crash; only what the AOF holds survives."""
        if self.process is not None and self.process.popen is not None:
            self.process.popen.kill()
            self.process.popen.wait()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections (the kernel does that), but nothing answers."""
        assert self.process is not None and self.process.popen is not None
        os.kill(self.process.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None and self.process.popen is not None
        os.kill(self.process.popen.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A plain synchronous client, to look at what the store wrote."""
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2, decode_responses=True)


@contextlib.contextmanager
def redis_server_in(directory: Path) -> Iterator[RedisServer]:
    """A redis-server of its own, stopped (and reaped) at the end."""
    server = RedisServer(require_redis_server(), directory, free_port()).start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.alive:
            server.resume()  # a paused server cannot act on SIGTERM
        server.stop()


@contextlib.contextmanager
def sentinel_for(server: RedisServer, directory: Path, service: str = "mymaster",
                 settings: str = "") -> Iterator[int]:
    """A Redis Sentinel (redis-server --sentinel) watching `server` as `service` (more config lines in
    `settings`); yields its port."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "sentinel.conf"  # the sentinel rewrites its config file: one of its own
    conf.write_text(f"port {port}\nbind {LOOPBACK}\ndir {directory}\n"
                    f"sentinel monitor {service} {LOOPBACK} {server.port} 1\n{settings}")
    process = Process("redis-sentinel", [server.binary, str(conf), "--sentinel"], directory / "sentinel.log").start()
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, decode_responses=True)
    try:
        for _ in range(100):  # polls the process we just started, bounded
            if not process.alive:
                raise RuntimeError(f"redis sentinel exited at start\n{process.log_tail()}")
            with contextlib.suppress(redis.RedisError):
                if client.execute_command("SENTINEL", "get-master-addr-by-name", service):
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"redis sentinel did not answer on port {port}\n{process.log_tail()}")
        yield port
    finally:
        client.close()
        process.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; each test uses keys under a prefix of its own."""
    with redis_server_in(tmp_path_factory.mktemp("redis")) as server:
        yield server


def fresh_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}:"


@contextlib.asynccontextmanager
async def opened(server: RedisServer, **kwargs) -> AsyncIterator[RedisStore]:
    """A RedisStore on the server (under a fresh prefix unless one is given), opened and closed."""
    kwargs.setdefault("key_prefix", fresh_prefix())
    store = RedisStore(server.url, **kwargs)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
