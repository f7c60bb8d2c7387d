"""Logging: JSON lines on stderr (or text for humans), phone numbers masked, secrets scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

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

    def scrub(self, text: str) -> str:
        return self._pattern.sub(_replacement, text)


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


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, and every structured field."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger: msg key=value ...` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items()
                          if k not in _STANDARD and not k.startswith("_"))
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        line = f"{ts} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if fields:
            line += "  " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


SCRUBBER = Scrubber()


def setup_logging(fmt: str = "json", level: str = "info", stream=None) -> logging.Handler:
    """Send every log line to stderr through the scrubber; returns the handler (tests read it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
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
