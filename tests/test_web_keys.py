"""The handlers' services (web/keys.py): their own typed keys, sharing the dispatcher's page locks and store."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from alert2voice.provider.fake import RecordingProvider
from alert2voice.store.memory import MemoryStore
from alert2voice.web import create_app
from alert2voice.web.keys import DISPATCHER, OUTCOMES, SPEAKER, WORK
from tests.support import FakeClock, make_config


async def test_the_handlers_services_are_the_dispatchers_rooms(aiohttp_client):
    store = MemoryStore()
    app = create_app(make_config(), provider=RecordingProvider(), store=store, clock=FakeClock(),
                     registry=CollectorRegistry())
    client = await aiohttp_client(app)
    dispatcher = client.app[DISPATCHER]
    # A callback and the dispatcher change a page under the same in-process lock, through the same store.
    assert client.app[OUTCOMES] is dispatcher.outcomes and client.app[SPEAKER] is dispatcher.speaker
    work = client.app[WORK]
    assert (work.store, work.locks) == (store, dispatcher.ctx.locks)


def test_no_handler_reaches_into_the_dispatchers_rooms():
    web = Path(__file__).resolve().parent.parent / "alert2voice" / "web"
    reaching = [f"{path.name}: {m.group(0)}" for path in sorted(web.glob("*.py"))
                for m in re.finditer(r"DISPATCHER\]\.(outcomes|speaker|ctx|placer|stepper)\b", path.read_text())]
    assert reaching == []
