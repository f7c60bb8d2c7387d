"""Capture tests/fixtures/alertmanager/*.json from a real Alertmanager (scripts/capture-fixtures.py runs it).

Each scenario starts an unclustered Alertmanager on loopback whose only receiver is a small local
HTTP server, posts alerts through Alertmanager's API v2 and keeps the webhook bodies it sends.
The alerts carry fixed start and end times, so a capture reproduces the committed files exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import shutil
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.e2e_support import LOOPBACK, Process, free_port, wait_http_ok
from tests.support import FIXTURES_DIR

# The externalURL every fixture carries, whatever port the capturing Alertmanager listens on.
EXTERNAL_URL = "http://127.0.0.1:9093"
WEBHOOK_WITHIN = 20.0  # seconds: bounds a failure; a webhook normally arrives within one group_interval
ZERO = "0001-01-01T00:00:00Z"
LONG_AGO = "2020-01-01T00:00:00Z"  # a start and end in the past resolve an alert outright


def alert(labels: dict[str, str], annotations: dict[str, str] | None = None, *, starts: str,
          ends: str | None = None, generator: str = "") -> dict[str, Any]:
    """One alert as a client (Prometheus, amtool) posts it to /api/v2/alerts."""
    body: dict[str, Any] = {"labels": labels, "annotations": annotations or {}, "startsAt": starts,
                            "generatorURL": generator}
    if ends is not None:
        body["endsAt"] = ends
    return body


@dataclass(frozen=True)
class Step:
    """Alerts to post, then the fixture the next webhook is saved as (None: wait for it, keep nothing)."""

    alerts: list[dict[str, Any]]
    fixture: str | None


def _high_cpu(starts: tuple[str, str], ends: str | None = None, generator: str = "") -> list[dict[str, Any]]:
    return [alert({"alertname": "HighCPU", "instance": "node1:9100", "severity": "critical", "team": "infra"},
                  {"description": "CPU > 90% for 5m", "summary": "CPU high on node1"},
                  starts=starts[0], ends=ends, generator=generator),
            alert({"alertname": "HighCPU", "instance": "node2:9100", "severity": "warning", "team": "infra"},
                  {"description": "CPU > 75% for 10m", "summary": "CPU elevated on node2"},
                  starts=starts[1], ends=ends, generator=generator)]


def _mixed(instance: str, severity: str, **times: str) -> dict[str, Any]:
    return alert({"alertname": "Mixed", "instance": instance, "severity": severity, "team": "infra"}, **times)


def _flip(ends: str | None = None) -> list[dict[str, Any]]:
    # As Prometheus sends it: millisecond times, a generatorURL; markup and non-ASCII in a label and the summary.
    return [alert({"alertname": "FlipTargetDown", "instance": "127.0.0.1:9096", "job": "flip", "severity": "critical",
                   "team": "a<b & \"c\" 'd' > ü"},
                  {"description": "up=0 for job flip", "summary": "Target 127.0.0.1:9096 down <&> — ü"},
                  starts="2026-11-26T14:30:27.445Z", ends=ends,
                  generator="http://127.0.0.1:9090/graph?g0.expr=up%7Bjob%3D%22flip%22%7D+%3D%3D+0&g0.tab=1")]


# Scenarios with the same alert must not share an Alertmanager (it would merge their times): one each.
SCENARIOS: dict[str, list[Step]] = {
    "high-cpu": [Step(_high_cpu(("2026-11-26T14:23:41.071096602Z", "2026-11-26T14:23:41.093033254Z")),
                      "firing_HighCPU.json")],
    "high-cpu-resolved": [
        Step(_high_cpu(("2026-11-26T14:14:08.205473Z",) * 2, generator="http://127.0.0.1:9090/graph"), None),
        Step(_high_cpu(("2026-11-26T14:14:08.205473Z",) * 2, "2026-11-26T14:24:07.205473Z",
                       generator="http://127.0.0.1:9090/graph"), "resolved_HighCPU.json"),
    ],
    "disk-full": [Step([alert({"alertname": "DiskFull", "instance": "node3:9100", "severity": "warning",
                               "team": "storage"}, {"description": "/var on node3", "summary": "Disk 85% full"},
                              starts="2026-11-26T14:23:41.117119324Z", generator="http://127.0.0.1:9090/graph")],
                       "firing_DiskFull.json")],
    # One group, two routes: the warning alert resolves first, then the critical one.
    "mixed": [
        Step([_mixed("a", "warning", starts="2026-11-26T14:28:02.814978957Z"),
              _mixed("b", "critical", starts="2026-11-26T14:28:02.835423734Z")], "mixed_step1_firing.json"),
        Step([_mixed("a", "warning", starts=LONG_AGO, ends=LONG_AGO)], "mixed_step2_firing.json"),
        Step([_mixed("b", "critical", starts=LONG_AGO, ends=LONG_AGO)], "mixed_step3_resolved.json"),
    ],
    "flip-target-down": [Step(_flip(), "prometheus_firing_FlipTargetDown.json"),
                         Step(_flip("2026-11-26T14:30:39.445Z"), "prometheus_resolved_FlipTargetDown.json")],
}


def fixture_names() -> list[str]:
    """Every fixture the scenarios write."""
    return sorted(s.fixture for steps in SCENARIOS.values() for s in steps if s.fixture)


# ---------------------------------------------------------------------------------------------- receiver


class Receiver:
    """A webhook receiver on loopback that queues every body it is sent."""

    def __init__(self) -> None:
        bodies: queue.Queue[bytes] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.put(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the capture reports what it saved
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fixture-receiver", daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next(self, what: str) -> bytes:
        """The next webhook body; fails after WEBHOOK_WITHIN seconds without one."""
        try:
            return self.bodies.get(timeout=WEBHOOK_WITHIN)
        except queue.Empty:
            raise RuntimeError(f"no webhook from Alertmanager within {WEBHOOK_WITHIN:g}s for {what}") from None


# ------------------------------------------------------------------------------------------ Alertmanager


def alertmanager_binary() -> str:
    """Debian's prometheus-alertmanager, or an upstream `alertmanager` on PATH."""
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        raise RuntimeError("no Alertmanager on PATH: apt-get install prometheus-alertmanager")
    return found


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    # A fast group_interval for the steps; no repeat within a capture.
    return {"route": {"receiver": "webhook", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                      "repeat_interval": "1h"},
            "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}]}


@contextlib.contextmanager
def alertmanager(binary: str, home: Path, webhook_url: str) -> Iterator[str]:
    """An unclustered Alertmanager on loopback for one scenario; yields its URL."""
    home.mkdir(parents=True)
    config = home / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config(webhook_url)), encoding="utf-8")
    url = f"http://{LOOPBACK}:{free_port()}"
    proc = Process(home.name, [binary, f"--config.file={config}", f"--storage.path={home / 'data'}",
                               f"--web.listen-address={url.removeprefix('http://')}", "--cluster.listen-address=",
                               f"--web.external-url={EXTERNAL_URL}"], home / "alertmanager.log").start()
    try:
        wait_http_ok(f"{url}/-/ready", proc)
        yield url
    finally:
        proc.stop()


