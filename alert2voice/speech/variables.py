"""What a template sees: the call's context, each alert as a view, and the variables (docs/templates.md), with
annotations and labels cut to the length budget's current lengths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..alertmanager import Alert, Payload
from ..config import SpeechConfig

_SEVERITY_ORDER = ("critical", "page", "high", "error", "major", "warning", "medium", "minor", "low", "info")
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(_SEVERITY_ORDER)}


@dataclass(frozen=True)
class SpeechContext:
    """What one call is about: the group, the alerts to speak, who is called, and when."""

    payload: Payload
    alerts: Sequence[Alert]
    route: str
    contact: str
    now: datetime
    status: Literal["firing", "resolved"] = "firing"
    language: str = SpeechConfig.model_fields["language"].default
    ack_digit: str | None = None
    menu: str | None = None  # interactive.prompt_text(): the keys of the phone menu, as said

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("SpeechContext.now must be timezone-aware")


@dataclass(frozen=True)
class AlertView:
    """One alert as templates see it."""

    labels: dict[str, str]
    annotations: dict[str, str]
    status: str
    startsAt: datetime
    endsAt: datetime | None
    generatorURL: str
    fingerprint: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.annotations.get("description") or self.alertname

    @property
    def description(self) -> str:
        return self.annotations.get("description", "")

    @property
    def firing(self) -> bool:
        return self.status == "firing"


def cut(text: str, limit: int | None) -> str:
    """The text, cut to `limit` characters with an ellipsis (None: whole)."""
    return text if limit is None or len(text) <= limit else text[:limit].rstrip() + "…"


def _cut_all(values: Mapping[str, str], limit: int | None) -> dict[str, str]:
    # A copy even uncut: a template may change the dict it is given, never the payload's.
    if limit is None:
        return dict(values)
    return {key: cut(value, limit) for key, value in values.items()}


def _view(alert: Alert, annotation_cut: int | None, label_cut: int | None) -> AlertView:
    return AlertView(
        labels=_cut_all(alert.labels, label_cut),
        annotations=_cut_all(alert.annotations, annotation_cut),
        status=alert.status,
        startsAt=alert.startsAt,
        endsAt=alert.ended_at,
        generatorURL=cut(alert.generatorURL, label_cut),
        fingerprint=alert.fingerprint,
    )


def _most_severe(severities: Sequence[str]) -> str:
    present = [s for s in severities if s]
    known = [s for s in present if s.lower() in _SEVERITY_RANK]
    if known:
        return min(known, key=lambda s: _SEVERITY_RANK[s.lower()])
    return present[0] if present else ""


def variables(ctx: SpeechContext, spoken: int, annotation_cut: int | None, label_cut: int | None) -> dict[str, Any]:
    """What a template sees for this call: `spoken` alerts said, annotations and labels cut to these lengths."""
    payload = ctx.payload
    alerts = [_view(alert, annotation_cut, label_cut) for alert in ctx.alerts]
    ends = [alert.endsAt for alert in alerts]
    still_firing = not alerts or any(end is None for end in ends)
    return {
        "alerts": alerts,
        "alerts_spoken": alerts[:spoken],
        "more": len(alerts) - len(alerts[:spoken]) + payload.truncatedAlerts,
        "total": len(alerts) + payload.truncatedAlerts,
        "alertnames": list(dict.fromkeys(alert.alertname for alert in alerts if alert.alertname)),
        "severity": _most_severe([alert.severity for alert in alerts]),
        "started_at": min((alert.startsAt for alert in alerts), default=ctx.now),
        "ended_at": ctx.now if still_firing else max(end for end in ends if end is not None),
        "group_labels": _cut_all(payload.groupLabels, label_cut),
        "common_labels": _cut_all(payload.commonLabels, label_cut),
        "common_annotations": _cut_all(payload.commonAnnotations, annotation_cut),
        "receiver": cut(payload.receiver, label_cut),
        "external_url": cut(payload.externalURL, label_cut),
        "route": cut(ctx.route, label_cut),
        "contact": cut(ctx.contact, label_cut),
        "status": ctx.status,
        "now": ctx.now,
        "language": cut(ctx.language, label_cut),
        "ack_digit": ctx.ack_digit,
        "menu": ctx.menu,
    }
