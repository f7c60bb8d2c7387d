"""Shared test helpers: a settable clock, a small config, payload builders, the dispatcher's loop driven."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alert2voice.config import Config
from alert2voice.config_file import parse_config

# Captured Alertmanager payloads (alertmanager/*.json) and the matcher conformance table; scripts/capture-fixtures.py
# regenerates the payloads from a real Alertmanager.
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

T0 = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # a Thursday afternoon: nobody in quiet hours

CONFIG = """
server: {listen: 127.0.0.1:9095, public_url: http://127.0.0.1:9095, max_body_bytes: 64KiB}
webhook_auth:
  bearer_tokens: [tok-one-secret, tok-two-secret]
provider:
  base_url: http://127.0.0.1:1
  service_key: svc-key-secret
  caller_id: "+15550001234"
  callback: {auth_id: A2V, bearer_token: cb-token-secret, deadline: 2m}
  rate_limit: 1000/s
  retry: {initial: 1s, max: 1m, give_up_after: 15m}
store: {backend: memory}
contacts:
  alice: {number: "+14155550101", timezone: America/Los_Angeles,
          quiet_hours: {from: "22:00", to: "07:00", unless_severity: [critical]}}
  bob: {number: "+442071838750", timezone: Europe/London}
routes:
  - name: payments
    matchers: ['team="payments"']
    escalation:
      - {call: alice, attempts: 2, interval: 3m}
      - {call: bob, attempts: 1, interval: 5m}
    send_resolved: true
  - name: catch-all
    matchers: []
    escalation: []
throttle:
  per_number: [{calls: 3, per: 15m}]
"""

# make_config(**INTERACTIVE): the test config with calls in interactive mode (SPEC §5).
INTERACTIVE = {'  caller_id: "+15550001234"\n': '  caller_id: "+15550001234"\n  mode: interactive\n'}


class FakeClock:
    """A clock tests move by hand; nothing waits on it."""

    def __init__(self, start: datetime = T0) -> None:
        self.t = start
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # a real wait, as the service's Clock: SleepingClock moves time on instead

    def advance(self, delta: timedelta | float) -> None:
        d = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        self.t += d
        self.mono += d.total_seconds()


class SleepingClock(FakeClock):
    """A FakeClock whose sleep() moves time on at once (and yields) and records what was asked."""

    def __init__(self, start: datetime = T0) -> None:
        super().__init__(start)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)


def make_config(text: str = CONFIG, **replace: str) -> Config:
    """The test config, with textual replacements applied."""
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_config(text, file="test.yaml", env={})


def alert(labels: dict[str, str], *, status: str = "firing", summary: str = "", starts: datetime = T0) -> dict:
    """One alert of a webhook payload."""
    return {"status": status, "labels": labels, "annotations": {"summary": summary} if summary else {},
            "startsAt": (starts - timedelta(minutes=5)).isoformat(),
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else starts.isoformat(),
            "generatorURL": "", "fingerprint": ""}


def payload(*alerts: dict, group_key: str = '{}:{alertname="HighCPU"}', **extra: Any) -> dict:
    """A version-4 webhook payload around these alerts."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {"receiver": "voice", "status": status, "alerts": list(alerts), "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "version": "4",
            "groupKey": group_key, "truncatedAlerts": 0, **extra}


PAYMENTS = {"alertname": "HighCPU", "team": "payments", "severity": "critical", "instance": "node1:9100"}


# Dispatchers whose production loop settle() started, stopped by the `dispatcher_loops` fixture (conftest.py).
RUNNING: dict[object, asyncio.Task[None]] = {}


async def settle(dispatcher) -> None:
    """Run the dispatcher's own loop (started on first use) until nothing is in flight and nothing is due now.

    Move the FakeClock first to make later work due: the loop takes it as production does.
    """
    if not dispatcher.running and dispatcher not in RUNNING:  # an app runs its own
        RUNNING[dispatcher] = asyncio.create_task(dispatcher.run(), name="dispatcher under test")
    await dispatcher.settled()