def post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        if resp.status != 200:
            raise RuntimeError(f"POST /api/v2/alerts answered {resp.status}")


def fixture_text(body: bytes) -> str:
    """A webhook body as the fixtures store it: indented JSON, ASCII escapes, a final newline."""
    return json.dumps(json.loads(body), indent=2) + "\n"


def capture(out: Path, workdir: Path, binary: str | None = None) -> list[Path]:
    """Run every scenario and write its fixtures into `out`; returns the files written."""
    binary = binary or alertmanager_binary()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, steps in SCENARIOS.items():
        with Receiver() as receiver, alertmanager(binary, workdir / name, receiver.url) as url:
            for step in steps:
                post_alerts(url, step.alerts)
                body = receiver.next(step.fixture or f"the first notification of {name}")
                if step.fixture is not None:
                    path = out / step.fixture
                    path.write_text(fixture_text(body), encoding="utf-8")
                    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Capture the Alertmanager webhook fixtures from a real Alertmanager.")
    parser.add_argument("--out", type=Path, default=FIXTURES_DIR / "alertmanager",
                        help="where to write the JSON files (default: %(default)s)")
    parser.add_argument("--alertmanager", help="the Alertmanager binary (default: found on PATH)")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="a2v-capture-") as workdir:
            for path in capture(args.out, Path(workdir), args.alertmanager):
                print(f"wrote {path}")
    except RuntimeError as exc:
        print(f"capture-fixtures: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
