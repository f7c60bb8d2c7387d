"""The committed Alertmanager payloads are what a real Alertmanager sends (tests/fixture_capture.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e_support import require_alertmanager
from tests.fixture_capture import capture, fixture_names

pytestmark = pytest.mark.e2e


def test_every_committed_payload_is_covered_by_a_scenario(fixtures_dir: Path):
    assert fixture_names() == sorted(p.name for p in (fixtures_dir / "alertmanager").glob("*.json"))


def test_a_capture_reproduces_the_committed_payloads(tmp_path: Path, fixtures_dir: Path):
    binary, _ = require_alertmanager()

    written = capture(tmp_path / "out", tmp_path / "work", binary)

    assert sorted(p.name for p in written) == fixture_names()
    for path in written:
        committed = fixtures_dir / "alertmanager" / path.name
        assert path.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), path.name
