"""One service under test: its config, fakes, registry and HTTP client together, and the requests tests send it.

The `harness` fixture (conftest.py) builds one per test from the `config` fixture, which a test changes with
`@pytest.mark.config(old=new)` and a module replaces by defining its own `config` fixture. `await harness.start()`
serves it through create_app() over real HTTP (aiohttp's test server) and keeps the client as `harness.client`;
the `client` fixture is that for the default config.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from alert2voice.config import Config
from alert2voice.provider.fake import RecordingProvider
from alert2voice.store import Store
from alert2voice.store.memory import MemoryStore
from alert2voice.web import create_app
from tests.support import FakeClock, make_config

# The credentials tests.support.CONFIG accepts: a webhook token, the callback token; the admin token a test
# turns on with @pytest.mark.config(**ADMIN_GUARDED).
AUTH = {"Authorization": "Bearer tok-one-secret"}
CB_AUTH = {"Authorization": "Bearer cb-token-secret"}
ADMIN_AUTH = {"Authorization": "Bearer adm-token-secret"}
ADMIN_GUARDED = {"max_body_bytes: 64KiB}": "max_body_bytes: 64KiB, admin_auth: {bearer_tokens: [adm-token-secret]}}"}
JSON = {"Content-Type": "application/json"}
JSON_AUTH = {**AUTH, **JSON}
JSON_CB_AUTH = {**CB_AUTH, **JSON}


def config_changes(request: pytest.FixtureRequest) -> dict[str, str]:
    """The replacements of the test's @pytest.mark.config(old=new, ...), for a module's own `config` fixture."""
    marker = request.node.get_closest_marker("config")
    return dict(marker.kwargs) if marker else {}


def receipt(status: str, *, correlation: str = "", transid: str = "", code: str = "7519") -> dict[str, Any]:
    """A Webex delivery receipt for alice's number, every field the platform sends."""
    return {"deliveryTransInfo": "", "deliveryInfoNotification": {
        "deliveryInfo": {"timeStamp": "2026-11-26T15:00:00.000Z", "Description": status, "code": code,
                         "deliveryChannel": "voice", "additionalInfo": "", "destination": "+14155550101",
                         "destinationType": "msisdn", "deliveryStatus": status},
        "subtid": "", "transid": transid, "callbackData": "", "correlationid": correlation}}


@dataclass
class Harness:
    """The parts create_app() is given in a test, and the client that serves them once started."""

    config: Config
    serve: Callable[[web.Application], Awaitable[TestClient]]  # pytest-aiohttp's aiohttp_client
    provider: RecordingProvider = field(default_factory=RecordingProvider)  # or any fake a test passes
    store: Store = field(default_factory=MemoryStore)
    clock: FakeClock = field(default_factory=FakeClock)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    client: TestClient | None = None
    auth: dict[str, str] = field(default_factory=lambda: dict(AUTH))
    callback_auth: dict[str, str] = field(default_factory=lambda: dict(CB_AUTH))
    admin_auth: dict[str, str] = field(default_factory=lambda: dict(ADMIN_AUTH))

    receipt = staticmethod(receipt)

    def app(self, **kw: Any) -> web.Application:
        """create_app() with this harness's parts (`config_path=` passed on)."""
        return create_app(self.config, provider=self.provider, store=self.store, clock=self.clock,
                          registry=self.registry, **kw)

    async def start(self, config: Config | None = None, **kw: Any) -> TestClient:
        """Serve app(**kw) over HTTP, with `config` from now on when one is given; the client, kept as `client`."""
        if config is not None:
            self.config = config
        self.client = await self.serve(self.app(**kw))
        return self.client

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the registry, 0 when there is none."""
        value = self.sample(name, **labels)
        return 0.0 if value is None else value

    def sample(self, name: str, **labels: str) -> float | None:
        """A sample of the registry, None when there is none (a series that was removed, say)."""
        return self.registry.get_sample_value(name, labels)

    # env["provider"], env["config"] = ...: the spelling of the tests written before the harness.
    def __getitem__(self, part: str) -> Any:
        return getattr(self, part)

    def __setitem__(self, part: str, value: Any) -> None:
        setattr(self, part, value)


def default_config(request: pytest.FixtureRequest) -> Config:
    """tests.support.CONFIG with the test's @pytest.mark.config replacements."""
    return make_config(**config_changes(request))
