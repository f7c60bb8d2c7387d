"""`make run` (scripts/run.sh) stopped as a user stops it: both processes gone, no error, exit 0."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.procs import LOOPBACK, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _start(tmp_path: Path, argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """argv (run.sh, or make run) in a process group of its own, on free ports, once the service is ready."""
    listen, sim = f"{LOOPBACK}:{free_port()}", f"{LOOPBACK}:{free_port()}"
    config = tmp_path / "config.yaml"  # its SQLite store lands beside it
    config.write_text((ROOT / "config.example.yaml").read_text(encoding="utf-8")
                      .replace("127.0.0.1:9095", listen).replace("127.0.0.1:9096", sim), encoding="utf-8")
    env = {**os.environ, "BIN": str(BIN), "CONFIG": str(config), "LISTEN": listen, "SIM_LISTEN": sim}
    # A terminal's job gets SIGINT's default action even where the test runner ignores it (a background job).
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{listen}/-/ready", timeout=1):
                return proc, listen
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"run did not start: {proc.communicate()[0]}")
            time.sleep(0.2)


def _stopped(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """The exit status and output, once every process of the group is gone (or fail after 20 s)."""
    try:
        out = proc.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running 20 s after the signal: {proc.communicate()[0]}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # the simulator and the service were in the group
        except ProcessLookupError:
            return proc.returncode, out
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"left running after run ended: {out}")


@pytest.mark.parametrize(("signal_", "group"), [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)],
                         ids=["ctrl-c", "sigint", "sigterm"])
def test_run_sh_stops_both_with_exit_0(tmp_path: Path, signal_: signal.Signals, group: bool) -> None:
    proc, _ = _start(tmp_path, ["scripts/run.sh"])
    (os.killpg if group else os.kill)(proc.pid, signal_)
    status, out = _stopped(proc)
    assert status == 0, out
    assert "Traceback" not in out


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("make") is None,
                    reason="GNU make and /proc (run.sh watches make's SIGINT handler there)")
@pytest.mark.parametrize("group", [True, False], ids=["ctrl-c", "sigint-to-make"])
def test_make_run_stops_both_on_sigint(tmp_path: Path, group: bool) -> None:
    # `kill -INT <make>` reaches only make, which does not pass it on but waits for its recipe: run.sh sees
    # make's handler go and stops both. make then ends by its own SIGINT, as an interrupted make always does.
    proc, _ = _start(tmp_path, ["make", "--no-print-directory", "-o", ".venv/.installed-run", "run"])
    (os.killpg if group else os.kill)(proc.pid, signal.SIGINT)
    status, out = _stopped(proc)
    assert status == -signal.SIGINT, out
    assert "make: ***" not in out and "Traceback" not in out, out
