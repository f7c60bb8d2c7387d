"""The `alert2voice` command line: serve, check-config, render, routes test, oncall, fire, pages, test-call,
simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, cli_pages

log = logging.getLogger("alert2voice")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit 1."""


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--at {text!r}: expected an ISO 8601 time such as 2026-12-24T03:00:00+00:00") from None
    return at if at.tzinfo else at.astimezone()


def _labels(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"{pair!r}: expected label=value")
        out[name] = value.strip('"') if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return out


def _duration_arg(text: str) -> timedelta:
    """An argparse type: a duration such as 90s or 10m (argparse names the flag in its error)."""
    from .units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    from .units import parse_listen

    try:
        return parse_listen(text, default_host)
    except ValueError as exc:
        raise UserError(f"--listen: {exc}") from None


def _config(path: str):
    from .config_file import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise UserError(f"invalid config:\n{exc}") from None


# -------------------------------------------------------------------------------------------- commands


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config_file import ConfigError, load_config
    from .units import format_duration

    if args.file and args.config and args.file != args.config:
        raise UserError(f"check-config: two config files given ({args.file} and --config {args.config})")
    path = args.config or args.file
    if not path:
        print("usage: alert2voice check-config --config FILE\n"
              "alert2voice check-config: error: which config? --config FILE", file=sys.stderr)
        return 2
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    templates = {config.templates.firing, config.templates.resolved} | {
        t for r in config.routes for t in (r.template, r.resolved_template) if t}
    print(f"{path}: OK — {len(config.routes)} routes, {len(config.contacts)} contacts, "
          f"{len(config.rotations)} rotations, {len(templates)} templates rendered, "
          f"provider {config.provider.url} ({config.provider.mode} mode), store {config.store.backend}, "
          f"config hash {config.digest[:12]}")
    for hb in config.heartbeats:
        fed = f"alerts matching {', '.join(map(str, hb.matchers))} or" if hb.matchers else "only"
        print(f"heartbeat {hb.name}: pages after {format_duration(hb.timeout)} without a refresh ({fed} "
              f"POST /heartbeats/{hb.name}); calls {', '.join(s.call for s in hb.escalation)}")
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return _probe(config) if args.probe else 0


def _probe(config) -> int:
    """check-config --probe: one health probe of the provider, as `serve` makes them; 1 unless it takes the key."""
    import aiohttp

    from .provider import ProviderError
    from .provider.health import describe, status_of
    from .provider.webex import WebexProvider

    async def probe() -> ProviderError | None:
        async with aiohttp.ClientSession() as session:
            try:
                await WebexProvider(session, lambda: config.provider).probe()
            except ProviderError as exc:
                return exc
            return None

    error = asyncio.run(probe())
    status = status_of(error)
    print(f"provider {status}: {describe(status, config.provider.url, str(error or ''))}",
          file=sys.stdout if status == "ok" else sys.stderr)
    return 0 if status == "ok" else 1


def _load_payload(path: str):
    from .alertmanager import PayloadError, parse_payload

    try:
        body = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_payload(body)
    except PayloadError as exc:
        raise UserError(f"{path}: {exc}") from None


def cmd_render(args: argparse.Namespace) -> int:
    from .live import make_speech
    from .preview import render_calls

    config = _config(args.config)
    payload = _load_payload(args.payload)
    calls = render_calls(config, make_speech(config), payload, _parse_at(args.at))
    if args.json:
        print(json.dumps(calls, indent=2, ensure_ascii=False))
    elif not calls:
        print("no call: no route with firing alerts matched this payload")
    for i, call in enumerate(calls):
        if args.json:
            break
        print(f"# call {i + 1}: route {call['route']}")
        print(f"contact:        {call['contact'] or '-'} {call.get('number', '')}")
        print(f"why:            {call.get('reason', '')}")
        print(f"correlationId:  {call['correlation_id']}")
        if call.get("ssml"):
            print(f"{call['text_format']}:")
            print(call["ssml"])
        print()
    if args.wav:
        ssml = next((c["ssml"] for c in calls if c.get("ssml")), None)
        if ssml is None:
            raise UserError("--wav: no call to speak")
        _speak(ssml, args.wav)
        print(f"wrote {args.wav}")
    return 0


