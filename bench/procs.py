"""Child processes of the bench and the tests: free loopback ports, a log file, readiness, stop, /proc."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def alert2voice_command() -> list[str]:
    """The installed `alert2voice` script of this venv, or `python -m alert2voice`."""
    script = Path(sys.executable).with_name("alert2voice")
    return [str(script)] if script.exists() else [sys.executable, "-m", "alert2voice"]


@dataclass
class Proc:
    """A child process with its output in a log file (run in the log's folder unless `cwd`); stop() reaps it."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self) -> Proc:
        with self.log_path.open("wb") as log:
            self.started = time.monotonic()
            # The child keeps its own copy of the descriptor; ours closes at once.
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,  # noqa: S603
                                          stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd or self.log_path.parent)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status (None when never started)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def rss_mb(self) -> float | None:
        return _status_kb(self.pid, "VmRSS")

    def hwm_mb(self) -> float | None:
        return _status_kb(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far."""
        return cpu_ticks(Path(f"/proc/{self.pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 80) -> str:
        """The last lines of the log, under a header naming the process and whether it still runs."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        status = "running" if self.alive else f"exited {self.popen.returncode if self.popen else '-'}"
        return f"===== {self.name} ({status}) {self.log_path} =====\n" + "\n".join(text.splitlines()[-lines:])


def cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat. The command name, in parentheses, may
    hold spaces and parentheses itself, so the fields are counted after its last ')'."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5); fields[0] is the state (3)


def _status_kb(pid: int, key: str) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return None


def wait_ready(url: str, proc: Proc, *, within: float = 20.0, interval: float = 0.01,
               context: ssl.SSLContext | None = None) -> float:
    """Poll url every `interval` until it answers 200, failing early if `proc` dies; seconds since its start."""
    deadline = time.monotonic() + within
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited before {url} answered\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as resp:  # noqa: S310 (loopback URL we built)
                if resp.status == 200:
                    return time.monotonic() - proc.started
        except urllib.error.HTTPError as exc:
            with exc:
                last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(interval)
    raise RuntimeError(f"{url} not ready within {within:g}s ({last})\n{proc.log_tail()}")
