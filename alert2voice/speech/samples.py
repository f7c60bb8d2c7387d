"""The sample alerts `check-config` (Speech.check) renders every template against before any real alert meets it."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..alertmanager import Alert, Payload
from .variables import SpeechContext


def sample_payload(now: datetime) -> Payload:
    """A realistic firing group: several alerts, markup characters in labels, one without annotations."""
    alerts = [
        Alert(
            status="firing",
            labels={
                "alertname": "KubePodCrashLooping",
                "severity": "critical",
                "cluster": "prod-eu-1",
                "namespace": "payments",
                "pod": "api-7d9f<b>&\"'",
                "instance": "10.2.3.4:8080",
                "job": "kube-state-metrics",
            },
            annotations={
                "summary": "Pod payments/api is crash looping <&>",
                "description": "Restarted 5 times in 10m. See https://runbooks.example.com/KubePodCrashLooping",
                "runbook_url": "https://runbooks.example.com/KubePodCrashLooping",
            },
            startsAt=now - timedelta(minutes=12),
            generatorURL="http://prometheus:9090/graph?g0.expr=a%3Cb&g0.tab=1",
            fingerprint="5ef77f1f8bb1b4d1",
        ),
        Alert(
            status="firing",
            labels={
                "alertname": "HighCPUUsage",
                "severity": "warning",
                "instance": "node1:9100",
                "job": "node",
            },
            annotations={"summary": "CPU at 95.3% on node1 & node2", "description": "CPU > 90% for 5m"},
            startsAt=now - timedelta(hours=1, minutes=5),
            fingerprint="c139641b6822c29d",
        ),
        Alert(
            status="firing",
            labels={"alertname": "NodeFilesystemAlmostFull", "instance": "[::1]:9100"},
            startsAt=now - timedelta(days=3),
            fingerprint="0bb1d603e9bcb6cf",
        ),
        Alert(
            status="firing",
            labels={"alertname": "TargetDown", "severity": "page", "job": 'flip "a<b"'},
            annotations={"summary": "Target down"},
            startsAt=now - timedelta(seconds=30),
            fingerprint="3f9479ec671b7208",
        ),
    ]
    return Payload(
        version="4",
        receiver="voice",
        status="firing",
        alerts=alerts,
        groupLabels={"cluster": "prod-eu-1"},
        commonLabels={},
        commonAnnotations={},
        externalURL="http://alertmanager.monitoring.svc:9093",
        groupKey='{}:{cluster="prod-eu-1"}',
        truncatedAlerts=1,
    )


def sample_contexts(now: datetime) -> list[SpeechContext]:
    """Contexts check() renders: a firing group, a single firing alert, the group resolved, a bare alert."""
    payload = sample_payload(now)
    single = payload.model_copy(update={"alerts": payload.alerts[:1], "truncatedAlerts": 0})
    ended = [a.model_copy(update={"status": "resolved", "endsAt": now - timedelta(minutes=1)}) for a in payload.alerts]
    resolved = payload.model_copy(update={"status": "resolved", "alerts": ended})
    # Only what every alert has: no instance, severity or summary, no group labels.
    bare_alert = Alert(status="firing", labels={"alertname": "Watchdog"}, startsAt=now - timedelta(minutes=2),
                       fingerprint="e1f6a2b9c0d3e4f5")
    bare = Payload(version="4", receiver="voice", status="firing", alerts=[bare_alert], groupKey="{}:{}")
    return [
        SpeechContext(payload, payload.alerts, "sample-route", "sample-contact", now),
        SpeechContext(single, single.alerts, "sample-route", "sample-contact", now),
        SpeechContext(resolved, resolved.alerts, "sample-route", "sample-contact", now, status="resolved"),
        SpeechContext(bare, bare.alerts, "sample-route", "sample-contact", now),
    ]