def _speak(ssml: str, out: str) -> None:
    from .preview import speak_wav

    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak is None:
        raise UserError("--wav needs espeak-ng (Debian: apt-get install espeak-ng)")
    try:
        wav = asyncio.run(speak_wav(espeak, ssml))
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    Path(out).write_bytes(wav)


def cmd_routes_test(args: argparse.Namespace) -> int:
    from .routing import match_heartbeat, match_routes
    from .units import format_duration

    config = _config(args.config)
    labels = _labels(args.labels)
    at = _parse_at(args.at)
    heartbeat = match_heartbeat(config, labels)
    if heartbeat is not None:
        print(f"heartbeat {heartbeat.name}: a firing alert with these labels refreshes it and is not routed "
              f"(no refresh for {format_duration(heartbeat.timeout)}: a page on route {heartbeat.route.name})")
        _print_steps(config, heartbeat.route, at, "")
        return _expected(args.expect, heartbeat.route.name)
    routes = match_routes(config, labels)
    if not routes:
        print(f"no route matches {labels}; routes: {', '.join(r.name for r in config.routes) or 'none'}")
        return 0 if not args.expect else 1
    for route in routes:
        print(f"route {route.name}" + (" (continue: true)" if route.continue_ else ""))
        _print_steps(config, route, at, labels.get("severity", ""))
    return _expected(args.expect, ",".join(r.name for r in routes))


def _print_steps(config, route, at: datetime, severity: str) -> None:
    """Who each step of a route's escalation calls at `at`, and why."""
    from .routing import explain_route
    from .units import format_duration

    targets = explain_route(config, route, at, [severity])
    if not targets:
        print("  nobody is called (empty escalation)")
    for t, step in zip(targets, route.escalation, strict=True):
        who = t.contact or "nobody"
        state = "SKIPPED, quiet hours" if t.quiet else ("SKIPPED" if t.contact is None else "calls")
        print(f"  step {t.step + 1}: {step.call} -> {who} ({state}; {step.attempts} attempt(s), "
              f"{format_duration(step.interval)} apart) — {t.reason}")
    if targets:
        print(f"  {_limits(config)}")


def _limits(config) -> str:
    """The throttle in force, as `routes test` says it: what each tier allows and what max_hold does.

    The tiers' counters are in the store, which a running `serve` holds: how full they are now is on
    the status page, not here.
    """
    from .units import format_duration

    t = config.throttle
    tiers = ", ".join(f"{r.calls} calls per {format_duration(r.per)}" for r in t.per_number) or "none"
    text = f"per-number limit: {tiers}"
    if t.global_ is not None:
        text += f"; all numbers: {t.global_.calls} calls per {format_duration(t.global_.per)}"
    text += (f"; held calls move on after max_hold {format_duration(t.max_hold)} "
             "(a resolved call is dropped)")
    if t.storm is not None:
        text += f"; storm: past {t.storm.pages} calls per {format_duration(t.storm.per)}, one summary call"
    return text


def _expected(expect: str | None, names: str) -> int:
    """`routes test --expect`: 1 unless exactly these routes matched."""
    if expect and expect != names:
        print(f"expected {expect}, got {names}", file=sys.stderr)
        return 1
    return 0


def cmd_oncall(args: argparse.Namespace) -> int:
    config = _config(args.config)
    at = _parse_at(args.at)
    if not config.rotations:
        print("no rotations configured")
    for name in sorted(config.rotations):
        rot = config.rotation(name)
        now = rot.on_call(at)
        print(f"{name}: {now.contact or 'nobody'} — {now.reason}")
        if args.next:
            for shift in rot.shifts(at, args.next + 1)[1:]:
                print(f"  then {shift.contact or 'nobody'} from {shift.since:%Y-%m-%d %H:%M %Z} "
                      f"until {shift.until:%Y-%m-%d %H:%M %Z}")
    return 0


