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


class Scrubber(logging.Filter):
    """Replaces every known secret with `<redacted>` and masks phone numbers in every record."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is redacted whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, "<redacted>")
        return _NUMBER_RE.sub(lambda m: mask_number(m.group(0)), text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self.scrub(value))
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


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
        if record.exc_text:
            out["exception"] = record.exc_text
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
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


SCRUBBER = Scrubber()


def setup_logging(fmt: str = "json", level: str = "info", stream=None) -> logging.Handler:
    """Send every log line to stderr through the scrubber; returns the handler (tests read it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SCRUBBER)
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
