"""The simulator's admin API under /_sim: script numbers and outages, read what it was sent and what it did."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from . import rules
from .api import SIMULATOR
from .models import NO_INPUT_EVENTS, Failure, NumberScript

# Loopback test tool, so no auth. Routes:
#   PUT    /_sim/numbers/{number}  {"outcome", "digit", "keys", "fail": {"status", "count", "retry_after", "code"},
#                                   "delay", "delay_count", "callbacks", "no_input_event"}  (replaces that
#                                   number's script; "delay_count": only the next N requests wait "delay";
#                                   "keys": ["*", "1"] pressed one per prompt, for "press")
#   GET    /_sim/numbers           DELETE /_sim/numbers/{number}
#   PUT    /_sim/fail              {"status", "count"?, "retry_after"?, "code"?}: every number, until DELETE
#   GET    /_sim/fail              DELETE /_sim/fail
#   GET    /_sim/requests | /_sim/calls | /_sim/callbacks      POST /_sim/reset


def _admin_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _admin_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}', content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body is not a JSON object"}', content_type="application/json")
    return body


def parse_failure(data: object, *, with_count_default: int | None) -> Failure:
    """Parse a {"status", "count", "retry_after", "code"} failure script; raise ValueError when invalid."""
    if not isinstance(data, dict):
        raise ValueError("fail must be an object")
    unknown = set(data) - {"status", "count", "retry_after", "code"}
    if unknown:
        raise ValueError(f"unknown fail keys: {', '.join(sorted(unknown))}")
    status = data.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise ValueError("fail.status must be an HTTP error status (400-599)")
    count = data.get("count", with_count_default)
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ValueError("fail.count must be a positive integer")
    retry_after = data.get("retry_after")
    if retry_after is not None and (not _is_number(retry_after) or retry_after < 0):
        raise ValueError("fail.retry_after must be a non-negative number of seconds")
    code = data.get("code")
    if code is not None and not isinstance(code, str):
        raise ValueError("fail.code must be a string")
    return Failure(status, count, None if retry_after is None else float(retry_after), code)


def parse_script(data: dict[str, Any]) -> NumberScript:
    """Parse a PUT /_sim/numbers/{number} body; raise ValueError when invalid."""
    unknown = set(data) - {"outcome", "digit", "keys", "fail", "delay", "delay_count", "callbacks", "no_input_event"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    script = NumberScript()
    outcome = data.get("outcome", script.outcome)
    if outcome not in rules.OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(rules.OUTCOMES)}")
    digit = data.get("digit", script.digit)
    if not _is_keys(digit):
        raise ValueError("digit must be a string of 0-9, * or #")
    keys = data.get("keys", [])
    if not isinstance(keys, list) or not all(_is_keys(k) for k in keys):
        raise ValueError("keys must be a list of strings of 0-9, * or # (one for each prompt)")
    delay = data.get("delay", 0.0)
    if not _is_number(delay) or delay < 0:
        raise ValueError("delay must be a non-negative number of seconds")
    delay_count = data.get("delay_count")
    if delay_count is not None and (not isinstance(delay_count, int) or isinstance(delay_count, bool)
                                    or delay_count < 1):
        raise ValueError("delay_count must be a positive integer")
    callbacks = data.get("callbacks", True)
    if not isinstance(callbacks, bool):
        raise ValueError("callbacks must be true or false")
    no_input = data.get("no_input_event", script.no_input_event)
    if no_input not in NO_INPUT_EVENTS:
        raise ValueError(f"no_input_event must be one of {', '.join(NO_INPUT_EVENTS)}")
    fail = parse_failure(data["fail"], with_count_default=1) if data.get("fail") is not None else None
    return NumberScript(outcome, digit, fail, float(delay), callbacks, no_input, delay_count, tuple(keys))


def _is_keys(value: object) -> bool:
    """Whether `value` is what a callee may press: a non-empty string of 0-9, * and #."""
    return isinstance(value, str) and bool(value) and all(c in "0123456789*#" for c in value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def _put_number(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        script = parse_script(await _admin_json(request))
    except ValueError as exc:
        return _admin_error(str(exc))
    sim.scripts[request.match_info["number"]] = script
    return web.json_response(asdict(script))


async def _delete_number(request: web.Request) -> web.Response:
    request.app[SIMULATOR].scripts.pop(request.match_info["number"], None)
    return web.Response(status=204)


async def _get_numbers(request: web.Request) -> web.Response:
    return web.json_response({n: asdict(s) for n, s in request.app[SIMULATOR].scripts.items()})


async def _put_fail(request: web.Request) -> web.Response:
    try:
        failure = parse_failure(await _admin_json(request), with_count_default=None)
    except ValueError as exc:
        return _admin_error(str(exc))
    request.app[SIMULATOR].outage = failure
    return web.json_response(asdict(failure))


async def _get_fail(request: web.Request) -> web.Response:
    outage = request.app[SIMULATOR].outage
    return web.json_response(asdict(outage) if outage is not None else None)


async def _delete_fail(request: web.Request) -> web.Response:
    request.app[SIMULATOR].outage = None
    return web.Response(status=204)


async def _get_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].request_log())


async def _get_calls(request: web.Request) -> web.Response:
    calls = request.app[SIMULATOR].calls.values()
    return web.json_response([c.to_json() for c in calls])


async def _get_callbacks(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].callbacks)


async def _reset(request: web.Request) -> web.Response:
    await request.app[SIMULATOR].reset()
    return web.Response(status=204)


def add_admin_routes(app: web.Application) -> None:
    """The /_sim routes (loopback test tool: no auth)."""
    app.router.add_get("/_sim/numbers", _get_numbers)
    app.router.add_put("/_sim/numbers/{number}", _put_number)
    app.router.add_delete("/_sim/numbers/{number}", _delete_number)
    app.router.add_get("/_sim/fail", _get_fail)
    app.router.add_put("/_sim/fail", _put_fail)
    app.router.add_delete("/_sim/fail", _delete_fail)
    app.router.add_get("/_sim/requests", _get_requests)
    app.router.add_get("/_sim/calls", _get_calls)
    app.router.add_get("/_sim/callbacks", _get_callbacks)
    app.router.add_post("/_sim/reset", _reset)
