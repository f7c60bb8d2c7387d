"""requirements.lock against pyproject.toml's runtime dependencies (offline: scripts/lock.py parses both)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import lock

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def copies(tmp_path) -> tuple[Path, Path]:
    """pyproject.toml and requirements.lock copied, to be edited by a test."""
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy2(REPO / name, tmp_path / name)
    return tmp_path / "pyproject.toml", tmp_path / "requirements.lock"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {path.name}"
    path.write_text(text.replace(old, new))


def test_lock_matches_pyproject():
    assert lock.problems() == []


def test_lock_records_what_it_was_compiled_from():
    text = lock.LOCK.read_text()
    assert lock.recorded(text) == lock.declared()
    assert "#    make lock" in text.splitlines()[:2], "the header says how to regenerate it"


def test_every_runtime_dependency_is_pinned_with_hashes():
    pins = lock.pins(lock.LOCK.read_text())
    assert {"aiohttp", "jinja2", "pydantic", "pydantic-core", "redis", "tzdata"} <= pins.keys()
    assert all(pin.hashes and re.fullmatch(r"\d+(\.\d+)*", pin.version) for pin in pins.values()), pins
    assert not {"pytest", "uv", "ruff", "hypothesis"} & pins.keys(), "test tools stay out of the image"


@pytest.mark.parametrize(("old", "new", "says"), [
    ('"jinja2>=3.1",', '"jinja2>=3.0",', "changed since"),  # a bound the lock still satisfies
    ('"jinja2>=3.1",', '"jinja2>=99",', "not satisfied by the pinned jinja2"),
    ('"tzdata",', '"tzdata",\n  "httpx>=0.27",', "httpx>=0.27 is not pinned"),
    ('  "tzdata",\n', "", "tzdata is pinned as a direct dependency but"),
], ids=["loosened", "tightened", "added", "removed"])
def test_changing_pyproject_without_relocking_fails(copies, old, new, says):
    pyproject, locked = copies
    assert lock.problems(pyproject, locked) == []
    _edit(pyproject, old, new)
    found = lock.problems(pyproject, locked)
    assert any("changed since requirements.lock was compiled" in p for p in found), found
    assert any(says in p for p in found), found


def test_test_extras_do_not_count(copies):
    pyproject, locked = copies
    _edit(pyproject, '"ruff>=0.5",', '"ruff>=0.6",')
    assert lock.problems(pyproject, locked) == []


def test_a_pin_edited_by_hand_fails(copies):
    """The header still matches, but the pin breaks pyproject's `aiohttp>=3.9,<4`, or lost its hashes."""
    pyproject, locked = copies
    version = lock.pins(locked.read_text())["aiohttp"].version
    _edit(locked, f"aiohttp=={version} \\", "aiohttp==4.0.0 \\")
    assert lock.problems(pyproject, locked) == ["aiohttp<4,>=3.9 is not satisfied by the pinned aiohttp==4.0.0"]
    text = locked.read_text()
    locked.write_text(re.sub(r"(tzdata==\S+) \\\n(    --hash=\S+( \\)?\n)+", r"\1\n", text))
    assert any(p.startswith("tzdata==") and p.endswith("has no --hash") for p in lock.problems(pyproject, locked))


def test_check_command_exits_nonzero_and_names_make_lock(tmp_path):
    """`scripts/lock.py check`, which deploy-check runs, fails with the fix in its message."""
    ok = subprocess.run([sys.executable, str(REPO / "scripts" / "lock.py"), "check"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("pyproject.toml", "requirements.lock", "scripts/lock.py"):
        shutil.copy2(REPO / name, repo / name)
    _edit(repo / "pyproject.toml", '"tzdata",', '"tzdata>=2099",')
    failed = subprocess.run([sys.executable, str(repo / "scripts" / "lock.py"), "check"], capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 1
    assert "tzdata>=2099 is not satisfied" in failed.stderr and "run `make lock`" in failed.stderr
