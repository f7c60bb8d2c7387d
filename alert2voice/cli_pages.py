"""`alert2voice pages list|show|ack|escalate`: the pages of a running alert2voice, as amtool shows alerts.

Talks to the admin API (GET /api/v1/pages, GET /api/v1/pages/{key}, POST …/ack, POST …/escalate) with the
admin token from --token-file or $ALERT2VOICE_ADMIN_TOKEN. Exit codes: 0 done, 1 refused or failed (unknown
page, page ended, wrong credentials, service unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from . import __version__

DEFAULT_URL = "http://127.0.0.1:9095"
FULL_KEY = 64  # hex digits of a page key; a shorter one is a prefix, resolved against the recent pages


class Refused(Exception):
    """The service said no, or could not be reached: one line for the user, exit 1."""


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The `pages` command and its subcommands."""
    common = argparse.ArgumentParser(add_help=False, parents=parents)
    common.add_argument("--url", default=os.environ.get("ALERT2VOICE_URL", DEFAULT_URL),
                        help=f"where alert2voice answers (or env ALERT2VOICE_URL; default {DEFAULT_URL})")
    common.add_argument("--token-file", help="the admin token (server.admin_auth), read from this file "
                                             "(or env ALERT2VOICE_ADMIN_TOKEN)")
    s = sub.add_parser("pages", help="list, show, acknowledge or escalate the pages of a running alert2voice")
    psub = s.add_subparsers(dest="pages_command", required=True, metavar="SUBCOMMAND")
    p = psub.add_parser("list", parents=[common], help="recent pages, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=cmd_list)
    p = psub.add_parser("show", parents=[common], help="one page: its calls and what happens next")
    p.add_argument("key", help="the page key, or a unique prefix of it (at least 6 characters)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=cmd_show)
    p = psub.add_parser("ack", parents=[common], help="acknowledge a page: no further call")
    p.add_argument("key", help="the page key, or a unique prefix of it (at least 6 characters)")
    p.add_argument("--by", default=os.environ.get("USER"), help="who acknowledges (default: $USER)")
    p.add_argument("--comment", help="why; ends the Alertmanager silence's comment when one is made")
    p.set_defaults(func=cmd_ack)
    p = psub.add_parser("escalate", parents=[common], help="pass a page to its next escalation step now")
    p.add_argument("key", help="the page key, or a unique prefix of it (at least 6 characters)")
    p.add_argument("--by", default=os.environ.get("USER"), help="who escalates (default: $USER)")
    p.add_argument("--step", type=int, help="the step you saw (from 1): nothing happens once the page is past it")
    p.set_defaults(func=cmd_escalate)


def _headers(args: argparse.Namespace) -> dict[str, str]:
    token = os.environ.get("ALERT2VOICE_ADMIN_TOKEN")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise Refused(f"--token-file: {exc.strerror}: {args.token_file}") from None
    headers = {"Accept": "application/json", "User-Agent": f"alert2voice-pages/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request to the admin API; the JSON it answered, or Refused with the service's own error."""
    import aiohttp

    url = args.url.rstrip("/") + path

    async def send() -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session, \
                session.request(method, url, headers=_headers(args),
                                json=body if body is not None else None) as resp:
            return resp.status, await resp.text()

    try:
        status, text = asyncio.run(send())
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Refused(f"cannot reach {args.url}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if status >= 300:
        why = data.get("error") if isinstance(data, dict) else text.strip()[:200]
        raise Refused(f"{status}: {why}")
    return data


def _key(args: argparse.Namespace) -> str:
    """The full key of the page args.key names (a unique prefix of a recent page's key will do)."""
    key = args.key.lower()
    if len(key) >= FULL_KEY:
        return key
    if len(key) < 6:
        raise Refused(f"{args.key!r}: give at least 6 characters of the page key")
    pages = _call(args, "GET", "/api/v1/pages?limit=1000")["pages"]
    found = sorted({p["key"] for p in pages if p["key"].startswith(key)})
    if not found:
        raise Refused(f"no recent page whose key starts with {args.key}")
    if len(found) > 1:
        raise Refused(f"{args.key} is ambiguous: {', '.join(k[:12] for k in found)}")
    return found[0]


def _line(page: dict[str, Any]) -> str:
    alerts = page.get("alerts") or [{}]
    name = alerts[0].get("labels", {}).get("alertname", "")
    more = f" +{page['alerts_total'] - 1}" if page.get("alerts_total", 1) > 1 else ""
    return f"{page['key'][:12]}  {page['state']:<12} {page['route']:<24} {name}{more}  {page['received_at']}"


def cmd_list(args: argparse.Namespace) -> int:
    data = _call(args, "GET", f"/api/v1/pages?limit={max(1, args.limit)}")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{'KEY':<12}  {'STATE':<12} {'ROUTE':<24} ALERT  RECEIVED")
    for page in data["pages"]:
        print(_line(page))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    page = _call(args, "GET", f"/api/v1/pages/{_key(args)}")
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    print(_line(page))
    ack = page.get("acknowledged")
    if ack:
        print(f"  acknowledged by {ack['by']} ({ack['via']}) at {ack['at']}" + (f": {ack['comment']}"
                                                                              if ack.get("comment") else ""))
    for call in page["calls"]:
        print(f"  call {call['attempt']} to {call['contact']} {call['number']}: {call['state']}"
              + (f" ({call['error']})" if call.get("error") else ""))
    nxt = page.get("next_call")
    if nxt:
        held = f", {nxt['held']}" if nxt.get("held") else ""
        print(f"  next: {nxt.get('contact') or 'nobody'} at {nxt.get('at')}{held}")
    return 0


def _act(args: argparse.Namespace, action: str, body: dict[str, Any]) -> int:
    key = _key(args)
    data = _call(args, "POST", f"/api/v1/pages/{key}/{action}", {k: v for k, v in body.items() if v is not None})
    page = data["page"]
    done = "acknowledged" if action == "ack" else "escalated"
    print(f"{page['key'][:12]} {done if data['changed'] else 'unchanged (' + done + ' already)'}: {page['state']}")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    return _act(args, "ack", {"by": args.by, "comment": args.comment})


def cmd_escalate(args: argparse.Namespace) -> int:
    return _act(args, "escalate", {"by": args.by, "step": args.step})
