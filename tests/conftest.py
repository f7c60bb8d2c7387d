"""Fixtures shared by every test module: the captured test data, the example config, the service under test."""

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from alert2voice.config import Config
from tests.harness import Harness, default_config
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


@pytest.fixture
def config(request: pytest.FixtureRequest) -> Config:
    """The config `harness` serves: tests.support.CONFIG with @pytest.mark.config(old=new) applied.

    A module whose service differs defines its own `config` fixture (tests.harness.config_changes reads the marker).
    """
    return default_config(request)


@pytest.fixture
def harness(config: Config, aiohttp_client) -> Harness:
    """The service under test, not started: its config and fakes; `await harness.start()` serves it."""
    return Harness(config, aiohttp_client)


@pytest.fixture
async def client(harness: Harness) -> TestClient:
    """The harness's service, started, over real HTTP."""
    return await harness.start()


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