def cmd_fire(args: argparse.Namespace) -> int:
    import aiohttp

    labels = _labels(args.labels)
    labels.setdefault("alertname", "TestAlert")
    annotations = _labels(args.annotation or [])
    now = datetime.now(UTC)
    status = "resolved" if args.resolve else "firing"
    alert = {"status": status, "labels": labels, "annotations": annotations,
             "startsAt": (now - args.backdate).isoformat().replace("+00:00", "Z"),
             "endsAt": now.isoformat().replace("+00:00", "Z") if args.resolve else "0001-01-01T00:00:00Z",
             "generatorURL": "",
             "fingerprint": uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(labels, sort_keys=True)).hex[:16]}
    group = {"alertname": labels["alertname"]}
    payload = {"receiver": "alert2voice", "status": status, "alerts": [alert], "groupLabels": group,
               "commonLabels": labels, "commonAnnotations": annotations, "externalURL": "http://alert2voice-fire",
               "version": "4", "groupKey": "{}:{alertname=" + json.dumps(labels["alertname"]) + "}",
               "truncatedAlerts": 0}
    headers = {"Content-Type": "application/json", "User-Agent": f"alert2voice-fire/{__version__}"}
    token = args.token or os.environ.get("ALERT2VOICE_TOKEN")
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"

    async def send() -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s, \
                s.post(args.url, data=json.dumps(payload), headers=headers) as resp:
            return resp.status, await resp.text()

    try:
        status_code, text = asyncio.run(send())
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise UserError(f"cannot reach {args.url}: {exc}") from None
    print(f"{status_code} {text.strip()}")
    return 0 if 200 <= status_code < 300 else 1


TEST_CALL_WORDS = "This is a test call from alert2voice. No action is needed. Goodbye."


def cmd_test_call(args: argparse.Namespace) -> int:
    import aiohttp

    from .dispatch.speaking import call_request, sentence
    from .pages import Call
    from .provider import ProviderError
    from .provider.health import TEST_CALL_PREFIX
    from .provider.webex import WebexProvider

    config = _config(args.config)
    contact = config.contacts.get(args.contact)
    if contact is None:
        raise UserError(f"unknown contact {args.contact!r}; contacts: {', '.join(sorted(config.contacts))}")
    # Built as the dispatcher builds a call's request: the contact's language and voice, the configured callback.
    call = Call(attempt=1, correlation_id=f"{TEST_CALL_PREFIX}{uuid.uuid4().hex[:24]}",
                idempotency_key=str(uuid.uuid4()), contact=args.contact, number=contact.number, step=0, round=0,
                created_at=datetime.now(UTC), kind="test")
    request = call_request(config, call, sentence(config, args.contact, TEST_CALL_WORDS))

    async def place():
        async with aiohttp.ClientSession() as session:
            return await WebexProvider(session, lambda: config.provider).place_call(request)

    try:
        accepted = asyncio.run(place())
    except ProviderError as exc:
        raise UserError(f"test call refused: {exc}") from None
    from .logs import mask_number

    print(f"accepted: messageId {accepted.message_id}, correlationId {request.correlation_id}, "
          f"calling {args.contact} at {mask_number(contact.number)}; its receipts show on the status page of the "
          f"replica they reach ({config.server.public_url}/)")
    return 0


