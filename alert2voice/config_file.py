"""A config file read into the models of config.py: YAML, `${ENV}` expansion, every problem with its line."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from .config import Config, ConfigReferenceError


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where it is and what was expected."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, path: tuple[Any, ...], env: Mapping[str, str], missing: list[tuple]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group(1)
            if name not in env:
                missing.append((path, f"environment variable {name} is not set"))
                return ""
            return env[name]
        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), env, missing) for i, v in enumerate(value)]
    return value


def _line_map(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
              problems: list[tuple[tuple[Any, ...], str, int]]) -> None:
    """Record the line of every key path, and flag duplicate keys (PyYAML silently keeps the last)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append(((*path, key), "duplicate key", key_node.start_mark.line + 1))
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), lines, problems)


def _line_for(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _loc_to_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts union/validator names into loc (e.g. 'function-after[...]'); the YAML path has only keys.
    return tuple(p for p in loc if isinstance(p, int) or not re.search(r"[\[\]]", str(p)))


_FIELD_ALIASES = {"from_": "from", "continue_": "continue", "global_": "global"}


def _problem_from_error(err: Mapping[str, Any], file: str, lines: dict) -> list[Problem]:
    path = tuple(_FIELD_ALIASES.get(p, p) if isinstance(p, str) else p for p in _loc_to_path(err["loc"]))
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, ConfigReferenceError):
        # Paths in a model validator's error are relative to that model.
        return [Problem(file, _line_for(lines, (*path, *p)), ".".join(map(str, (*path, *p))), m)
                for p, m in ctx_error.problems]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against config.example.yaml)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "literal_error":
        msg = f"{msg}, got {err.get('input')!r}"
    return [Problem(file, _line_for(lines, path), ".".join(map(str, path)), msg)]


def parse_config(text: str, *, file: str = "<config>", base_dir: Path | None = None,
                 env: Mapping[str, str] | None = None) -> Config:
    """Validate YAML text into a Config; raises ConfigError listing every problem with file, line and key."""
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError([Problem(file, line, "", f"invalid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem(file, 1, "", "expected a mapping of sections (server, provider, routes, ...)")])
    lines: dict[tuple[Any, ...], int] = {}
    dupes: list[tuple[tuple[Any, ...], str, int]] = []
    if node is not None:
        _line_map(node, (), lines, dupes)
    problems = [Problem(file, line, ".".join(map(str, p)), m) for p, m, line in dupes]
    missing: list[tuple] = []
    raw = _expand_env(raw, (), env, missing)
    problems += [Problem(file, _line_for(lines, p), ".".join(map(str, p)), m) for p, m in missing]
    try:
        config = Config.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            problems += _problem_from_error(err, file, lines)
        raise ConfigError(problems) from None
    problems += _template_problems(config, file, lines)
    if problems:
        raise ConfigError(problems)
    config._digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return config


def _template_problems(config: Config, file: str, lines: dict[tuple[Any, ...], int]) -> list[Problem]:
    """Every template the config names must exist and render against sample alerts (undefined = error)."""
    from .speech import Speech  # speech has no config dependency; imported here to keep startup order obvious

    speech = Speech(config.templates.directory, max_alerts_spoken=config.speech.max_alerts_spoken,
                    max_chars=config.speech.max_chars)
    problems = []
    now = datetime.now().astimezone()
    for name, paths in _named_templates(config).items():
        if not speech.has_template(name):
            where = f" in {config.templates.directory}" if config.templates.directory else ""
            messages = [f"template {name!r} not found{where} (nor among the built-in templates)"]
        else:
            messages = speech.check(name, now)
        # Each problem once, at the first key naming the template in the file; the other keys are listed with it.
        path, *others = sorted(paths, key=lambda p: p not in lines)
        also = ", ".join(f"{'.'.join(map(str, p))} at line {_line_for(lines, p)}" for p in others)
        also = f" (also named by {also})" if also else ""
        problems += [Problem(file, _line_for(lines, path), ".".join(map(str, path)), m + also) for m in messages]
    config._speech = speech
    return problems


def _named_templates(config: Config) -> dict[str, list[tuple[Any, ...]]]:
    """Each template the config uses, with the keys that name it, in file order.

    A route without a template of its own uses `templates.firing`/`resolved`: it names nothing, so a problem
    of those templates is not repeated at its keys. A TEXT route without one names the `.txt.j2` twin by its
    `text_format`.
    """
    named: dict[str, list[tuple[Any, ...]]] = {}
    for kind in ("firing", "resolved"):
        named.setdefault(getattr(config.templates, kind), []).append(("templates", kind))
    for i, route in enumerate(config.routes):
        for key, kind in (("template", "firing"), ("resolved_template", "resolved")):
            name = route.template_for(config.templates, kind)
            if getattr(route, key) is not None:
                named.setdefault(name, []).append(("routes", i, key))
            elif name != getattr(config.templates, kind):
                named.setdefault(name, []).append(("routes", i, "text_format"))
    return named


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; relative paths inside it resolve against its directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read config file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(path), None, "", "config file is not valid UTF-8")]) from None
    return parse_config(text, file=str(path), base_dir=path.resolve().parent, env=env)


def secrets_of(config: Config) -> list[str]:
    """Every secret value the config holds, for tests and log scrubbing."""
    out: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, SecretStr):
            if obj.get_secret_value():
                out.append(obj.get_secret_value())
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v)

    walk(config)
    return out
