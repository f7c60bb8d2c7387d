"""Alertmanager webhook payload (version 4) as pydantic models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Alertmanager sends Go's zero time for alerts that have not ended.
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


class _Model(BaseModel):
    # Newer Alertmanager releases add fields (notification_reason 0.32+, routeLabels 0.34+): accept them.
    model_config = ConfigDict(extra="allow", frozen=True)


class Alert(_Model):
    """One alert of a group, as Alertmanager notifies it."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime = GO_ZERO_TIME
    generatorURL: str = ""
    fingerprint: str = ""

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    @property
    def ended_at(self) -> datetime | None:
        """When the alert ended, or None for the zero time Alertmanager sends on firing alerts."""
        return None if self.endsAt.year <= 1 else self.endsAt


class Payload(_Model):
    """A webhook notification: one alert group."""

    version: Literal["4"]
    receiver: str
    status: Literal["firing", "resolved"]
    alerts: list[Alert]
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    groupKey: str
    truncatedAlerts: int = Field(default=0, ge=0)

    @property
    def firing_alerts(self) -> list[Alert]:
        return [a for a in self.alerts if a.firing]

    @property
    def resolved_alerts(self) -> list[Alert]:
        return [a for a in self.alerts if not a.firing]


class PayloadError(ValueError):
    """A webhook body that can never be a valid version-4 payload; the message names the field."""


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """One line naming each offending field, e.g. `alerts.0.labels: Input should be a valid dictionary`."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_payload(body: bytes | str | dict) -> Payload:
    """Parse a webhook body; raises PayloadError naming the field that is wrong."""
    try:
        if isinstance(body, dict):
            return Payload.model_validate(body)
        return Payload.model_validate_json(body)
    except ValidationError as exc:
        if isinstance(body, dict) or exc.errors()[0]["type"] != "json_invalid":
            version = body.get("version") if isinstance(body, dict) else None
            if version is not None and version != "4":
                raise PayloadError(f"version: unsupported webhook version {version!r}, expected '4'") from None
            raise PayloadError(describe_validation_error(exc)) from None
        raise PayloadError(f"malformed JSON: {exc.errors()[0]['msg']}") from None
