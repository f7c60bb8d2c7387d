"""Routes, page keys and escalation targets: which alerts go to which route, and who to call now."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .alertmanager import Alert, Payload
from .config import Config, EscalationStep, HeartbeatConfig, RouteConfig
from .matchers import matches_all

# Webex Connect accepts at most 50 characters of [A-Za-z0-9-] as correlationId.
CORRELATION_PREFIX = "a2v"
_KEY_CHARS = 24  # 96 bits of the page key; with the admission's nonce, ids never repeat across incarnations


def match_routes(config: Config, labels: Mapping[str, str]) -> list[RouteConfig]:
    """The routes an alert with these labels goes to: the first match, plus later ones after `continue: true`."""
    out: list[RouteConfig] = []
    for route in config.routes:
        if matches_all(route.matchers, labels):
            out.append(route)
            if not route.continue_:
                break
    return out


def match_heartbeat(config: Config, labels: Mapping[str, str]) -> HeartbeatConfig | None:
    """The heartbeat an alert with these labels refreshes (such an alert is not routed); a heartbeat without
    matchers is refreshed only by POST /heartbeats/{name}."""
    return next((hb for hb in config.heartbeats if hb.matchers and matches_all(hb.matchers, labels)), None)


def alert_identity(labels: Mapping[str, str], ignore: Iterable[str]) -> str:
    """An alert's identity: its label set minus the ignored labels, sorted, as `name=value` lines.

    A name or value that could be misread (a newline, a backslash, a leading quote, or `=` in a name)
    is written as a JSON string instead, so two different label sets never give the same identity.
    Cheaper than JSON for the whole set, and this runs for every alert of every webhook.
    """
    skip = set(ignore)
    return "\n".join(f"{_escape(k, '=')}={_escape(v, '')}" for k, v in sorted(labels.items()) if k not in skip)


def _escape(text: str, also: str) -> str:
    risky = "\n" in text or "\\" in text or text[:1] == '"' or (also and also in text)
    return json.dumps(text, ensure_ascii=False) if risky else text


def page_key(route: str, group_key: str, identities: Iterable[str]) -> str:
    """sha256(route name, group key, sorted identities of the firing alerts), hex (SPEC §1)."""
    h = hashlib.sha256()
    for part in (route, group_key, *sorted(set(identities))):
        data = part.encode("utf-8")
        # Length-prefixed so that no two different tuples hash alike.
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def claim_key(route: str, group_key: str, identity: str) -> str:
    """The dedup claim for one alert identity within one route and group."""
    return page_key(route, group_key, [identity])


def correlation_id(key: str, nonce: str, attempt: int, *, kind: str = "") -> str:
    """The correlationId of one attempt of one admission of a page: `a2v-<24 hex of the key>-<nonce>-<attempt>`.

    The nonce is drawn once per admission (pages.new_nonce): a page re-admitted with the same key, after its
    alerts resolved and fired again or the dedup window passed, never reuses an id of the incident before it,
    so a late or replayed receipt of that incident cannot move the new one. At most 50 characters.
    """
    middle = f"-{nonce}" if nonce else ""  # pages stored before nonces existed have none
    return f"{CORRELATION_PREFIX}-{key[:_KEY_CHARS]}{middle}-{kind}{attempt}"


@dataclass(frozen=True)
class PlannedPage:
    """A route's share of one alert group: the firing alerts it pages for, and the resolved ones it saw."""

    route: RouteConfig
    group_key: str
    key: str
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    identities: tuple[str, ...]
    resolved_identities: tuple[str, ...]
    claims: tuple[str, ...] = ()  # one dedup claim per identity (claim_key), computed once by plan()

    @property
    def severities(self) -> set[str]:
        return {a.labels.get("severity", "") for a in self.firing}


@dataclass(frozen=True)
class Plan:
    """What one webhook implies: a planned page per route, the alerts no route matched, and the heartbeats its
    firing alerts refresh."""

    pages: list[PlannedPage] = field(default_factory=list)
    unrouted: list[Alert] = field(default_factory=list)
    beats: list[str] = field(default_factory=list)


