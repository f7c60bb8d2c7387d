"""--profile: sample a process with py-spy during a load and keep its hottest frames."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def py_spy() -> str | None:
    venv = Path(sys.executable).with_name("py-spy")
    return str(venv) if venv.exists() else shutil.which("py-spy")


async def sampled(spy: str, pid: int, raw: Path, log: Path, duration: float, work: Awaitable[T]) -> T:
    """Run `work` while py-spy records `pid` into `raw` (collapsed stacks) for about `duration` seconds."""
    argv = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(duration))), "--rate", "250",
            "--nonblocking", "--format", "raw", "--output", str(raw)]
    with log.open("wb") as spy_log:
        spy_proc = await asyncio.create_subprocess_exec(*argv, stdout=spy_log, stderr=spy_log)
    try:
        result = await work
        await asyncio.wait_for(spy_proc.wait(), timeout=duration + 20)
    finally:
        if spy_proc.returncode is None:
            spy_proc.kill()
            await spy_proc.wait()
    return result


def hot_frames(raw: Path, top: int = 25) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the frames with the most samples, on-CPU (self) and inclusive."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    try:
        lines = raw.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return {"error": str(exc)}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + count

    def rank(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"file": str(raw), "samples": total, "self_pct": rank(own), "inclusive_pct": rank(inclusive)}
