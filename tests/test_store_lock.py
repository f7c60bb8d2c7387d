"""One process per SQLite store: a lock file beside the database, held for as long as the store is open; and
`serve` refusing to start (a locked store, an address in use) in one line, exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from alert2voice.store import StoreLocked
from alert2voice.store.sqlite import SQLiteStore, lock_path
from tests import e2e_support
from tests.e2e_support import LOOPBACK, Process, alert2voice_command, free_port, wait_http_ok


async def test_a_second_store_on_the_same_file_is_refused_naming_the_lock_and_its_holder(tmp_path):
    db = tmp_path / "alert2voice.db"
    first = SQLiteStore(db)
    await first.open()
    try:
        second = SQLiteStore(db)
        with pytest.raises(StoreLocked) as refused:
            await second.open()
        message = str(refused.value)
        assert str(lock_path(db)) in message
        assert f"pid {os.getpid()}" in message
        await first.ping()  # the first one is untouched
    finally:
        await first.close()
    # Released on close: the next process may take over.
    again = SQLiteStore(db)
    await again.open()
    await again.close()


async def test_the_lock_file_is_private_and_names_its_holder(tmp_path):
    db = tmp_path / "state" / "alert2voice.db"
    store = SQLiteStore(db)
    await store.open()
    try:
        lock = lock_path(db)
        assert lock.read_text() == f"{os.getpid()}\n"
        assert lock.stat().st_mode & 0o777 == 0o600
    finally:
        await store.close()


def _config(tmp_path: Path, port: int) -> Path:
    config = e2e_support.alert2voice_config(port=port, sim_url="http://127.0.0.1:9", token="tok-lock-test",
                                            service_key="svc-lock-test", callback_token="cb-lock-test", admin_token="adm-lock-test",
                                            number="+14155550101", caller_id="+15550001234", store="sqlite",
                                            workdir=tmp_path)
    path = tmp_path / f"alert2voice-{port}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_a_second_serve_on_the_same_database_exits_1_and_the_first_keeps_serving(tmp_path):
    first_port, second_port = free_port(), free_port()
    first = Process("alert2voice", [*alert2voice_command(), "serve", "--config", str(_config(tmp_path, first_port))],
                    tmp_path / "first.log").start()
    try:
        wait_http_ok(f"http://{LOOPBACK}:{first_port}/-/ready", first)
        started = time.monotonic()
        second = subprocess.run([*alert2voice_command(), "serve", "--config", str(_config(tmp_path, second_port))],
                                capture_output=True, text=True, timeout=30, check=False)
        assert time.monotonic() - started < 10
        assert second.returncode == 1, second.stderr
        [line] = second.stderr.strip().splitlines()
        assert str(tmp_path / "alert2voice.db.lock") in line
        assert f"pid {first.popen.pid}" in line
        assert first.alive
        wait_http_ok(f"http://{LOOPBACK}:{first_port}/-/ready", first)
    finally:
        assert first.stop() == 0, first.log_tail()


def test_serve_on_an_address_in_use_exits_1_with_one_line(tmp_path):
    with socket.socket() as held:
        held.bind((LOOPBACK, 0))
        held.listen()
        port = held.getsockname()[1]
        serve = subprocess.run([*alert2voice_command(), "serve", "--config", str(_config(tmp_path, port))],
                               capture_output=True, text=True, timeout=30, check=False)
    assert serve.returncode == 1, serve.stderr
    assert serve.stderr.strip().splitlines()[-1] == (
        f"alert2voice: cannot listen on {LOOPBACK}:{port}: Address already in use")
    assert "Traceback" not in serve.stderr