@contextlib.contextmanager
def _stop_signals(handler: Callable[[signal.Signals], object]) -> Iterator[None]:
    """SIGINT and SIGTERM call `handler` inside; past it they are ignored, as the process is ending.

    asyncio's close() shuts the loop's wakeup fd before it removes the handlers: a signal arriving then (a
    terminal's Ctrl-C reaches us, and scripts/run.sh's SIGTERM follows it) prints "Exception ignored … Bad
    file descriptor" with a traceback.
    """
    loop = asyncio.get_running_loop()
    stops = (signal.SIGTERM, signal.SIGINT)
    for sig in stops:
        loop.add_signal_handler(sig, handler, sig)
    try:
        yield
    finally:
        for sig in stops:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .store import StoreUnavailable
    from .web import create_app, drain
    from .web.connections import GuardedRunner, connection_limits, install_accept_filter, raise_fd_limit
    from .web.keys import LIVE, SHUTDOWN

    config = _config(args.config)
    app = create_app(config, config_path=Path(args.config))
    host, port = _listen(args.listen) if args.listen else config.server.host_port
    server = config.server
    fd_limit = raise_fd_limit()
    install_accept_filter()

    async def main() -> None:
        limits = connection_limits(server.header_timeout.total_seconds(), server.idle_timeout.total_seconds(),
                                   server.max_connections, fd_limit)
        runner = GuardedRunner(app, limits=limits, handle_signals=False, access_log=None,
                               shutdown_timeout=server.shutdown_grace.total_seconds())
        try:
            await runner.setup()
        except StoreUnavailable as exc:
            # Another process owns the store, or it cannot be opened at all: one line, exit 1.
            await runner.cleanup()
            raise UserError(str(exc)) from None
        site = web.TCPSite(runner, host, port, ssl_context=app[LIVE].ssl_context)
        try:
            await site.start()
        except OSError as exc:
            # The address in use (a second `make run`) or not ours: one line, exit 1, not a traceback.
            await runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise UserError(f"cannot listen on {host}:{port}: {reason}") from None
        # Everything loaded so far (modules, schemas, templates, config) lives as long as the process:
        # keep it out of the garbage collector's generations, or every collection walks it again.
        gc.freeze()
        for warning in config.warnings_listening_on(host):
            log.warning(warning)
        log.info("alert2voice listening", extra={"listen": f"{host}:{port}", "version": __version__,
                                                 "tls": app[LIVE].ssl_context is not None,
                                                 "provider": config.provider.url, "store": config.store.backend,
                                                 "config_hash": config.digest[:12], "fd_limit": fd_limit,
                                                 "max_connections": limits.max_connections})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_stop(sig: signal.Signals) -> None:
            # A terminal's Ctrl-C reaches us and scripts/run.sh's SIGTERM follows it: said once, exit 0 either way.
            if not stop.is_set():
                log.info("stopping; new webhooks get 503, queued calls stay queued", extra={"signal": sig.name})
            app[SHUTDOWN].set()
            stop.set()

        def on_hup() -> None:
            task = asyncio.ensure_future(app[LIVE].reload())
            task.add_done_callback(lambda t: t.exception())  # the failure is logged by reload()

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        with _stop_signals(on_stop):
            try:
                await stop.wait()
                # Drain while still listening, so webhooks arriving meanwhile get 503 (Alertmanager retries).
                await drain(app)
            finally:
                await runner.cleanup()

    run_loop(main())
    return 0


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, on uvloop where it is installed (an event loop written in C: fewer microseconds per socket
    read, write and timer); the standard loop otherwise, with the same behaviour."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def cmd_simulator(args: argparse.Namespace) -> int:
    from .simulator import run_simulator

    host, port = _listen(args.listen, default_host="127.0.0.1")
    callback_auth = {}
    for spec in args.callback_auth or []:
        auth_id, sep, header = spec.partition("=")
        name, sep2, value = header.partition(":")
        if not sep or not sep2:
            raise UserError(f"--callback-auth {spec!r}: expected AUTH_ID=Header-Name:value")
        callback_auth.setdefault(auth_id, {})[name.strip()] = value.strip()
    async def main() -> None:
        task = asyncio.ensure_future(run_simulator(host, port,
                                                   service_key=args.service_key, callback_auth=callback_auth,
                                                   callback_delay=args.callback_delay,
                                                   step_delay=args.step_delay))
        with _stop_signals(lambda _: task.cancel()), contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0


