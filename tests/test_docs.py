"""The documentation stays true: every config key is in the reference, the example uses real keys, links resolve."""

from __future__ import annotations

import re
import subprocess
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, PydanticSchemaGenerationError, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from alert2voice.config import Config, ThrottleConfig
from alert2voice.units import format_duration, parse_duration
from tests.e2e_support import readme_alertmanager_config, require_alertmanager

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "docs" / "configuration.md"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# ------------------------------------------------------------------------------------------- key paths


def _nested(annotation: Any, suffix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """The models inside a field's type, each with the path suffix that reaches it: `[]` for a list item,
    `.<name>` for a mapping value."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield suffix, annotation
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _nested(arg, suffix)
    elif origin is list:
        yield from _nested(typing.get_args(annotation)[0], suffix + "[]")
    elif origin is dict:
        yield from _nested(typing.get_args(annotation)[1], suffix + ".<name>")


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """A model's keys as YAML spells them (`from`, `continue`, `global`), with their types."""
    return {field.alias or name: field.annotation for name, field in model.model_fields.items()}


def key_paths(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[str]:
    """Every key path of the config models, as the reference writes them: `routes[].escalation[].call`."""
    for key, annotation in _keys(model).items():
        path = prefix + key
        yield path
        for suffix, inner in _nested(annotation):
            yield from key_paths(inner, path + suffix + ".")


def unknown_keys(value: Any, annotation: Any, path: str, seen: list[str]) -> Iterator[str]:
    """The key paths in parsed YAML `value` that the model `annotation` has no key for; `seen` collects the rest."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from unknown_keys(value, arg, path, seen)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        keys = _keys(annotation)
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in keys:
                yield where
                continue
            seen.append(where)
            yield from unknown_keys(item, keys[key], where, seen)
    elif origin is list and isinstance(value, list):
        for item in value:
            yield from unknown_keys(item, typing.get_args(annotation)[0], path + "[]", seen)
    elif origin is dict and isinstance(value, dict):
        for item in value.values():
            yield from unknown_keys(item, typing.get_args(annotation)[1], path + ".<name>", seen)


def test_the_walk_reaches_nested_and_aliased_keys():
    paths = set(key_paths())
    assert {"server.listen", "provider.callback.header.value_file", "provider.retry.give_up_after",
            "contacts.<name>.quiet_hours.from", "rotations.<name>.overrides[].to", "routes[].continue",
            "routes[].escalation[].call", "routes[].audio.mediaId", "throttle.global.calls",
            "throttle.per_number[].per", "acknowledgement.silence.duration"} <= paths
    assert not any(p.endswith(("from_", "continue_", "global_")) for p in paths)


def test_every_config_key_is_in_the_reference():
    text = REFERENCE.read_text(encoding="utf-8")
    missing = [path for path in key_paths() if f"`{path}`" not in text]
    assert missing == [], f"docs/configuration.md does not document {missing}"


def test_the_reference_states_the_throttle_defaults_the_models_have():
    """Defaults live in the models; the reference's default column says the same (the durations of `throttle`)."""
    text = REFERENCE.read_text(encoding="utf-8")
    defaults = ThrottleConfig()
    documented = dict(re.findall(r"^\| `throttle\.(\w+)` \| duration \| `([^`]+)` \|", text, re.M))
    assert documented == {"max_hold": format_duration(defaults.max_hold)}


def model_fields(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every field of the config models with its key path, as key_paths() writes them."""
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        yield path, field
        for suffix, inner in _nested(field.annotation):
            yield from model_fields(inner, path + suffix + ".")


def reference_defaults() -> Iterator[tuple[str, str]]:
    """(key path, default cell) of every row of the reference's `| key | type | default | what |` tables."""
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and (key := re.fullmatch(r"`([^`]+)`", cells[0])):
            yield key.group(1), cells[2].replace("\\|", "|")


def documented_default_problem(path: str, cell: str, field: FieldInfo, paths: set[str]) -> str | None:
    """What is wrong with the reference's default `cell` for the model field at `path`, or None."""
    if cell == "":  # a secret and its _file: one of them, said in the words
        return None
    if cell == "required":
        return None if field.is_required() else f"documented as required, the model has {field.default!r}"
    if field.is_required():
        return f"the model requires it, the reference says {cell!r}"
    default = field.get_default(call_default_factory=True)
    written = re.search(r"`([^`]*)`", cell)
    if cell.startswith("none") or (written and written.group(1) in paths - {path}):
        # none, or another key's value ("`speech.language`", "the first of `alertmanager.urls`"): None in the model
        return None if default is None else f"documented as {cell!r}, the model has {default!r}"
    if cell == "see below":
        return None if isinstance(default, BaseModel) else f"documented as a section, the model has {default!r}"
    if written is None:
        return f"the default {cell!r} is not written as `value`"
    text = written.group(1)
    adapter = _adapter(field)
    for candidate in (text, yaml.safe_load(text)):  # as written (4MiB, a2v:), or as YAML reads it ("1", [a, b])
        try:
            if adapter.validate_python(candidate) == default:
                return None
        except ValidationError:
            continue
    return f"documented as {text!r}, the model has {default!r}"


def _adapter(field: FieldInfo) -> TypeAdapter[Any]:
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    try:
        return TypeAdapter(annotation)
    except PydanticSchemaGenerationError:  # ZoneInfo: a type the models allow as arbitrary
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))


def test_the_reference_states_the_defaults_the_models_have():
    """Defaults live in the models: every default (and every "required") the reference writes is the model's."""
    fields = dict(model_fields())
    rows = list(reference_defaults())
    problems = [f"{path}: {problem}" for path, cell in rows
                if (problem := documented_default_problem(path, cell, fields[path], set(fields))) is not None]
    assert problems == []
    assert {path for path, _ in rows} == set(fields)  # every key's default is stated, once per row


def test_a_wrong_documented_default_is_found():
    fields = dict(model_fields())
    paths = set(fields)
    assert documented_default_problem("speech.max_chars", "`2000`", fields["speech.max_chars"], paths) is None
    assert documented_default_problem("speech.max_chars", "`3000`", fields["speech.max_chars"], paths) is not None
    assert documented_default_problem("dedup.window", "`4h`", fields["dedup.window"], paths) is None
    assert documented_default_problem("dedup.window", "`2h`", fields["dedup.window"], paths) is not None
    assert documented_default_problem("provider.caller_id", "`+1`", fields["provider.caller_id"], paths) is not None
    assert documented_default_problem("store.key_prefix", "required", fields["store.key_prefix"], paths) is not None
    assert documented_default_problem("throttle.per_number", "`[{calls: 3, per: 15m}]`",
                                      fields["throttle.per_number"], paths) is not None


def test_the_example_config_uses_only_model_keys(example_config_path: Path):
    data = yaml.safe_load(example_config_path.read_text(encoding="utf-8"))
    seen: list[str] = []

    unknown = list(unknown_keys(data, Config, "", seen))

    assert unknown == [], f"config.example.yaml uses keys the config models do not have: {unknown}"
    assert len(seen) > 60  # the walk went through the whole example, not just its top level


def test_an_unknown_example_key_is_found():
    seen: list[str] = []
    data = {"routes": [{"name": "r", "escalation": [{"call": "a", "atempts": 2}]}], "contacts": {"a": {"nmber": 1}}}
    assert list(unknown_keys(data, Config, "", seen)) == ["routes[].escalation[].atempts", "contacts.<name>.nmber"]


# ----------------------------------------------------------------------------------------------- links

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def _prose(text: str) -> str:
    """Markdown without code blocks and inline code, where link syntax means nothing."""
    return _CODE.sub("", _FENCE.sub("", text))


def links(page: Path) -> list[str]:
    return _LINK.findall(_prose(page.read_text(encoding="utf-8")))


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives a Markdown page."""
    out: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n, candidate = 0, slug
        while candidate in out:
            n += 1
            candidate = f"{slug}-{n}"
        out.add(candidate)
    return out


def test_the_pages_are_there():
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    assert {"README.md", "docs/configuration.md", "docs/http-api.md", "docs/metrics.md", "docs/lifecycle.md",
            "docs/operations.md", "docs/troubleshooting.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_page_points_outside_the_repository(page: Path):
    text = page.read_text(encoding="utf-8")
    # Spelled in pieces so that `git grep` for these finds nothing in the repository, this file included.
    for needle in (".." + "/shared", "ALERT2VOICE" + "_SHARED", "/" + "work/", "SPEC" + ".md"):
        assert needle not in text, f"{page.name} mentions {needle!r}"
    for target in links(page):
        if page.parent == REPO / "docs" and target.startswith("https://"):
            continue  # a public reference page; the README links only inside the repository
        assert "://" not in target and not target.startswith(("/", "file:")), f"{page.name} links to {target}"
        if target.startswith("#"):
            continue
        resolved = (page.parent / target.partition("#")[0]).resolve()
        assert resolved.is_relative_to(REPO), f"{page.name} links outside the repository: {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page: Path):
    checked = []
    for target in links(page):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert file.suffix == ".md", f"{page.name}: an anchor into a non-Markdown file: {target}"
            assert anchor in anchors(file), f"{page.name} links to {target}: no such heading in {file.name}"
        checked.append(target)
    if page.name == "README.md":
        assert len(checked) >= 8  # it is the front page: it links the documentation


def test_anchors_follow_github():
    page = REPO / "docs" / "http-api.md"
    assert {"post-alerts", "get--ready", "post-callbackswebex"} <= anchors(page)


def _metric_names() -> set[str]:
    """Every sample name the service exports (a counter's `_total`, a histogram's series, an info's `_info`)."""
    from alert2voice.metrics import Metrics

    suffixes = {"counter": ["_total"], "histogram": ["", "_bucket", "_sum", "_count"], "info": ["_info"]}
    return {family.name + suffix for family in Metrics().registry.collect()
            for suffix in suffixes.get(family.type, [""])}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_metric_named_exists(page: Path):
    named = set(re.findall(r"\balert2voice_[a-z_]+[a-z]", page.read_text(encoding="utf-8")))
    unknown = named - _metric_names()
    assert not unknown, f"{page.name} names metrics the service does not export: {sorted(unknown)}"


# The log lines docs/troubleshooting.md tells readers to look for, each as the service writes it.
TROUBLESHOOTING_LOG_LINES = [
    "webhook refused", "store unavailable; answering 503 so Alertmanager retries", "no route matched",
    "call deferred by throttle", "call folded into a storm summary", "storm summary call placed",
    "provider error; retrying", "provider refused our credentials; call kept queued",
    "call outcome unknown; waiting for its receipts", "callback refused: wrong or missing credentials",
    "callback for an unknown call", "heartbeat missing; page opened", "webhook accepted",
]


def test_troubleshooting_quotes_log_lines_the_service_writes():
    page = " ".join((REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8").split())  # lines unwrapped
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "alert2voice").rglob("*.py"))
    for line in TROUBLESHOOTING_LOG_LINES:
        assert f"`{line}`" in page, f"troubleshooting.md no longer quotes {line!r}"
        assert f'"{line}"' in source, f"no log line {line!r} in alert2voice/"
    # Outcome lines are `call <outcome>`, built from CallState.
    from alert2voice.pages import CALL_OUTCOMES

    for outcome in re.findall(r"`call (\w+)`", page):
        assert outcome in CALL_OUTCOMES, f"troubleshooting.md quotes `call {outcome}`, not an outcome"


def _readme_yaml_blocks() -> list[Any]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def refresh_period(group_interval: str, repeat_interval: str) -> float:
    """Seconds between two notifications of an always-firing group: Alertmanager looks at a group every
    group_interval and resends at the first look at which more than repeat_interval has passed since the last
    send (logged a moment after its look, so a look exactly repeat_interval later is too early)."""
    interval = parse_duration(group_interval).total_seconds()
    repeat = parse_duration(repeat_interval).total_seconds()
    return (repeat // interval + 1) * interval


def test_refresh_period_as_measured():
    """Measured with Alertmanager 0.25 (README): 1m/1m resends every 120 s, 30s/1m every 90 s."""
    assert refresh_period("1m", "1m") == 120
    assert refresh_period("30s", "1m") == 90
    assert refresh_period("5m", "4h") == 4 * 3600 + 300


def test_readme_alertmanager_example_groups_and_keeps_the_heartbeat_alive():
    """The README's alertmanager.yml is complete: a route grouping by alertname (without group_by every alert
    shares one group, one page, one resolution: issue 20), a receiver posting to /alerts with a credential, and
    a Watchdog route whose real refresh period is at most half the README heartbeat's timeout, as stated."""
    config = readme_alertmanager_config()
    route = config["route"]
    assert "alertname" in route["group_by"]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert route["receiver"] in receivers
    hooks = {name: r["webhook_configs"][0] for name, r in receivers.items() if r.get("webhook_configs")}
    assert len(hooks) == 1
    (voice, hook), = hooks.items()
    assert hook["url"].endswith("/alerts") and hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["credentials_file"]
    children = route["routes"]
    assert any(r["receiver"] == voice and "severity" in " ".join(r["matchers"]) for r in children)
    watchdog, = (r for r in children if r.get("matchers") == ['alertname="Watchdog"'])
    assert watchdog["receiver"] == voice
    period = refresh_period(watchdog["group_interval"], watchdog["repeat_interval"])
    heartbeat, = (h for b in _readme_yaml_blocks() if isinstance(b, dict) for h in b.get("heartbeats", [])
                  if h.get("matchers") == ['alertname="Watchdog"'])
    assert parse_duration(heartbeat["timeout"]).total_seconds() >= 2 * period
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert f"every {format_duration_words(period)}" in readme


def format_duration_words(seconds: float) -> str:
    """120 -> "2 minutes", 90 -> "90 s": how the README states a refresh period."""
    return f"{int(seconds // 60)} minutes" if seconds % 60 == 0 else f"{int(seconds)} s"


def test_readme_alertmanager_example_passes_amtool(tmp_path: Path):
    """`amtool check-config` (Debian's prometheus-alertmanager) accepts the README's alertmanager.yml."""
    _, amtool = require_alertmanager()
    config = readme_alertmanager_config()
    token = tmp_path / "token"
    token.write_text("a-token\n")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["http_config"]["authorization"]["credentials_file"] = str(token)
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
