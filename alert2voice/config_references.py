"""The config's cross-references, checked once every section is read: contacts and rotations that routes and
heartbeats name must exist, names must be unique, and acknowledgement.silence takes alertmanager.urls' first
URL when it names none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config, EscalationStep

HEARTBEAT_ROUTE_PREFIX = "heartbeat:"

_KeyProblem = tuple[tuple[Any, ...], str]  # a key path and what is wrong there


def _step_problems(config: Config, at: tuple[Any, ...], steps: list[EscalationStep]) -> list[_KeyProblem]:
    """Escalation steps naming a contact or rotation that does not exist."""
    problems: list[_KeyProblem] = []
    for s, step in enumerate(steps):
        rot = step.rotation
        if rot is not None and rot not in config.rotations:
            problems.append(((*at, "escalation", s, "call"),
                             f"unknown rotation {rot!r} (rotations: {_names(config.rotations)})"))
        elif rot is None and step.call not in config.contacts:
            problems.append(((*at, "escalation", s, "call"),
                             f"unknown contact {step.call!r} (contacts: {_names(config.contacts)};"
                             " write rotation:NAME for a rotation)"))
    return problems


def _names(d: Mapping[str, Any]) -> str:
    return ", ".join(sorted(d)) or "none defined"


def reference_problems(config: Config) -> list[_KeyProblem]:
    """Every broken reference of the config, as (key path, what is wrong); fills the silence's default URL."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    for name, rot in config.rotations.items():
        for i, member in enumerate(rot.members):
            if member not in config.contacts:
                problems.append((("rotations", name, "members", i), f"unknown contact {member!r}"))
        for i, o in enumerate(rot.overrides):
            if o.contact not in config.contacts:
                problems.append((("rotations", name, "overrides", i, "contact"),
                                 f"unknown contact {o.contact!r}"))
    for section, items in (("routes", config.routes), ("heartbeats", config.heartbeats)):
        seen: set[str] = set()
        for r, item in enumerate(items):
            if item.name in seen:
                problems.append(((section, r, "name"), f"duplicate {section[:-1]} name {item.name!r}"))
            seen.add(item.name)
            if section == "routes" and item.name.startswith(HEARTBEAT_ROUTE_PREFIX):
                problems.append(((section, r, "name"), f"route names starting with {HEARTBEAT_ROUTE_PREFIX!r}"
                                 " are the heartbeats' own"))
            problems += _step_problems(config, (section, r), item.escalation)
    silence = config.acknowledgement.silence
    if silence is not None and silence.alertmanager_url is None:
        if config.alertmanager is None:
            problems.append((("acknowledgement", "silence", "alertmanager_url"),
                             "required when alertmanager.urls is not set"))
        else:
            object.__setattr__(silence, "alertmanager_url", config.alertmanager.urls[0])
    return problems
