"""Slow and idle clients against `serve`: header and idle timeouts, the connection cap, the fd limit, accept logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from alert2voice.web.connections import AcceptFailures, GuardedRunner, Limits, connection_limits
from tests.e2e_support import Stack, running_stack
from tests.support import alert, payload

SOFT_LIMIT = 1024  # the common default soft RLIMIT_NOFILE (systemd, Debian)
IDLE_CLIENTS = 1100


def serving(request: pytest.FixtureRequest, tmp_path: Path, server: dict[str, Any],
            serve_prefix: tuple[str, ...] = ()) -> contextlib.AbstractContextManager[Stack]:
    return running_stack(request, tmp_path, store="memory", serve_prefix=serve_prefix,
                         configure=lambda config: config["server"].update(server))


def host_port(stack: Stack) -> tuple[str, int]:
    host, _, port = stack.a2v_url.removeprefix("http://").rpartition(":")
    return host, int(port)


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (EOF or reset), None if still open after `seconds`."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


async def webhook_status(stack: Stack, name: str) -> int:
    body = payload(alert({"alertname": name, "team": "payments", "severity": "critical"}),
                   group_key=f'{{}}:{{alertname="{name}"}}')
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http, \
            http.post(f"{stack.a2v_url}/alerts", json=body, headers={"Authorization": f"Bearer {stack.token}"}) as resp:
        return resp.status


@contextlib.contextmanager
def idle_connections(stack: Stack, n: int) -> Iterator[list[socket.socket]]:
    """Up to `n` connections that send nothing (stopping at the first that cannot connect within 2 s)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            try:
                socks.append(socket.create_connection(host_port(stack), timeout=2))
            except OSError:
                break
        yield socks
    finally:
        for s in socks:
            s.close()


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def soft_fd_limit(pid: int) -> str:
    limits = Path(f"/proc/{pid}/limits").read_text()
    return next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))


def a2v_pid(stack: Stack) -> int:
    return next(p for p in stack.processes if p.name == "alert2voice").pid


# ------------------------------------------------------------------------------------------- real processes


@pytest.mark.e2e
def test_a_half_sent_header_is_cut_off_at_header_timeout(request, tmp_path):
    with serving(request, tmp_path, {"header_timeout": "1s", "idle_timeout": "30s"}) as stack, \
            socket.create_connection(host_port(stack), timeout=2) as sock:
        sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: alert2voice\r\nContent-Type: app")
        waited = closed_within(sock, 5)
        assert waited is not None and waited < 3, f"still open after 5 s (or closed after {waited})"


@pytest.mark.e2e
def test_an_idle_connection_is_closed_at_idle_timeout_and_a_kept_alive_one_still_works(request, tmp_path):
    with serving(request, tmp_path, {"header_timeout": "1s", "idle_timeout": "2s"}) as stack, \
            socket.create_connection(host_port(stack), timeout=2) as idle, \
            socket.create_connection(host_port(stack), timeout=2) as kept:
        # Slower than header_timeout between requests, faster than idle_timeout: kept alive, both answered.
        for _ in range(2):
            kept.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: alert2voice\r\n\r\n")
            assert kept.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(1.5)
        waited = closed_within(idle, 5)
        assert waited is not None, "an idle connection still open after 5 s (idle_timeout 2s)"


@pytest.mark.e2e
async def test_1100_idle_connections_under_a_1024_soft_fd_limit_do_not_stop_a_webhook(request, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE_CLIENTS + 500:
        pytest.skip(f"the hard fd limit ({hard}) leaves no room for {IDLE_CLIENTS} connections")
    if soft != resource.RLIM_INFINITY and soft < IDLE_CLIENTS + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this test's client side needs them too
    # `ulimit -S -n` in a shell that then execs serve: the child starts with the common 1024 soft limit.
    prefix = ("sh", "-c", f'ulimit -S -n {SOFT_LIMIT} && exec "$@"', "sh")
    with serving(request, tmp_path, {}, serve_prefix=prefix) as stack:
        assert soft_fd_limit(a2v_pid(stack)) != str(SOFT_LIMIT), "serve did not raise its soft fd limit"
        with idle_connections(stack, IDLE_CLIENTS) as socks:
            assert len(socks) == IDLE_CLIENTS
            start = time.monotonic()
            assert await webhook_status(stack, "UnderIdleFlood") == 200
            assert time.monotonic() - start < 2
        log = (tmp_path / "alert2voice.log").read_text()
        assert log.count("socket.accept() out of system resource") <= 3


@pytest.mark.e2e
async def test_past_max_connections_the_longest_idle_make_room(request, tmp_path):
    with serving(request, tmp_path, {"max_connections": 64, "idle_timeout": "60s"}) as stack, \
            idle_connections(stack, 300) as socks:
        assert len(socks) == 300  # each accepted; the oldest idle ones closed to make room
        assert await webhook_status(stack, "PastTheCap") == 200
        assert open_fds(a2v_pid(stack)) < 64 + 40
        assert closed_within(socks[0], 2) is not None, "the longest idle connection was kept"
    # 236 connections closed to make room: one line, not one each.
    assert (tmp_path / "alert2voice.log").read_text().count("server.max_connections reached") == 1


# ---------------------------------------------------------------------------------------------- in-process


async def test_a_burst_of_failed_accepts_is_one_line_then_a_count():
    logger = logging.getLogger("test.asyncio.accept")
    accept = AcceptFailures(every=0.05)
    logger.addFilter(accept)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    summary = logging.getLogger("alert2voice.web.connections")
    logger.addHandler(handler)
    summary.addHandler(handler)
    try:
        for _ in range(1000):
            logger.error("socket.accept() out of system resource", exc_info=False)
        logger.error("something else")
        await asyncio.sleep(0.1)
    finally:
        logger.removeHandler(handler)
        summary.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert messages == ["socket.accept() out of system resource", "something else",
                        "socket.accept() out of system resource: 999 more in 0.05 s"]


def test_the_cap_leaves_descriptors_for_the_rest():
    assert connection_limits(10, 75, 4096, 1024).max_connections == 1024 - 128
    assert connection_limits(10, 75, 4096, 20000).max_connections == 4096


async def test_a_request_being_handled_is_never_the_one_closed_to_make_room():
    """Past the cap, idle connections (and half-sent headers) make room; a request in its handler keeps its own."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = GuardedRunner(app, limits=Limits(header_timeout=10, idle_timeout=60, max_connections=16))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    writers = []
    try:
        async with aiohttp.ClientSession() as http:
            busy = asyncio.ensure_future(http.get(f"http://127.0.0.1:{port}/slow"))
            await asyncio.wait_for(entered.wait(), 5)
            for _ in range(50):
                writers.append((await asyncio.open_connection("127.0.0.1", port))[1])
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            assert runner.server.open_connections <= 16  # type: ignore[union-attr]
            release.set()
            async with await busy as resp:
                assert (resp.status, await resp.text()) == (200, "done")
    finally:
        for w in writers:
            w.close()
        await runner.cleanup()
