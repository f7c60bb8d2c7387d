"""The speakable filters: small pure functions, plain str in and out (never Markup, so label text is always escaped).

What each one says is in docs/templates.md; the templates use them as Jinja filters (FILTERS).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import jinja2


def _text(value: object) -> str:
    # str() of a Markup is a plain str; None prints as nothing rather than "None".
    return "" if value is None else str(value)


def _amount(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _pair(big: int, big_unit: str, small: int, small_unit: str) -> str:
    text = _amount(big, big_unit)
    return f"{text} and {_amount(small, small_unit)}" if small else text


def span(seconds: float, *, exact: bool = False) -> str:
    """A span of time said: 3900 -> "1 hour and 5 minutes", 30 -> "less than a minute" (exact: "30 seconds").

    Said to the minute (the age of an alert), or `exact`ly below an hour (a configured timeout: "6 seconds",
    "1 minute and 30 seconds"); longer spans say their two largest units.
    """
    # A start slightly in the future is clock skew between Prometheus and us, not a negative duration.
    whole = max(0, int(seconds))
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if exact and hours == 0:
        return _pair(minutes, "minute", whole % 60, "second") if minutes else _amount(whole, "second")
    if minutes == 0:
        return "less than a minute"
    if hours == 0:
        return _amount(minutes, "minute")
    if days == 0:
        return _pair(hours, "hour", minutes % 60, "minute")
    return _pair(days, "day", hours % 24, "hour")


def duration(value: timedelta | float | str) -> str:
    """A duration spoken: 720 -> "for 12 minutes", 3900 -> "for 1 hour and 5 minutes"."""
    try:
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    except (TypeError, ValueError):
        return _text(value)
    if not math.isfinite(seconds):
        return _text(value)
    return f"for {span(seconds)}"


def _datetime(value: datetime | str) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def since(start: datetime | str, until: datetime | str) -> str:
    """How long from start until a later time, spoken: "for 12 minutes"."""
    try:
        return duration(_datetime(until) - _datetime(start))
    except ValueError:
        return _text(start)


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def words(value: object) -> str:
    """Identifiers as words: "HighCPUUsage" -> "High CPU Usage", "disk_full_root" -> "disk full root"."""
    text = _text(value).replace("_", " ").replace("-", " ")
    if not text.islower():  # a boundary needs a capital: most label values have none
        text = _CAMEL.sub(" ", text)
    return " ".join(text.split())


# The URL takes the whitespace before it along. A match starts only where that whitespace starts, so a
# long run of whitespace is scanned once, not once from each of its characters (quadratic).
_URL = re.compile(r"(?<!\s)\s*https?://\S+", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?)]}'\""


def _drop_url(match: re.Match[str]) -> str:
    # Keep the punctuation that closed the sentence around the URL.
    url = match.group(0)
    return url[len(url.rstrip(_TRAILING_PUNCTUATION)) :]


def nourls(value: object) -> str:
    """The text without its http(s) URLs, which nobody can follow on a phone call."""
    text = _text(value)
    if "://" in text:
        text = _URL.sub(_drop_url, text)
    return " ".join(text.split())


_LARGE = ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"))
_NUMBER = re.compile(r"(?<![\w.:/-])([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?:\s?(%))?(?![\w%]|\.[0-9]|:[0-9])")


def _speak_number(written: str) -> str:
    if written.isdigit():
        # Integers are counts or identifiers: keep every digit, group thousands so they are read as a number.
        return f"{int(written):,}" if 5 <= len(written) <= 15 else written
    value = float(written)
    if not math.isfinite(value):
        return written
    for scale, unit in _LARGE:
        if value >= scale:
            return f"{round(value / scale, 1):g} {unit}"
    if value >= 10_000:
        return f"{round(value):,}"
    if value >= 100:
        return str(round(value))
    if value >= 0.01:
        return f"{round(value, 2):g}"
    return f"{value:.12f}".rstrip("0").rstrip(".")


def _number_match(match: re.Match[str]) -> str:
    spoken = _speak_number(match.group(1))
    return f"{spoken} percent" if match.group(2) else spoken


def number(value: object) -> str:
    """Numbers spoken: "95.3%" -> "95.3 percent", "1234567" -> "1,234,567", "1.5e+06" -> "1.5 million"."""
    return _NUMBER.sub(_number_match, _text(value))


_IPV4 = re.compile(r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?!\w|\.[0-9])")


def _speak_ipv4(match: re.Match[str]) -> str:
    address = match.group(0)
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return address
    return address.replace(".", " dot ")


def _is_ipv6(text: str) -> bool:
    # Every IPv6 address has colons: host names and IPv4 addresses skip the failed parse (an exception, slow).
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def ip(value: object) -> str:
    """IP addresses spoken: "10.0.0.1" -> "10 dot 0 dot 0 dot 1", "::1" -> "double colon 1"."""
    text = _text(value)
    if not _is_ipv6(text.strip()):
        return _IPV4.sub(_speak_ipv4, text)
    spoken = text.strip().replace("::", " double colon ").replace(":", " colon ")
    return " ".join(spoken.split())


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):([0-9]{1,5})")


def _speak_host_port(host: str, port: str) -> str:
    return f"{ip(host.strip('[]'))} port {port}"


def instance(value: object) -> str:
    """An instance label spoken: "node1:9100" -> "node1 port 9100", "10.0.0.1" -> "10 dot 0 dot 0 dot 1"."""
    text = _text(value).strip()
    if "://" in text:
        # Blackbox exporter targets are URLs: the host is what matters on the phone.
        try:
            text = urlsplit(text).netloc or text
        except ValueError:
            return text
    match = _HOST_PORT.fullmatch(text)
    if match:
        return _speak_host_port(*match.groups())
    return ip(text[1:-1] if text.startswith("[") and text.endswith("]") else text)


_LETTER = re.compile("[A-Za-z]")
_HOST_PORT_IN_TEXT = re.compile(r"(?<![\w.:\[\]-])(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][\w.-]*):([0-9]{1,5})(?![\w:])")


def _host_port_match(match: re.Match[str]) -> str:
    host, port = match.groups()
    # "ratio 3:1" or a clock time is not an address: a host has a letter, brackets, or is an IPv4 address.
    if host.startswith("[") or _IPV4.fullmatch(host) or _LETTER.search(host):
        return _speak_host_port(host, port)
    return match.group(0)


_UNITS = {
    "ms": "millisecond",
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "y": "year",
}
_PROMETHEUS_DURATION = re.compile(r"(?<![\w.])((?:[0-9]+(?:ms|[smhdwy]))+)(?!\w)")
_DURATION_PART = re.compile("([0-9]+)(ms|[smhdwy])")
_OPERATORS = {
    ">=": "at least",
    "<=": "at most",
    ">": "above",
    "<": "below",
    "==": "equals",
    "!=": "not equal to",
}
_SPACED_OPERATOR = re.compile(r"(?<=\s)(>=|<=|==|!=|>|<)(?=\s)")
_DIGIT = re.compile("[0-9]")


def _duration_match(match: re.Match[str]) -> str:
    parts = _DURATION_PART.findall(match.group(1))
    return " ".join(_amount(int(count), _UNITS[unit]) for count, unit in parts)


def speakable(value: object) -> str:
    """Free text (an annotation) made speakable: URLs left out; addresses, numbers, durations spoken."""
    text = nourls(value)
    # Every pass scans the whole text: one runs only when the text has a character it needs (no pass adds digits).
    digits = _DIGIT.search(text) is not None
    if digits:
        text = _PROMETHEUS_DURATION.sub(_duration_match, text)
    if "<" in text or ">" in text or "=" in text:
        text = _SPACED_OPERATOR.sub(lambda m: _OPERATORS[m.group(1)], text)
    if digits:
        text = number(text)
        if ":" in text:
            text = _HOST_PORT_IN_TEXT.sub(_host_port_match, text)
        if "." in text:
            text = _IPV4.sub(_speak_ipv4, text)
    # The template ends the sentence itself.
    return " ".join(text.split()).rstrip(".,;: ")


_KEYS_SAID = {"*": "star", "#": "pound"}


def key(value: object) -> str:
    """A phone key as said: "1" -> "1", "*" -> "star", "#" -> "pound" (the menu says its keys so too)."""
    text = _text(value)
    return _KEYS_SAID.get(text, text)


@jinja2.pass_context
def _since_filter(context: jinja2.runtime.Context, start: datetime | str | None, until: Any = None) -> str:
    if start is None:
        return ""
    return since(start, context["now"] if until is None else until)


_SHORT = 1024  # longer texts are remembered only a few at a time: 2,048 huge annotations would fill memory


def _remembered(filter_: Callable[[object], str]) -> Callable[[object], str]:
    """A pure text filter that remembers its recent answers: alertnames, hosts and summaries recur page after page."""
    short = functools.lru_cache(maxsize=2048)(filter_)
    # Still remembered: a render tries several budgets, each asking again about the same long text.
    long = functools.lru_cache(maxsize=4)(filter_)

    @functools.wraps(filter_)
    def apply(value: object) -> str:
        if type(value) is not str:
            return filter_(value)
        return short(value) if len(value) <= _SHORT else long(value)
    return apply


_words = _remembered(words)
_instance = _remembered(instance)


def spoken(labels: Mapping[str, str], *names: str) -> str:
    """Labels spoken, the named ones that are set, in order: "cluster prod eu 1, instance node1 port 9100"."""
    # The instance label is an address; any other value is read as words.
    return ", ".join(
        f"{name} {_instance(labels[name]) if name == 'instance' else _words(labels[name])}"
        for name in names
        if labels.get(name)
    )


FILTERS: dict[str, Callable[..., str]] = {
    "since": _since_filter,
    "duration": duration,
    "words": _words,
    "number": _remembered(number),
    "instance": _instance,
    "ip": _remembered(ip),
    "nourls": _remembered(nourls),
    "speakable": _remembered(speakable),
    "spoken": spoken,
    "key": key,
}
