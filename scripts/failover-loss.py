#!/usr/bin/env python3
"""How many pages answered 200 a Redis failover loses, with and without store.replicas_ack.

A master, one replica that lags (its link delays what the master sends by --lag seconds) and a Sentinel,
all on loopback; alert2voice (create_app, served over HTTP on loopback) on the Sentinel URL. Webhooks of
one new page each go to /alerts at --rate per second; after --kill-after seconds the master is killed
(SIGKILL) and Sentinel promotes the replica. Then every page answered 200 is looked for on the new master.

    .venv/bin/python scripts/failover-loss.py [--pages 105] [--lag 2] [--timeout 3]

tests/test_store_replicas.py asserts the same property on a smaller run (a held link, no timing).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Imported only now: they need the repository on sys.path first.
import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from alert2voice.provider.fake import RecordingProvider
from alert2voice.store.redis import RedisStore
from alert2voice.web import create_app
from tests.e2e_support import LOOPBACK, free_port
from tests.replication_support import master_and_replica, master_of, replication, wait_until, watched
from tests.support import make_config
from tests.test_store_replicas import AUTH, webhook


async def run(directory: Path, replicas_ack: int, args: argparse.Namespace) -> dict[str, float]:
    """One failover; what became of the pages sent."""
    with master_and_replica(directory, linked=True) as (master, replica, link), \
            watched(master, directory / "sentinel") as sentinel:
        assert link is not None
        link.lag = args.lag
        prefix = f"f{replicas_ack}:"
        store = RedisStore(f"redis+sentinel://{LOOPBACK}:{sentinel}/mymaster/0", key_prefix=prefix,
                           replicas_ack=replicas_ack, replicas_ack_timeout=args.timeout)
        config = make_config(**{"max_body_bytes: 64KiB}": "max_body_bytes: 64KiB, shutdown_grace: 1s}"})
        runner = web.AppRunner(create_app(config, provider=RecordingProvider(), store=store,
                                          registry=CollectorRegistry()))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, LOOPBACK, port).start()
        answered: list[str] = []
        refused = 0
        started = time.monotonic()
        killed_at: float | None = None

        async def send(session: aiohttp.ClientSession, n: int) -> None:
            nonlocal refused
            async with session.post(f"http://{LOOPBACK}:{port}/alerts", data=webhook(n), headers=AUTH) as resp:
                if resp.status == 200:
                    answered.append((await resp.json())["pages"][0]["page_key"])
                else:
                    refused += 1

        async def kill() -> None:
            nonlocal killed_at
            await asyncio.sleep(args.kill_after)
            master.kill()
            killed_at = time.monotonic() - started

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                killer = asyncio.create_task(kill())
                sends = []
                for n in range(args.pages):
                    sends.append(asyncio.create_task(send(session, n)))
                    await asyncio.sleep(1 / args.rate)
                await asyncio.gather(*sends)
                await killer
            wait_until(lambda: master_of(sentinel) == replica.port and replication(replica)["role"] == "master",
                       "Sentinel to promote the replica", within=30)
            promoted = replica.client()
            try:
                lost = sum(1 for key in answered if not promoted.exists(f"{prefix}page:{key}"))
            finally:
                promoted.close()
        finally:
            await runner.cleanup()
        return {"sent": args.pages, "answered_200": len(answered), "answered_503": refused, "lost": lost,
                "killed_at_s": round(killed_at or 0.0, 2)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=105)
    parser.add_argument("--rate", type=float, default=20.0, help="webhooks per second")
    parser.add_argument("--lag", type=float, default=2.0, help="seconds the replica is behind")
    parser.add_argument("--kill-after", type=float, default=4.0, help="seconds from the first webhook to kill -9")
    parser.add_argument("--timeout", type=float, default=3.0, help="store.replicas_ack_timeout, seconds")
    parser.add_argument("--replicas-ack", type=int, action="append", help="values to try (default 0 and 1)")
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # the 503s' log lines while the master is down: counted below instead
    for replicas_ack in args.replicas_ack or [0, 1]:
        with tempfile.TemporaryDirectory(prefix="a2v-failover-") as directory:
            found = await run(Path(directory), replicas_ack, args)
        print(f"replicas_ack={replicas_ack} lag={args.lag:g}s timeout={args.timeout:g}s:",
              " ".join(f"{k}={v}" for k, v in found.items()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
