"""The machine the figures come from, and the load generator it offers (Debian's wrk)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from bench import loadgen, say

ROOT = Path(__file__).resolve().parent.parent


def _first(path: str, prefix: str) -> str | None:
    """The rest of the first line of a /proc or /etc file that starts with `prefix`."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line[len(prefix):]
    return None


def machine() -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python, aiohttp, alert2voice and the commit."""
    import alert2voice

    cpu = _first("/proc/cpuinfo", "model name")
    mem = _first("/proc/meminfo", "MemTotal:")
    mem_kb = int(mem.split()[0]) if mem and mem.split()[0].isdigit() else None
    os_name = _first("/etc/os-release", "PRETTY_NAME=")
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,  # noqa: S603,S607
                                text=True, timeout=5, check=False).stdout.strip() or None
    return {
        "cpu": cpu.split(":", 1)[1].strip() if cpu else "unknown",
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "os": os_name.strip('"') if os_name else platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "alert2voice": alert2voice.__version__,
        "commit": commit,
    }


def ensure_wrk(allow_install: bool) -> str | None:
    """wrk's path; installs Debian's package when missing and running as root, else None (Python fallback)."""
    path = loadgen.wrk_path()
    if path or not allow_install:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say("wrk not found and not root: using the Python load generator (install Debian's wrk for better figures)")
        return None
    say("wrk not found: installing Debian's package (apt-get install -y wrk)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]):
        try:
            subprocess.run(argv, env=env, check=True, timeout=300, stdout=subprocess.DEVNULL)  # noqa: S603
        except (OSError, subprocess.SubprocessError) as exc:
            say(f"could not install wrk ({exc}): using the Python load generator")
            return None
    return loadgen.wrk_path()
