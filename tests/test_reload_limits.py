"""A reload that changes provider.max_in_flight or provider.rate_limit takes effect in the running dispatcher."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support import PAYMENTS, SleepingClock, alert, make_config, settle
from tests.test_dispatcher import CountingProvider, make_dispatcher, queue


def config_with(max_in_flight: int = 8, rate: str = "1000/s"):
    return make_config(**{"rate_limit: 1000/s": f"rate_limit: {rate}\n  max_in_flight: {max_in_flight}",
                          "per_number: [{calls: 3, per: 15m}]": "per_number: [{calls: 100, per: 15m}]"})


async def spin() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_reload_raising_max_in_flight_fills_the_new_slots():
    current = [config_with(max_in_flight=1)]
    d, store, provider, _ = make_dispatcher(current[0], provider=CountingProvider())
    d.ctx.config = lambda: current[0]
    provider.gate = asyncio.Event()
    for i in range(4):
        await queue(d, store, current[0], alert({**PAYMENTS, "instance": f"n{i}"}), group=f"g{i}")
    loop = asyncio.create_task(d.run())  # the production loop
    try:
        await spin()
        assert provider.now == 1
        current[0] = config_with(max_in_flight=3)  # what Runtime.apply() does on /-/reload
        d.poke()
        await spin()
        assert provider.now == 3
        provider.gate.set()
        await spin()
        assert len(provider.accepted) == 4
    finally:
        d.stopping = True
        d.poke()
        provider.gate.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(loop, 5)


async def test_a_reload_raising_the_rate_limit_shortens_the_wait():
    current = [config_with(rate="1/s")]
    clock = SleepingClock()
    d, store, provider, _ = make_dispatcher(current[0], clock=clock)
    d.ctx.config = lambda: current[0]
    await queue(d, store, current[0], alert(PAYMENTS), group="a")
    await settle(d)  # the one token of a 1/s bucket
    current[0] = config_with(rate="100/s")
    await queue(d, store, current[0], alert({**PAYMENTS, "alertname": "Other"}), group="b")
    await settle(d)
    assert len(provider.accepted) == 2
    # At the old 1/s the second request would have waited a whole second.
    assert clock.slept == [0.01]
