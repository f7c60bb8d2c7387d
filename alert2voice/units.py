"""Prometheus-style durations, byte sizes, rates and listen addresses as they appear in the config."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}
# Same grammar as Prometheus' model.ParseDuration: units in descending order, each at most once.
_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$")
_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(\d*[a-z]+)$")


def parse_duration(text: str) -> timedelta:
    """Parse `30s`, `5m`, `1h30m`, `1w`, `0` (Prometheus duration syntax) into a timedelta."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h30m, got {text!r}")
    s = str(text).strip()
    if s == "0":
        return timedelta(0)
    m = _DURATION_RE.match(s)
    if not s or not m or not any(m.groups()):
        raise ValueError(f"invalid duration {text!r}: expected a duration such as 30s, 5m or 1h30m")
    total = timedelta(0)
    for value, unit in zip(m.groups(), ("y", "w", "d", "h", "m", "s", "ms"), strict=True):
        if value:
            total += int(value) * _DURATION_UNITS[unit]
    return total


def format_duration(td: timedelta) -> str:
    """Format a timedelta the way Prometheus prints durations (`1h30m`, `2w`, `0s`)."""
    ms = td // timedelta(milliseconds=1)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)


def format_instant(at: datetime | None) -> str:
    """An instant as people read it on the status page and in the API's sentences: UTC to the second, or a dash."""
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if at else "—"


def parse_size(text: str | int) -> int:
    """Parse `4MiB`, `512KiB`, `1MB` or a plain byte count into bytes."""
    if isinstance(text, bool):
        raise ValueError(f"expected a size such as 4MiB, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative, got {text}")
        return text
    m = _SIZE_RE.match(str(text).strip())
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r}: expected a size such as 4MiB, 512KiB or 1000000")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class Rate:
    """A rate limit: `count` events per `per`."""

    count: float
    per: timedelta

    @property
    def per_second(self) -> float:
        return self.count / self.per.total_seconds()

    def __str__(self) -> str:
        count = int(self.count) if self.count == int(self.count) else self.count
        per = format_duration(self.per)
        return f"{count}/{per[1:] if re.fullmatch(r'1[a-z]+', per) else per}"


def parse_rate(text: str) -> Rate:
    """Parse `10/s`, `600/m` or `100/5m` into a Rate."""
    m = _RATE_RE.match(str(text).strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"invalid rate {text!r}: expected events per duration such as 10/s or 600/1m")
    unit = m.group(2)
    try:
        per = parse_duration(unit if unit[0].isdigit() else f"1{unit}")
    except ValueError:
        raise ValueError(f"invalid rate {text!r}: {unit!r} is not a duration (use s, m, h or e.g. 5m)") from None
    count = float(m.group(1))
    if count <= 0 or per <= timedelta(0):
        raise ValueError(f"invalid rate {text!r}: must be positive")
    return Rate(count, per)


def parse_listen(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """A listen address: "0.0.0.0:9095", "[::1]:9095" or ":9095" -> (host, port); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port such as 0.0.0.0:9095, got {text!r}")
    return host.strip("[]") or default_host, int(port)
