"""Logging: JSON lines on stderr (or text for humans), phone numbers masked, secrets scrubbed."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_NUMBER_RE = re.compile(r"\+\d{7,15}")


def mask_number(number: str | None) -> str:
    """`+442071838750` -> `+44******8750`: enough to recognise, not enough to dial."""
    if not number:
        return ""
    if len(number) <= 7:
        return number[:1] + "*" * (len(number) - 1)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


class Scrubber:
    """Redacts every known secret and masks phone numbers in a finished log line, in one regex pass.

    It works on the formatted line, not on record fields, so nothing escapes it: structured fields,
    lists, exception text. Secrets are matched as written and as JSON escapes them.
    """

    def __init__(self) -> None:
        self._pattern = _NUMBER_RE
        self._forms: tuple[str, ...] = ()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        forms = set()
        for s in secrets:
            if len(s) >= 4:
                forms.add(s)
                forms.add(json.dumps(s)[1:-1])
                forms.add(json.dumps(s, ensure_ascii=False)[1:-1])
        # Longest first, so a secret that contains another is redacted whole.
        alternatives = [re.escape(f) for f in sorted(forms, key=len, reverse=True)]
        self._pattern = re.compile("|".join([*alternatives, _NUMBER_RE.pattern]))
        self._forms = tuple(forms)

    def scrub(self, text: str) -> str:
        # Most lines hold no secret: substring tests are much cheaper than the alternation at every
        # position, and the number pattern alone starts with a literal "+" the regex engine skips to.
        if any(form in text for form in self._forms):
            return self._pattern.sub(_replacement, text)
        return _NUMBER_RE.sub(_replacement, text)


def _replacement(m: re.Match[str]) -> str:
    found = m.group(0)
    return mask_number(found) if _NUMBER_RE.fullmatch(found) else "<redacted>"


class _Scrubbed(logging.Formatter):
    """Wraps a formatter; its output goes through the scrubber."""

    def __init__(self, inner: logging.Formatter, scrubber: Scrubber) -> None:
        super().__init__()
        self.inner, self.scrubber = inner, scrubber

    def format(self, record: logging.LogRecord) -> str:
        return self.scrubber.scrub(self.inner.format(record))


_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode


_second: tuple[int, str] = (-1, "")


def _utc_ms(created: float) -> str:
    """`2026-11-26T17:41:01.123+00:00`; the part up to the second is formatted once per second."""
    global _second
    second = int(created)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((created - second) * 1000):03d}+00:00"


# What LogRecord.__init__ sets, in its order: a record's structured fields (`extra=`) come after these.
_BASE = tuple(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's structured fields, in the order given; a line's most repeated step, so it skips the
    standard attributes by position when the record has them in LogRecord's order."""
    d = record.__dict__
    items = d.items()
    if next(itertools.islice(d, len(_BASE) - 1, None), None) == _BASE[-1]:
        items = itertools.islice(items, len(_BASE), None)
    return {k: v for k, v in items if k not in _STANDARD and k[0] != "_"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, and every structured field."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": _utc_ms(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _encode(out)


# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: in a text line they would
# start a line of the sender's choosing (a groupKey holding "\nlevel=error ...").
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(m: re.Match[str]) -> str:
    c = m.group(0)
    return _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape_text(value: object) -> str:
    """`str(value)` with every control character written as its escape (`\\n`, `\\x1b`), as Go's logfmt does:
    what a text log line carries stays on that line."""
    text = str(value)
    return _CONTROL_RE.sub(_escape_control, text) if _CONTROL_RE.search(text) else text


class TextFormatter(logging.Formatter):
    """`time level logger: msg key=value ...` for humans; control characters escaped, a traceback's lines
    indented, so no value can forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{escape_text(k)}={escape_text(v)}" for k, v in _fields(record).items())
        ts = time.strftime("%H:%M:%S", time.gmtime(record.created))
        line = f"{ts} {record.levelname.lower():7} {record.name}: {escape_text(record.getMessage())}"
        if fields:
            line += "  " + fields
        if record.exc_info:
            trace = self.formatException(record.exc_info).splitlines()
            line += "".join("\n  | " + escape_text(t) for t in trace)
        return line


class LineHandler(logging.StreamHandler):
    """A StreamHandler that, on a thread running an event loop, writes its lines once per loop iteration.

    Under load one write(2) then carries every line the iteration produced instead of one each. Warnings
    and errors, lines from other threads and lines logged outside a loop are written at once; at exit
    logging.shutdown() flushes the rest.
    """

    def __init__(self, stream=None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or not self._flush_soon():
            self.flush()

    def _flush_soon(self) -> bool:
        if self._scheduled:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        loop.call_soon(self._scheduled_flush)
        self._scheduled = True
        return True

    def _scheduled_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._pending:
                lines, self._pending = self._pending, []
                self.stream.write("\n".join(lines) + "\n")
            if hasattr(self.stream, "flush"):
                self.stream.flush()
        except Exception:  # as in Handler.handleError(): a log line must never take the service down
            self._pending.clear()
        finally:
            self.release()


SCRUBBER = Scrubber()


class Repeated:
    """A warning that can come every second for minutes (the store away) or thousands of times a second (refused
    callbacks): logged when its error changes, then once per `every` seconds with how often it came meanwhile;
    `over()` logs once that it ended."""

    def __init__(self, logger: logging.Logger, msg: str, *, every: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.msg, self.every, self.monotonic = logger, msg, every, monotonic
        self._error: str | None = None
        self._at = 0.0
        self._since_logged = 0

    def __call__(self, error: str, **fields: object) -> None:
        """It happened (again)."""
        now = self.monotonic()
        if error == self._error and now - self._at < self.every:
            self._since_logged += 1
            return
        extra: dict[str, object] = {"error": error, **fields}
        if self._since_logged:
            extra["repeated"] = self._since_logged  # times since the last line, not logged one by one
        self.logger.warning(self.msg, extra=extra)
        self._error, self._at, self._since_logged = error, now, 0

    def over(self) -> None:
        """It stopped: one line if it had been logged."""
        if self._error is not None:
            self.logger.info(self.msg.split(";")[0] + ": over", extra={"repeated": self._since_logged})
            self._error, self._since_logged = None, 0


class Refusals:
    """Warnings about refused requests (wrong credentials, a foreign Host), which anyone may send as fast as they
    like: each kind (logger and message) is a Repeated, so a flood writes a line a minute with its count."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._kinds: dict[tuple[str, str], Repeated] = {}

    def __call__(self, logger: logging.Logger, msg: str, error: str, **fields: object) -> None:
        kind = self._kinds.get((logger.name, msg))
        if kind is None:
            kind = self._kinds[logger.name, msg] = Repeated(logger, msg, monotonic=self.monotonic)
        kind(error, **fields)


def setup_logging(fmt: str = "json", level: str = "info", stream=None) -> logging.Handler:
    """Send every log line to stderr through the scrubber; returns the handler (tests read it)."""
    handler = LineHandler(stream or sys.stderr)
    handler.setFormatter(_Scrubbed(JSONFormatter() if fmt == "json" else TextFormatter(), SCRUBBER))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_alert2voice", False):
            root.removeHandler(h)
    handler._alert2voice = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The logging HOWTO's "Optimization" switches: no caller lookup (a stack walk per record), no
    # thread or process names; none of them is in our lines.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler
