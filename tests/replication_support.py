"""Redis replication for the tests: a replica behind a link that can be held, and a failover by Sentinel.

The link is a TCP relay between the replica and its master. Held, it keeps what the master sends (the
replica falls behind, as over a slow network); when the master dies, what it kept is dropped, never
delivered: the writes a replica lacked at a crash. Pausing the replica itself (SIGSTOP) cannot show that
loss, since the kernel would deliver the master's stream into the stopped replica's socket anyway.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.e2e_support import LOOPBACK, free_port
from tests.redis_support import RedisServer, require_redis_server, sentinel_for

CHUNK = 65536


class Link:
    """A relay on a loopback port to `target`: a replica connects here instead of to its master."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.lag = 0.0  # seconds what the master sends waits before it is delivered: a replica that far behind
        self.port = free_port()
        self._held = threading.Event()
        self._moved = threading.Condition()
        self._listener = socket.create_server((LOOPBACK, self.port))
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._threads = [threading.Thread(target=self._accept, name="link-accept", daemon=True)]
        self._threads[0].start()

    def hold(self) -> None:
        """Keep what the master sends from now on: the replica falls behind (its acknowledgements still flow)."""
        self._held.set()

    def release(self) -> None:
        """Deliver what was kept, and what comes next."""
        with self._moved:
            self._held.clear()
            self._moved.notify_all()

    def close(self) -> None:
        """Close every connection and end every thread of the link."""
        self._closed = True
        self.release()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked on it (close alone does not)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                replica, _ = self._listener.accept()
            except OSError:
                return
            try:
                master = socket.create_connection((LOOPBACK, self.target), timeout=2)
            except OSError:  # the master is down: the replica sees its link fail and tries again
                replica.close()
                continue
            master.settimeout(None)
            self._sockets += [replica, master]
            for source, sink, holdable in ((replica, master, False), (master, replica, True)):
                pending: list[tuple[float, bytes]] = []
                for thread in (threading.Thread(target=self._receive, args=(source, sink, pending), daemon=True),
                               threading.Thread(target=self._send, args=(source, sink, pending, holdable),
                                                daemon=True)):
                    self._threads.append(thread)
                    thread.start()

    def _receive(self, source: socket.socket, sink: socket.socket, pending: list[tuple[float, bytes]]) -> None:
        """Read from one end into `pending`; at its close, what is pending dies with it (the master's buffers)."""
        try:
            while data := source.recv(CHUNK):
                with self._moved:
                    pending.append((time.monotonic(), data))
                    self._moved.notify_all()
        except OSError:
            pass
        with self._moved:
            pending.clear()
            pending.append((0.0, b""))  # the end
            self._moved.notify_all()

    def _send(self, source: socket.socket, sink: socket.socket, pending: list[tuple[float, bytes]],
              holdable: bool) -> None:
        """Write what `pending` holds to the other end once it is `lag` old, unless held; at the end, close both."""
        try:
            while True:
                with self._moved:
                    self._moved.wait_for(lambda: pending and (not (holdable and self._held.is_set())
                                                              or pending[-1][1] == b""))
                    if pending[-1][1] == b"":
                        return
                    lag = self.lag if holdable else 0.0
                    due = [data for at, data in pending if at + lag <= time.monotonic()]
                    del pending[:len(due)]
                    if not due:  # the oldest is not old enough yet: look again when it is
                        self._moved.wait(timeout=pending[0][0] + lag - time.monotonic())
                        continue
                sink.sendall(b"".join(due))
        except OSError:
            return
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


def replication(server: RedisServer) -> dict:
    client = server.client()
    try:
        return client.info("replication")
    finally:
        client.close()


def wait_until(check, what: str, within: float = 15.0) -> None:
    """Poll the processes we started (redis-server, Sentinel) until `check()` is true; bounded."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        time.sleep(0.05)


def online(master: RedisServer, replicas: int = 1) -> bool:
    """Whether `replicas` replicas have synchronised with the master and stream from it."""
    info = replication(master)
    return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
               and v.get("state") == "online") >= replicas


@contextlib.contextmanager
def master_and_replica(directory: Path, *, linked: bool = False) -> Iterator[tuple[RedisServer, RedisServer, Link | None]]:
    """A master and one replica (`--replicaof`), the replica online; with `linked`, replicating through a Link."""
    binary = require_redis_server()
    # The first synchronisation at once, not after the 5 s Redis gives more replicas to join it.
    master = RedisServer(binary, directory / "master", free_port(), options=("--repl-diskless-sync-delay", "0")).start()
    link = Link(master.port) if linked else None
    upstream = link.port if link is not None else master.port
    replica = RedisServer(binary, directory / "replica", free_port(),
                          options=("--replicaof", LOOPBACK, str(upstream))).start()
    try:
        wait_until(lambda: online(master), "the replica to synchronise")
        yield master, replica, link
    finally:
        for server in (replica, master):
            if server.process is not None and server.process.alive:
                server.resume()
                server.stop()
        if link is not None:
            link.close()


@contextlib.contextmanager
def watched(master: RedisServer, directory: Path, service: str = "mymaster") -> Iterator[int]:
    """A Sentinel that fails `master` over half a second after it stops answering; yields its port."""
    with sentinel_for(master, directory, service,
                      settings=f"sentinel down-after-milliseconds {service} 500\n"
                               f"sentinel failover-timeout {service} 10000\n") as port:
        yield port


def master_of(sentinel_port: int, service: str = "mymaster") -> int:
    """The port of the master the Sentinel names now."""
    client = redis.Redis(host=LOOPBACK, port=sentinel_port, socket_timeout=2, decode_responses=True)
    try:
        return int(client.execute_command("SENTINEL", "get-master-addr-by-name", service)[1])
    finally:
        client.close()
