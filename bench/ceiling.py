"""The ceiling: a bare aiohttp app that reads and parses the webhook body and answers 200.

alert2voice's throughput is reported as a ratio to this app's, measured in the same run with the same
load generator, so the figures say what alert2voice's own work costs on top of aiohttp and JSON.

    python bench/ceiling.py --listen 127.0.0.1:9190
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

OK = json.dumps({"status": "ok"})


async def alerts(request: web.Request) -> web.Response:
    json.loads(await request.read())
    return web.Response(text=OK, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ceiling is ready.\n")


def create_app() -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024 + 1)
    app.router.add_post("/alerts", alerts)
    app.router.add_get("/-/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9190", help="host:port (loopback)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    # No access log, as `alert2voice serve` runs without one.
    web.run_app(create_app(), host=host or "127.0.0.1", port=int(port), access_log=None, print=None)


if __name__ == "__main__":
    main()