def plan(config: Config, payload: Payload) -> Plan:
    """Route every alert of the group; each route that matched at least one alert gets a planned page.

    An alert that matches a heartbeat is not routed: firing, it refreshes the heartbeat.
    """
    by_route: dict[str, tuple[RouteConfig, list[Alert], list[Alert]]] = {}
    unrouted: list[Alert] = []
    beats: list[str] = []
    for alert in payload.alerts:
        heartbeat = match_heartbeat(config, alert.labels) if config.heartbeats else None
        if heartbeat is not None:
            if alert.firing and heartbeat.name not in beats:
                beats.append(heartbeat.name)
            continue
        routes = match_routes(config, alert.labels)
        if not routes:
            unrouted.append(alert)
        for route in routes:
            _, firing, resolved = by_route.setdefault(route.name, (route, [], []))
            (firing if alert.firing else resolved).append(alert)
    pages = []
    ignore = config.dedup.ignore_labels
    for route, firing, resolved in by_route.values():
        identities = tuple(sorted({alert_identity(a.labels, ignore) for a in firing}))
        pages.append(PlannedPage(
            route=route,
            group_key=payload.groupKey,
            key=page_key(route.name, payload.groupKey, identities),
            firing=tuple(firing),
            resolved=tuple(resolved),
            identities=identities,
            resolved_identities=tuple(sorted({alert_identity(a.labels, ignore) for a in resolved})),
            claims=tuple(claim_key(route.name, payload.groupKey, i) for i in identities),
        ))
    return Plan(pages, unrouted, beats)


class PlanCache:
    """The plans of recently seen webhook bodies, by the sha256 of the bytes.

    Alertmanager resends a group byte for byte (every `repeat_interval`, on a retry, and from each HA
    peer with its own externalURL), and plan() is a pure function of the body and the config: a resend
    skips parsing and routing. Bounded in entries and in the size of the bodies it keeps; a reload
    (another Config object) makes every entry a miss.
    """

    def __init__(self, entries: int = 128, max_body: int = 32 * 1024) -> None:
        self.entries, self.max_body = entries, max_body
        self._plans: OrderedDict[bytes, tuple[Config, Payload, Plan]] = OrderedDict()

    def key(self, body: bytes) -> bytes | None:
        """The cache key of a body; None for a body too large to keep."""
        return hashlib.sha256(body).digest() if len(body) <= self.max_body else None

    def get(self, config: Config, key: bytes | None) -> tuple[Payload, Plan] | None:
        found = self._plans.get(key) if key is not None else None
        if found is None or found[0] is not config:
            return None
        self._plans.move_to_end(key)  # type: ignore[arg-type]
        return found[1], found[2]

    def put(self, config: Config, key: bytes | None, payload: Payload, the_plan: Plan) -> None:
        if key is None:
            return
        self._plans[key] = (config, payload, the_plan)
        if len(self._plans) > self.entries:
            self._plans.popitem(last=False)

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)


# ------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """Who an escalation step calls at an instant, and why; `contact` is None when nobody can be called."""

    step: int
    contact: str | None
    number: str | None
    reason: str
    quiet: bool = False


def resolve_step(config: Config, index: int, step: EscalationStep, at: datetime,
                 severities: Iterable[str] = ()) -> Target:
    """Who step `index` calls at `at`: the contact, or the rotation's on-call contact; quiet hours applied."""
    rotation = step.rotation
    if rotation is not None:
        who = config.rotation(rotation).on_call(at)
        if who.contact is None:
            return Target(index, None, None, who.reason)
        contact, reason = who.contact, who.reason
    else:
        contact, reason = step.call, f"named in step {index + 1}"
    cfg = config.contacts[contact]
    quiet = cfg.quiet()
    sev = set(severities)
    if quiet is not None and quiet.applies(at, sev):
        local = at.astimezone(cfg.timezone).strftime("%H:%M %Z")
        return Target(index, contact, cfg.number,
                      f"{reason}; in quiet hours ({local}, severity {', '.join(sorted(sev)) or 'none'})",
                      quiet=True)
    return Target(index, contact, cfg.number, reason)


def explain_route(config: Config, route: RouteConfig, at: datetime,
                  severities: Sequence[str] = ()) -> list[Target]:
    """Every escalation step of a route resolved at `at`, for `routes test` and `render`."""
    return [resolve_step(config, i, step, at, severities) for i, step in enumerate(route.escalation)]


def first_callable(config: Config, route: RouteConfig, at: datetime, severities: Iterable[str] = (),
                   start: int = 0) -> Target | None:
    """The first step from `start` on that names someone callable now (not quiet, someone on call)."""
    sev = list(severities)
    for i in range(start, len(route.escalation)):
        target = resolve_step(config, i, route.escalation[i], at, sev)
        if target.contact is not None and not target.quiet:
            return target
    return None
