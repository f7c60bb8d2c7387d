"""Fixtures shared by every test module: where the shared material lives, and the example config."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (SPEC, fixtures, reference): env ALERT2VOICE_SHARED, else ../shared next to the repo.

    Missing, the tests that need it skip; under CI (env CI truthy) they fail instead.
    """
    path = Path(os.environ.get("ALERT2VOICE_SHARED") or REPO.parent / "shared")
    if not path.is_dir():
        message = f"shared directory {path} not found (set ALERT2VOICE_SHARED)"
        if _truthy(os.environ.get("CI")):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def example_config_path() -> Path:
    """The repository's config.example.yaml."""
    return REPO / "config.example.yaml"
