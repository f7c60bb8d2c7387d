"""Load generators for the benchmark: wrk (Debian's package) with a Lua script, or aiohttp in Python.

Three shapes of load, every one bounded in count and in time:

- `run_wrk` / `closed_loop`: as many requests as the server takes, on a fixed number of keep-alive
  connections, for a fixed duration (and at most `limit` requests). wrk is preferred: written in C,
  it takes far less of the shared CPU than any Python client. `closed_loop` is the fallback when wrk
  is missing and behaves the same way (one request in flight per connection).
- `open_loop`: requests sent on a fixed timetable (`rate` per second) whether or not earlier ones were
  answered, as Alertmanager does; used for time-to-call at 100/s and for the 1,000-groups storm.

Bodies are Alertmanager version-4 webhooks. A body template holds the marker `@@N@@` wherever a group's
identity goes (alertname and groupKey); a load in `distinct` mode replaces it with a new tag per request
(every request a new page), `mixed` mode with a new tag every `new_every`-th request and one of
`dup_groups` repeating tags otherwise, `fixed` mode sends the template unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

MARKER = "@@N@@"
MODES = ("fixed", "distinct", "mixed")


# ------------------------------------------------------------------------------------------- payloads


def webhook(tag: str, *, starts_at: str, alerts: int = 2, extra_labels: dict[str, str] | None = None,
            name_prefix: str = "Bench") -> dict[str, Any]:
    """An Alertmanager v4 webhook for the group `alertname=<name_prefix><tag>` with `alerts` firing alerts."""
    alertname = f"{name_prefix}{tag}"
    extra = dict(extra_labels or {})
    items = []
    for i in range(alerts):
        labels = {"alertname": alertname, "instance": f"node{i + 1}:9100", "job": "node", "team": "infra",
                  "severity": "critical" if i == 0 else "warning", **extra}
        items.append({
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": f"CPU high on node{i + 1}",
                            "description": f"CPU above 90% for 5 minutes on node{i + 1}:9100"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": f"http://prometheus.example:9090/graph?g0.expr=cpu_busy%7Binstance%3D%22node{i + 1}%22%7D",
            "fingerprint": f"{i + 1:016x}",
        })
    return {
        "receiver": "voice",
        "status": "firing",
        "alerts": items,
        "groupLabels": {"alertname": alertname},
        "commonLabels": {"alertname": alertname, "job": "node", "team": "infra", **extra},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="' + alertname + '"}',
        "truncatedAlerts": 0,
    }


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


def body_for(template: str, mode: str, n: int, *, prefix: str, new_every: int = 10, dup_groups: int = 50,
             worker: int = 1) -> bytes:
    """The body of request number `n` (from 1) of a load, exactly as the wrk script builds it."""
    if mode == "fixed":
        return template.encode()
    new = mode == "distinct" or n % new_every == 0
    tag = f"{prefix}{worker}n{n}" if new else f"{prefix}d{n % dup_groups}"
    return template.replace(MARKER, tag).encode()


# ------------------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (nearest rank) of values, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "max": max(ms) if ms else None, "count": len(ms)}


# ------------------------------------------------------------------------------------------------ wrk


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version(path: str) -> str | None:
    """`wrk -v` prints its version on the first line (and exits 1 with the usage)."""
    try:
        proc = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=5, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"wrk\s+(\S+)", proc.stdout + proc.stderr)
    return m.group(1) if m else None


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def wrk_script(*, template_path: Path, token: str, mode: str, prefix: str, new_every: int, dup_groups: int,
               limit_per_thread: int) -> str:
    """The Lua script: POST the body with the bearer token; vary it per request unless mode is fixed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    return f"""-- generated by bench/loadgen.py
local f = assert(io.open({_lua_string(str(template_path))}, "rb"))
local template = f:read("*a")
f:close()
local mode = {_lua_string(mode)}
local prefix = {_lua_string(prefix)}
local new_every = {int(new_every)}
local dup_groups = {int(dup_groups)}
local limit = {int(limit_per_thread)}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = {_lua_string("Bearer " + token)}
if mode == "fixed" then
  wrk.body = template
end

local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end

local counter = 0
if mode ~= "fixed" then
  function request()
    counter = counter + 1
    local tag
    if mode == "distinct" or counter % new_every == 0 then
      tag = prefix .. tid .. "n" .. counter
    else
      tag = prefix .. "d" .. (counter % dup_groups)
    end
    local body = template:gsub("{MARKER}", tag)
    return wrk.format(nil, nil, nil, body)
  end
end

if limit > 0 then
  local responses = 0
  function response(status, headers, body)
    responses = responses + 1
    if responses >= limit then
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class LoadResult:
    """What one closed-loop load measured (the same fields whichever generator ran it)."""

    generator: str
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    latency_ms: dict[str, float | None]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"generator": self.generator, "requests": self.requests, "duration_s": round(self.duration_s, 3),
                "rps": round(self.rps, 1), "non_2xx": self.non_2xx, "socket_errors": self.socket_errors,
                "latency_ms": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.latency_ms.items()}}


async def run_wrk(wrk: str, url: str, *, token: str, template: str, mode: str, duration: float, workdir: Path,
                  connections: int = 32, threads: int = 1, prefix: str = "", new_every: int = 10,
                  dup_groups: int = 50, limit: int = 0,
                  until: Callable[[], Awaitable[bool]] | None = None) -> LoadResult:
    """Run wrk for `duration` seconds, or less: after `limit` responses (0: no limit) each wrk thread stops
    sending, and once `until()` (polled every 0.25 s) says so, wrk gets SIGINT and reports at once.

    wrk itself always waits for its whole -d duration even after its threads stopped, hence `until`."""
    stamp = f"{time.monotonic_ns()}"
    template_path = workdir / f"wrk-body-{stamp}.json"
    template_path.write_text(template, encoding="utf-8")
    script_path = workdir / f"wrk-{stamp}.lua"
    per_thread = math.ceil(limit / threads) if limit else 0
    script_path.write_text(wrk_script(template_path=template_path, token=token, mode=mode, prefix=prefix,
                                      new_every=new_every, dup_groups=dup_groups, limit_per_thread=per_thread),
                           encoding="utf-8")
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
            "-s", str(script_path), url]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        communicate = asyncio.ensure_future(proc.communicate())
        if until is not None:
            while not communicate.done():
                await asyncio.wait({communicate}, timeout=0.25)
                if not communicate.done() and await until():
                    proc.send_signal(signal.SIGINT)
                    break
        out, _ = await asyncio.wait_for(communicate, timeout=duration + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
    text = out.decode(errors="replace")
    m = re.search(r"^WRKJSON (\{.*\})$", text, re.M)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{text[-2000:]}")
    d = json.loads(m.group(1))
    return LoadResult(
        generator=f"wrk -t{threads} -c{connections}",
        requests=d["requests"],
        duration_s=d["duration_us"] / 1e6,
        non_2xx=d["status"],
        socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
        latency_ms={"p50": d["p50_us"] / 1000, "p90": d["p90_us"] / 1000, "p99": d["p99_us"] / 1000,
                    "max": d["max_us"] / 1000},
    )


# ------------------------------------------------------------------------------------- Python: closed


async def closed_loop(url: str, *, token: str, template: str, mode: str, duration: float, connections: int = 32,
                      prefix: str = "", new_every: int = 10, dup_groups: int = 50, limit: int = 0,
                      until: Callable[[], Awaitable[bool]] | None = None) -> LoadResult:
    """The fallback when wrk is missing: `connections` workers, one request in flight each, like wrk.

    It stops by itself after `limit` requests, so `until` (wrk's early stop) is not needed here."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    counter = itertools.count(1)
    latencies: list[float] = []
    non_2xx = errors = 0
    fixed = template.encode()
    timeout = aiohttp.ClientTimeout(total=10)
    start = time.monotonic()
    deadline = start + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal non_2xx, errors
        while time.monotonic() < deadline:
            n = next(counter)
            if limit and n > limit:
                return
            body = fixed if mode == "fixed" else body_for(template, mode, n, prefix=prefix, new_every=new_every,
                                                          dup_groups=dup_groups)
            t = time.monotonic()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if not 200 <= resp.status < 300:
                        non_2xx += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            latencies.append(time.monotonic() - t)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    elapsed = time.monotonic() - start
    return LoadResult(generator=f"python closed loop, {connections} connections", requests=len(latencies),
                      duration_s=elapsed, non_2xx=non_2xx, socket_errors=errors,
                      latency_ms=latency_summary(latencies))


# --------------------------------------------------------------------------------------- Python: open


@dataclass
class Sent:
    """One request of an open-loop load: when it was due, sent and answered, and what came back."""

    index: int
    scheduled: float          # monotonic: when the timetable said to send it
    sent: float               # monotonic: when it was handed to the client
    sent_wall: float          # time.time() at the same moment, to compare with other processes' clocks
    done: float | None = None
    status: int | None = None
    body: Any = None
    error: str | None = None

    @property
    def response_time(self) -> float | None:
        """From the scheduled send to the answer: client-side queueing counts (no coordinated omission)."""
        return None if self.done is None else self.done - self.scheduled


def status_counts(sent: Sequence[Sent]) -> dict[str, int]:
    """How many requests of an open-loop load got each HTTP status (or, unanswered, each kind of error)."""
    counts: dict[str, int] = {}
    for s in sent:
        key = str(s.status) if s.status is not None else (s.error or "error").split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


async def open_loop(url: str, *, token: str, bodies: Sequence[bytes], rate: float, connections: int = 200,
                    answer_within: float = 10.0, on_sent: Callable[[Sent], None] | None = None) -> list[Sent]:
    """Send bodies[i] at start + i/rate whatever the earlier ones are doing; wait for every answer (bounded)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    results: list[Sent] = []
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=answer_within)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(entry: Sent, body: bytes) -> None:
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    raw = await resp.read()
                    entry.done, entry.status = time.monotonic(), resp.status
                with contextlib.suppress(ValueError):
                    entry.body = json.loads(raw)
            except (aiohttp.ClientError, TimeoutError) as exc:
                entry.error = f"{type(exc).__name__}: {exc}"

        tasks = []
        start = time.monotonic() + 0.05
        for i, body in enumerate(bodies):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            entry = Sent(index=i, scheduled=due, sent=time.monotonic(), sent_wall=time.time())
            results.append(entry)
            if on_sent is not None:
                on_sent(entry)
            tasks.append(asyncio.create_task(one(entry, body)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=answer_within + 5)
    return results
