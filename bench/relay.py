"""The relay floor: a bare aiohttp app that turns each webhook into one provider request and nothing else.

It reads and parses the webhook like the ceiling, then POSTs one fixed, valid `/v1/voice/messages`
request (its own correlationId each time) to the simulator with aiohttp's client and answers 200 once
the provider answered 202. No routing, no dedup, no store, no speech, no logs: the least any bridge
must do for a new page. Its sustained rate is an upper bound for alert2voice's new-page path on this
machine, measured in the same run with the same load generator and the same simulator.

    python bench/relay.py --listen 127.0.0.1:9191 --provider http://127.0.0.1:9090 \
        --service-key K --number +14155550101
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

OK = json.dumps({"status": "ok"})
SSML = ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
        'High error rate, critical: 5xx above 5 percent on checkout.</speak>')
SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_app(provider: str, service_key: str, number: str) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024 + 1)
    url = provider.rstrip("/") + "/v1/voice/messages"
    headers = {"Authorization": service_key, "Content-Type": "application/json"}
    serial = itertools.count(1)
    prefix = f"relay-{os.getpid()}-"

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[SESSION] = session
            yield

    async def alerts(request: web.Request) -> web.Response:
        json.loads(await request.read())
        body = {"callerId": "+15550001234", "dialedNumber": number,
                "audio": {"type": "TTS", "style": "NEURAL", "language": "en-US", "voice": "AriaNeural",
                          "gender": "FEMALE", "engine": "AZURE", "textFormat": "SSML", "text": SSML},
                "correlationId": f"{prefix}{next(serial)}", "callbackUrl": "http://127.0.0.1:9/callbacks/webex"}
        async with request.app[SESSION].post(url, data=json.dumps(body).encode(), headers=headers) as resp:
            await resp.read()
            if resp.status != 202:
                return web.Response(status=502, text=f"provider answered {resp.status}")
        return web.Response(text=OK, content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="relay is ready.\n")

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/alerts", alerts)
    app.router.add_get("/-/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9191", help="host:port (loopback)")
    parser.add_argument("--provider", required=True, help="the simulator's base URL")
    parser.add_argument("--service-key", required=True)
    parser.add_argument("--number", required=True, help="the number every call dials")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    web.run_app(create_app(args.provider, args.service_key, args.number), host=host or "127.0.0.1",
                port=int(port), access_log=None, print=None)


if __name__ == "__main__":
    main()
