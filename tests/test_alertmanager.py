"""The version-4 webhook payload: every captured fixture, and the edge cases Alertmanager really sends."""

from __future__ import annotations

import json

import pytest

from alert2voice.alertmanager import GO_ZERO_TIME, PayloadError, parse_payload
from tests.support import alert, payload

FIXTURES = ["firing_DiskFull.json", "firing_HighCPU.json", "mixed_step1_firing.json", "mixed_step2_firing.json",
            "mixed_step3_resolved.json", "prometheus_firing_FlipTargetDown.json",
            "prometheus_resolved_FlipTargetDown.json", "resolved_HighCPU.json"]


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_parses(fixtures_dir, name):
    raw = (fixtures_dir / "alertmanager" / name).read_bytes()
    data = json.loads(raw)
    p = parse_payload(raw)
    assert p.version == "4"
    assert p.groupKey == data["groupKey"]
    assert len(p.alerts) == len(data["alerts"])
    assert [a.labels for a in p.alerts] == [a["labels"] for a in data["alerts"]]
    assert [a.status for a in p.alerts] == [a["status"] for a in data["alerts"]]
    for a in p.firing_alerts:
        assert a.ended_at is None  # "0001-01-01T00:00:00Z" on firing alerts


def test_mixed_firing_and_resolved(fixtures_dir):
    p = parse_payload((fixtures_dir / "alertmanager" / "mixed_step2_firing.json").read_bytes())
    assert p.status == "firing"
    assert len(p.firing_alerts) == 1 and len(p.resolved_alerts) == 1
    assert p.resolved_alerts[0].ended_at is not None


def test_zero_end_time_and_empty_generator_url():
    p = parse_payload(json.dumps(payload(alert({"alertname": "A"}))))
    assert p.alerts[0].endsAt == GO_ZERO_TIME
    assert p.alerts[0].ended_at is None
    assert p.alerts[0].generatorURL == ""


@pytest.mark.parametrize("value", ['<b>&"\'', "line1\nline2", "tab\there", "back\\slash", "emoji 🔥🚒",
                                   "\u003cscript\u003e", "ünïcödé"])
def test_label_values_survive_exactly(value):
    p = parse_payload(json.dumps(payload(alert({"alertname": "A", "v": value}, summary=value))))
    assert p.alerts[0].labels["v"] == value
    assert p.alerts[0].annotations["summary"] == value


def test_truncated_alerts_and_unknown_fields_accepted():
    body = payload(alert({"alertname": "A"}), truncatedAlerts=7, notification_reason="repeat interval elapsed",
                   routeLabels={"team": "x"})
    p = parse_payload(json.dumps(body))
    assert p.truncatedAlerts == 7


def test_prometheus_operator_receiver_names():
    p = parse_payload(json.dumps(payload(alert({"alertname": "A"}), receiver="monitoring/alert2voice/voice")))
    assert p.receiver == "monitoring/alert2voice/voice"


@pytest.mark.parametrize(("body", "needle"), [
    (b"{", "malformed JSON"),
    (json.dumps({**payload(alert({"alertname": "A"})), "version": "3"}), "version"),
    (json.dumps({**payload(alert({"alertname": "A"})), "alerts": "x"}), "alerts"),
    (json.dumps(payload({"status": "maybe", "labels": {}, "startsAt": "2026-01-01T00:00:00Z"})), "alerts.0.status"),
    (json.dumps({k: v for k, v in payload(alert({"alertname": "A"})).items() if k != "groupKey"}), "groupKey"),
    (json.dumps({**payload(alert({"alertname": "A"})), "truncatedAlerts": -1}), "truncatedAlerts"),
])
def test_errors_name_the_field(body, needle):
    with pytest.raises(PayloadError, match=needle):
        parse_payload(body)
