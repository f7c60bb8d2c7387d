"""Fixtures shared by every test module: the captured test data, and the example config."""

import asyncio
from pathlib import Path

import pytest

from tests.support import FIXTURES_DIR, RUNNING

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures: Alertmanager payloads under alertmanager/, the matcher conformance table."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def example_config_path() -> Path:
    """The repository's config.example.yaml."""
    return REPO / "config.example.yaml"


@pytest.fixture(autouse=True)
async def dispatcher_loops():
    """Stop the dispatcher loops a test started with tests.support.settle()."""
    yield
    try:
        for dispatcher, task in list(RUNNING.items()):
            dispatcher.stopping = True
            dispatcher.poke()
            # Bounded: a test that failed while holding a page's task (at a gate, say) must not hang the run.
            await asyncio.wait_for(task, 10)
    finally:
        RUNNING.clear()