# ------------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="alert2voice", description=(
        "Prometheus Alertmanager notifications as phone calls through Webex Connect."))
    p.add_argument("--version", action="version", version=f"alert2voice {__version__}")
    p.add_argument("--log-format", choices=("json", "text"), default=os.environ.get("ALERT2VOICE_LOG_FORMAT", "json"),
                   help="log lines on stderr as JSON (default) or text for humans")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    # The same two flags after the subcommand too (`alert2voice serve --log-format text`); SUPPRESS keeps
    # a subcommand from resetting what was given before it.
    logging_flags = argparse.ArgumentParser(add_help=False)
    logging_flags.add_argument("--log-format", choices=("json", "text"), default=argparse.SUPPRESS)
    logging_flags.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                               default=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", parents=[logging_flags], help="run the service")
    s.add_argument("--config", required=True, help="the YAML config file")
    s.add_argument("--listen", help="override server.listen (host:port)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check-config", parents=[logging_flags],
                       help="validate the config and every template; exit 1 on problems")
    s.add_argument("--config", help="the YAML config file, as every other command takes it")
    s.add_argument("file", nargs="?", help="the config file (the older, positional form)")
    s.add_argument("--probe", action="store_true",
                   help="also send the provider one health probe with the service key (exit 1 unless it is taken)")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("render", parents=[logging_flags],
                       help="print the calls a webhook payload would cause now, with their SSML")
    s.add_argument("--config", required=True)
    s.add_argument("payload", help="Alertmanager webhook JSON file (- for stdin)")
    s.add_argument("--at", help="pretend it is this time (ISO 8601)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--wav", metavar="OUT.wav", help="also speak the first call's SSML locally with espeak-ng")
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("routes", help="route tools")
    rsub = s.add_subparsers(dest="routes_command", required=True, metavar="SUBCOMMAND")
    t = rsub.add_parser("test", parents=[logging_flags],
                        help="which route matches these labels, and who would be called now and why")
    t.add_argument("--config", required=True)
    t.add_argument("--at", help="pretend it is this time (ISO 8601)")
    t.add_argument("--expect", help="exit 1 unless exactly these routes (comma-separated) match")
    t.add_argument("labels", nargs="*", metavar="label=value")
    t.set_defaults(func=cmd_routes_test)

    s = sub.add_parser("oncall", parents=[logging_flags], help="who is on call for every rotation")
    s.add_argument("--config", required=True)
    s.add_argument("--at", help="at this time instead of now (ISO 8601)")
    s.add_argument("--next", type=int, default=0, metavar="N", help="also list the next N shifts")
    s.set_defaults(func=cmd_oncall)

    s = sub.add_parser("fire", parents=[logging_flags], help="send a test alert group in Alertmanager's webhook format")
    s.add_argument("--url", default="http://127.0.0.1:9095/alerts")
    s.add_argument("labels", nargs="*", metavar="label=value")
    s.add_argument("--annotation", action="append", metavar="name=value")
    s.add_argument("--resolve", action="store_true", help="send the group as resolved")
    s.add_argument("--backdate", type=_duration_arg, default=timedelta(0), metavar="DURATION",
                   help="the alert started this long ago (say 10m); default: now, as a new alert")
    s.add_argument("--token", help="bearer token (or env ALERT2VOICE_TOKEN)")
    s.add_argument("--token-file", help="read the bearer token from this file")
    s.set_defaults(func=cmd_fire)

    cli_pages.add_parser(sub, [logging_flags])

    s = sub.add_parser("test-call", parents=[logging_flags], help="place one real test call to a contact")
    s.add_argument("--config", required=True)
    s.add_argument("contact")
    s.set_defaults(func=cmd_test_call)

    s = sub.add_parser("simulator", parents=[logging_flags], help="run the Webex Connect Voice API v1 simulator")
    s.add_argument("--listen", default="127.0.0.1:9096")
    s.add_argument("--service-key", default="simulator-service-key")
    s.add_argument("--callback-auth", action="append", metavar="AUTH_ID=Header:value",
                   help="headers the simulated platform adds to callbacks for a callbackUrlAuthId")
    s.add_argument("--callback-delay", type=float, default=1.0, help="seconds before the first receipt")
    s.add_argument("--step-delay", type=float, default=0.0,
                   help="seconds between a call's later steps (ringing, then answer): how long a call takes")
    s.set_defaults(func=cmd_simulator)
    return p


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: exit 0 on success, 1 on a user error (one clear line), 2 on bad usage."""
    from .logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    try:
        code = args.func(args)
    except (UserError, cli_pages.Refused) as exc:
        print(f"alert2voice: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`alert2voice check-config ... | head -1`): quietly, as a Unix filter does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)
