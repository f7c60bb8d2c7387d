"""What a call says: Jinja templates rendered to SSML (or plain text), speakable filters, a length budget.

Templates live in ``templates.directory``; a name found there overrides the built-in template of the
same name (``firing.ssml.j2``, ``resolved.ssml.j2``). A name ending in ``.ssml.j2`` renders one SSML
document in which every interpolated value is XML-escaped; any other name renders plain text (sent
with textFormat TEXT). Undefined variables are errors: write ``alert.labels.get("cluster")`` or
``{% if "cluster" in alert.labels %}`` for labels that not every alert carries.

Template variables:

- ``alerts``: the alerts this call is about (the firing ones, or the resolved ones for a resolved
  call). Each has ``labels``, ``annotations``, ``status``, ``startsAt``, ``endsAt`` (None while
  firing), ``generatorURL``, ``fingerprint``, and the conveniences ``alertname``, ``severity`` (the
  label, or ""), ``summary`` (annotation ``summary``, else ``description``, else the alertname),
  ``description`` (or "") and ``firing``.
- ``alerts_spoken``: the first ``speech.max_alerts_spoken`` of ``alerts`` (fewer when the length
  budget needs it); ``more``: how many are not spoken, counting Alertmanager's ``truncatedAlerts``;
  ``total``: ``alerts`` plus ``truncatedAlerts``.
- ``alertnames``: the distinct alertnames of ``alerts``, in order; ``severity``: the most severe
  severity label among ``alerts`` (critical, page, high, error, major, warning, ... info), or "".
- ``started_at``: the earliest ``startsAt``; ``ended_at``: the latest ``endsAt``, or ``now`` while
  any alert fires.
- ``group_labels``, ``common_labels``, ``common_annotations``, ``receiver``, ``external_url``: from
  the webhook; ``route``, ``contact``: the route and the contact being called; ``status``:
  "firing" or "resolved"; ``now``: the time of the call (aware datetime); ``language``: the
  call's language, for ``xml:lang``; ``ack_digit``: in interactive mode the key that acknowledges
  the page ("1", "*" or "#"...), else None; ``menu``: in interactive mode the whole key menu as one
  sentence ("Press 1 to acknowledge, 5 to pass to the next person, star to repeat."), else None. A
  template that uses either says its own prompt; otherwise the menu follows it.

A render is bounded in work, time and size (alert2voice.sandbox); over a bound it fails like any other
error. render() raises a TemplateError; speak(), which calls use, falls back instead: to the packaged
template of the same kind, then to a fixed sentence naming the alerts, so that a call always goes out.

Filters (plain strings in and out; escaping happens on output):

- ``since``: ``alert.startsAt | since`` -> "for 12 minutes" (until ``now``), or
  ``alert.startsAt | since(alert.endsAt)``; ``duration``: a timedelta or seconds -> "for 1 hour and
  5 minutes".
- ``words``: "HighCPUUsage" -> "High CPU Usage", "disk_full_root" -> "disk full root".
- ``number``: "95.3%" -> "95.3 percent", "1234567" -> "1,234,567", "1.5e+06" -> "1.5 million".
- ``instance``: "node1:9100" -> "node1 port 9100"; ``ip``: "10.0.0.1" -> "10 dot 0 dot 0 dot 1".
- ``nourls``: leaves out http(s) URLs; ``speakable``: all of the above that suits free text
  (annotations): URLs left out, ``host:port``, IP addresses, percentages, numbers, Prometheus
  durations ("5m" -> "5 minutes") and spaced comparisons ("> 90" -> "above 90") spoken.
- ``spoken``: ``alert.labels|spoken("cluster", "instance")`` -> "cluster prod eu 1, instance node1 port 9100": the
  named labels that are set, in that order, each as its name and value (``instance`` as an address, the others as
  ``words``); "" when none is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

import jinja2
import jinja2.meta
from markupsafe import Markup

from alert2voice import sandbox
from alert2voice.alertmanager import Alert, Payload

SSML_NAMESPACE = "http://www.w3.org/2001/10/synthesis"
# The Azure SSML elements Webex Connect documents for TTS (reference/webex-connect-voice-v1.md §2).
ALLOWED_ELEMENTS = frozenset({"speak", "voice", "prosody", "break", "say-as", "sub", "emphasis", "lang", "p", "s"})
# Names as expat gives them with namespace processing (see _ssml_problem).
_SSML_NAMES = frozenset(f"{SSML_NAMESPACE}}}{local}" for local in ALLOWED_ELEMENTS)
_XML_LANG = "http://www.w3.org/XML/1998/namespace}lang"

# Characters XML 1.0 forbids even when escaped; a label holding one would make the document unparseable.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_SEVERITY_ORDER = ("critical", "page", "high", "error", "major", "warning", "medium", "minor", "low", "info")
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(_SEVERITY_ORDER)}

# Length budget, tried in order once a single alert spoken is still too long: (annotation cut, label cut).
# Labels are cut last and never below 16 characters, so a severity like "critical" stays whole.
_CUTS: tuple[tuple[int, int | None], ...] = ((200, None), (80, None), (30, None), (10, 40), (10, 16))


class TemplateError(Exception):
    """A template that cannot be rendered; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class SpeechContext:
    """What one call is about: the group, the alerts to speak, who is called, and when."""

    payload: Payload
    alerts: Sequence[Alert]
    route: str
    contact: str
    now: datetime
    status: Literal["firing", "resolved"] = "firing"
    language: str = "en-US"
    ack_digit: str | None = None
    menu: str | None = None  # interactive.prompt_text(): the keys of the phone menu, as said

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("SpeechContext.now must be timezone-aware")


@dataclass(frozen=True)
class Spoken:
    """What a call says; when its template failed, why, and what is said instead."""

    text: str
    text_format: Literal["SSML", "TEXT"]
    asks_ack: bool  # the text says the acknowledgement prompt itself
    error: Exception | None = None  # why the template asked for is not what is said
    fallback: str | None = None  # what is said instead: "the built-in firing.ssml.j2" or "a fixed sentence"


@dataclass(frozen=True)
class AlertView:
    """One alert as templates see it."""

    labels: dict[str, str]
    annotations: dict[str, str]
    status: str
    startsAt: datetime
    endsAt: datetime | None
    generatorURL: str
    fingerprint: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.annotations.get("description") or self.alertname

    @property
    def description(self) -> str:
        return self.annotations.get("description", "")

    @property
    def firing(self) -> bool:
        return self.status == "firing"


# ---------------------------------------------------------------------------------------------------
# Filters: small pure functions, plain str in and out (never Markup, so label text is always escaped).


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
}


# ---------------------------------------------------------------------------------------------------
# Rendering


_MAX_TEXT = sandbox.MAX_TEXT  # no value is printed longer: the sandbox relies on it (see BoundedSandbox)


def _finalize(value: object) -> str:
    # Most values: a printable ASCII str, which has nothing XML forbids, of a length that is no runaway.
    kind = type(value)
    if (kind is str or kind is Markup) and value.isascii() and value.isprintable() and len(value) <= _MAX_TEXT:
        return value
    return _finalize_other(value)


def _finalize_other(value: object) -> str:
    text = value if type(value) in (str, Markup) else _text(value)
    if len(text) > _MAX_TEXT:
        sandbox.check_text(text)
    if text.isascii() and text.isprintable():
        return text
    text = _XML_INVALID.sub("", _text(value))
    # Markup stays Markup (a macro's output, already escaped): only the forbidden characters went.
    return Markup(text) if isinstance(value, Markup) else text  # noqa: S704


def _cut(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[:limit].rstrip() + "…"


def _cut_all(values: Mapping[str, str], limit: int | None) -> dict[str, str]:
    # A copy even uncut: a template may change the dict it is given, never the payload's.
    if limit is None:
        return dict(values)
    return {key: _cut(value, limit) for key, value in values.items()}


def _view(alert: Alert, annotation_cut: int | None, label_cut: int | None) -> AlertView:
    return AlertView(
        labels=_cut_all(alert.labels, label_cut),
        annotations=_cut_all(alert.annotations, annotation_cut),
        status=alert.status,
        startsAt=alert.startsAt,
        endsAt=alert.ended_at,
        generatorURL=_cut(alert.generatorURL, label_cut),
        fingerprint=alert.fingerprint,
    )


def _most_severe(severities: Sequence[str]) -> str:
    present = [s for s in severities if s]
    known = [s for s in present if s.lower() in _SEVERITY_RANK]
    if known:
        return min(known, key=lambda s: _SEVERITY_RANK[s.lower()])
    return present[0] if present else ""


def _variables(ctx: SpeechContext, spoken: int, annotation_cut: int | None, label_cut: int | None) -> dict[str, Any]:
    payload = ctx.payload
    alerts = [_view(alert, annotation_cut, label_cut) for alert in ctx.alerts]
    ends = [alert.endsAt for alert in alerts]
    still_firing = not alerts or any(end is None for end in ends)
    return {
        "alerts": alerts,
        "alerts_spoken": alerts[:spoken],
        "more": len(alerts) - len(alerts[:spoken]) + payload.truncatedAlerts,
        "total": len(alerts) + payload.truncatedAlerts,
        "alertnames": list(dict.fromkeys(alert.alertname for alert in alerts if alert.alertname)),
        "severity": _most_severe([alert.severity for alert in alerts]),
        "started_at": min((alert.startsAt for alert in alerts), default=ctx.now),
        "ended_at": ctx.now if still_firing else max(end for end in ends if end is not None),
        "group_labels": _cut_all(payload.groupLabels, label_cut),
        "common_labels": _cut_all(payload.commonLabels, label_cut),
        "common_annotations": _cut_all(payload.commonAnnotations, annotation_cut),
        "receiver": _cut(payload.receiver, label_cut),
        "external_url": _cut(payload.externalURL, label_cut),
        "route": _cut(ctx.route, label_cut),
        "contact": _cut(ctx.contact, label_cut),
        "status": ctx.status,
        "now": ctx.now,
        "language": _cut(ctx.language, label_cut),
        "ack_digit": ctx.ack_digit,
        "menu": ctx.menu,
    }


def _is_normal(text: str) -> bool:
    """Whether _normalise would leave the text as it is: single spaces between words, no empty lines."""
    if text.startswith((" ", "\n")) or text.endswith((" ", "\n")):
        return False
    if "  " in text or " \n" in text or "\n " in text or "\n\n" in text:
        return False
    # Whitespace other than a space or a newline is never printable.
    return text.replace("\n", " ").isprintable()


def _normalise(text: str) -> str:
    if _is_normal(text):  # what the built-in templates render: nothing to split and join again
        return text
    # Each line with its whitespace collapsed, empty lines left out.
    return "\n".join(filter(None, map(" ".join, map(str.split, text.split("\n")))))


def ssml_document(text: str, language: str) -> str:
    """A plain sentence as one complete SSML document."""
    text = escape(_XML_INVALID.sub("", text))
    return f'<speak version="1.0" xmlns="{SSML_NAMESPACE}" xml:lang={quoteattr(language)}>{text}</speak>'


def _completed_ssml(document: str, problem: str, name: str, language: str) -> str:
    """A document _ssml_problem refused, completed if its only fault is a bare <speak>, else a TemplateError."""
    completed = _completed_speak(document, language)
    if completed is not None:  # what is wrong with it once completed, if anything, is what to report
        problem = _ssml_problem(completed)
        if problem is None:
            return completed
    raise TemplateError(f"{name}: {problem}")


def _completed_speak(document: str, language: str) -> str | None:
    """The document with the version, xmlns and xml:lang its root <speak> lacks filled in; None if it lacks none."""
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        return None
    parser = expat.ParserCreate()  # without namespace processing: the root's attributes as written
    roots: list[tuple[str, dict[str, str], int]] = []
    parser.StartElementHandler = lambda tag, attributes: roots or roots.append(
        (tag, attributes, parser.CurrentByteIndex))
    try:
        parser.Parse(document, True)
    except expat.ExpatError:
        return None
    if not roots or roots[0][0] != "speak":
        return None
    _, attributes, offset = roots[0]
    wanted = (("version", "1.0"), ("xmlns", SSML_NAMESPACE), ("xml:lang", language))
    missing = "".join(f" {key}={quoteattr(value)}" for key, value in wanted if key not in attributes)
    if not missing:
        return None
    at = len(document.encode()[:offset].decode()) + len("<speak")  # expat counts UTF-8 bytes
    return document[:at] + missing + document[at:]


def _ssml_problem(document: str) -> str | None:
    # Only our own output is parsed, and a DOCTYPE (the way to declare entities) is refused first.
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        return "DOCTYPE and entity declarations are not allowed"
    # Expat driven as ElementTree drives it (the same calls, so the same errors), without building a tree.
    # Expat names an element "namespace}local" (ElementTree: "{namespace}local"); setdefault records each name
    # once, in document order, with the attributes of its first element: the root's, for the root.
    elements: dict[str, dict[str, str]] = {}
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartElementHandler = elements.setdefault
    try:
        parser.Parse(document, False)
        parser.Parse("", True)
    except expat.ExpatError as exc:
        return f"output is not well-formed SSML ({exc})"
    root, attributes = next(iter(elements.items()))
    if root != f"{SSML_NAMESPACE}}}speak":
        return f'the document must be one <speak version="1.0" xmlns="{SSML_NAMESPACE}" xml:lang="...">'
    if attributes.get("version") != "1.0" or not attributes.get(_XML_LANG):
        return '<speak> needs version="1.0" and xml:lang'
    for name in elements:
        if name in _SSML_NAMES:  # the common case, first: what the test below allows anyway
            continue
        namespace, _, local = name.rpartition("}")
        if namespace.lstrip("{") != SSML_NAMESPACE or local not in ALLOWED_ELEMENTS:
            allowed = ", ".join(sorted(ALLOWED_ELEMENTS))
            return f"element <{local}> is not allowed in SSML for Webex Connect (allowed: {allowed})"
    return None


# AlertView's fields and properties: plain data, so reading one needs none of the sandbox's checks.
_VIEW_ATTRIBUTES = frozenset(
    [f.name for f in fields(AlertView)]
    + [name for name, value in vars(AlertView).items() if isinstance(value, property)]
)


_LOOP_ATTRIBUTES = frozenset(name for name in dir(jinja2.runtime.LoopContext) if not name.startswith("_"))


class _Sandbox(sandbox.BoundedSandbox):
    """The sandbox, with a fast path for what every template reads most: the alerts' own attributes."""

    def getitem(self, obj: Any, argument: Any) -> Any:
        if type(obj) is list and type(argument) is int:  # alerts[0]: a read the sandbox allows anyway
            try:
                return obj[argument]
            except IndexError:
                pass
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is AlertView and attribute in _VIEW_ATTRIBUTES:
            return getattr(obj, attribute)
        if kind is dict and attribute == "get":  # labels.get("cluster"): a read the sandbox allows anyway
            return obj.get
        if kind is jinja2.runtime.LoopContext and attribute in _LOOP_ATTRIBUTES:
            return getattr(obj, attribute)  # loop.index, loop.first...: public, as the sandbox would allow
        return super().getattr(obj, attribute)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # A template's globals as a dict rather than Jinja's ChainMap over the environment's: every render copies
        # them, and copying a ChainMap runs in Python (a tenth of a short render). Nothing changes globals later.
        return {**self.globals, **(d or {})}


class Speech:
    """Renders the text of calls from templates: user templates first, built-in ones otherwise."""

    def __init__(self, directory: Path | None, *, max_alerts_spoken: int = 3, max_chars: int = 2000,
                 clock: Callable[[], float] = time.monotonic, render_seconds: float = sandbox.MAX_SECONDS):
        if max_alerts_spoken < 1 or max_chars < 1:
            raise ValueError("max_alerts_spoken and max_chars must be at least 1")
        self.directory = directory
        self.max_alerts_spoken = max_alerts_spoken
        self.max_chars = max_chars
        self._clock, self._render_seconds = clock, render_seconds
        self._packaged: Speech | None = None if directory is not None else self
        loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("alert2voice", "templates")]
        if directory is not None:
            loaders.insert(0, jinja2.FileSystemLoader(directory))
        self._loader = jinja2.ChoiceLoader(loaders)
        # Escaping follows the document being produced, not the name of a file it imports or includes,
        # so an SSML template's helper macros escape too: one environment per output format.
        self._environments = {
            "SSML": self._environment(self._loader, True),
            "TEXT": self._environment(self._loader, False),
        }
        self._uses: dict[tuple[str, str], bool] = {}
        # Compiled once: Jinja's own cache is an LRU behind a lock, looked up on every render.
        self._templates: dict[tuple[str, str], jinja2.Template] = {}

    @staticmethod
    def _environment(loader: jinja2.BaseLoader, autoescape: bool) -> jinja2.Environment:
        # Sandboxed: templates are configuration and must not reach Python internals (or secrets) from there.
        environment = _Sandbox(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=autoescape,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        environment.filters.update(FILTERS)
        return environment

    @staticmethod
    def text_format(name: str) -> Literal["SSML", "TEXT"]:
        """The provider's textFormat for a template: SSML for `*.ssml.j2`, TEXT otherwise."""
        return "SSML" if name.endswith(".ssml.j2") else "TEXT"

    def has_template(self, name: str) -> bool:
        """Whether the template exists in the user directory or among the built-in ones."""
        try:
            self._loader.get_source(self._environments["SSML"], name)
        except jinja2.TemplateNotFound:
            return False
        return True

    def uses(self, name: str, variable: str) -> bool:
        """Whether the template itself refers to a variable (what it imports or includes is not looked at)."""
        key = (name, variable)
        if key not in self._uses:
            env = self._environments[self.text_format(name)]
            source = self._loader.get_source(env, name)[0]
            self._uses[key] = variable in jinja2.meta.find_undeclared_variables(env.parse(source))
        return self._uses[key]

    def speak(self, name: str, ctx: SpeechContext) -> Spoken:
        """What a call says, always: the template's text, else the built-in template's, else a fixed sentence."""
        try:
            return self._spoken(name, ctx)
        except Exception as exc:  # whatever went wrong, the call goes out: `error` says what it was
            error = exc
        packaged = self._packaged_only()
        fallback = f"{ctx.status}.{'ssml' if self.text_format(name) == 'SSML' else 'txt'}.j2"
        if packaged is not self or fallback != name:  # the same template would fail the same way
            with contextlib.suppress(Exception):
                return dataclasses.replace(packaged._spoken(fallback, ctx), error=error,
                                           fallback=f"the built-in {fallback}")
        return Spoken(self._fixed_sentence(ctx), "SSML", False, error, "a fixed sentence")

    def render(self, name: str, ctx: SpeechContext) -> str:
        """The call's text: one well-formed SSML document (or plain text), at most max_chars characters."""
        text_format = self.text_format(name)
        template = self._template(name, text_format)
        token = sandbox.BUDGET.set(sandbox.Budget(self._clock, self._render_seconds))
        try:
            failure = ""
            for spoken, annotation_cut, label_cut in self._budget(len(ctx.alerts)):
                variables = _variables(ctx, spoken, annotation_cut, label_cut)
                try:
                    output = _normalise(sandbox.render(template, variables))
                except sandbox.TooLarge as exc:  # fewer alerts or shorter text may fit
                    failure = f"{self._located(exc, name)} (even with one alert spoken and shortened text)"
                    continue
                except Exception as exc:
                    raise self._located(exc, name) from exc
                if text_format == "SSML" and len(output) <= self.max_chars and (problem := _ssml_problem(output)):
                    output = _completed_ssml(output, problem, name, ctx.language)
                if len(output) <= self.max_chars:
                    return output
                failure = (f"{name}: output is {len(output)} characters even with one alert spoken and "
                           f"shortened text, over speech.max_chars ({self.max_chars})")
            raise TemplateError(failure)
        finally:
            sandbox.BUDGET.reset(token)

    def check(self, name: str, now: datetime) -> list[str]:
        """Render the template against sample alerts and return its problems instead of raising."""
        problems: list[str] = []
        for ctx in sample_contexts(now):
            try:
                self.render(name, ctx)
            except TemplateError as exc:
                if str(exc) not in problems:
                    problems.append(str(exc))
        return problems

    def _spoken(self, name: str, ctx: SpeechContext) -> Spoken:
        text = self.render(name, ctx)
        asks = ctx.ack_digit is not None and (self.uses(name, "menu") or self.uses(name, "ack_digit"))
        return Spoken(text, self.text_format(name), asks)

    def _packaged_only(self) -> Speech:
        """A Speech that sees only the packaged templates: a user directory may shadow their names."""
        if self._packaged is None:
            self._packaged = Speech(None, max_alerts_spoken=self.max_alerts_spoken, max_chars=self.max_chars,
                                    clock=self._clock, render_seconds=self._render_seconds)
        return self._packaged

    def _fixed_sentence(self, ctx: SpeechContext) -> str:
        """The last resort, for when no template renders: "Alert firing: HighCPU, DiskFull." as SSML."""
        names = [name for name in dict.fromkeys(_cut(a.labels.get("alertname", ""), 60) for a in ctx.alerts) if name]
        shown = names[: self.max_alerts_spoken]
        while True:
            more = f" and {len(names) - len(shown)} more" if len(shown) < len(names) else ""
            said = f": {', '.join(shown)}{more}" if shown else f" on route {_cut(words(ctx.route), 60)}"
            document = ssml_document(f"Alert {ctx.status}{said}.", ctx.language)
            if len(document) <= self.max_chars or not shown:
                return document
            shown.pop()

    def _budget(self, alert_count: int) -> Iterator[tuple[int, int | None, int | None]]:
        # Fewer alerts spoken first ("and N more" grows), then shorter annotations, then shorter labels.
        for spoken in range(min(self.max_alerts_spoken, max(alert_count, 1)), 0, -1):
            yield spoken, None, None
        for annotation_cut, label_cut in _CUTS:
            yield 1, annotation_cut, label_cut

    def _template(self, name: str, text_format: str) -> jinja2.Template:
        template = self._templates.get((name, text_format))
        if template is None:
            try:
                template = self._environments[text_format].get_template(name)
            except Exception as exc:
                raise self._located(exc, name) from exc
            self._templates[name, text_format] = template
        return template

    def _located(self, exc: Exception, name: str) -> TemplateError:
        if isinstance(exc, jinja2.TemplateSyntaxError):
            where = self._display(exc.filename) if exc.filename else exc.name or name
            return TemplateError(f"{where}:{exc.lineno}: {exc.message}")
        # Jinja rewrites tracebacks so template frames carry the template's file name and line number.
        where = name
        tb = exc.__traceback__
        while tb is not None:
            if "__jinja_exception__" in tb.tb_frame.f_globals:
                where = f"{self._display(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
            tb = tb.tb_next
        if isinstance(exc, jinja2.TemplateNotFound):
            searched = f"{self.directory} or " if self.directory is not None else ""
            return TemplateError(f"{where}: template {exc.name!r} not found in {searched}the built-in templates")
        if isinstance(exc, jinja2.UndefinedError) and (missing := _MISSING_KEY.search(str(exc))):
            key = missing.group(1)
            return TemplateError(f'{where}: {exc} (not every alert has every label and annotation: '
                                 f'write .get("{key}"): alert.labels.get("{key}") or alert.annotations.get("{key}"))')
        return TemplateError(f"{where}: {exc}")

    def _display(self, filename: str) -> str:
        """A template file as users name it: relative to the template directory, else its file name."""
        path = Path(filename).resolve()
        if self.directory is not None and path.is_relative_to(Path(self.directory).resolve()):
            return path.relative_to(Path(self.directory).resolve()).as_posix()
        return path.name


_MISSING_KEY = re.compile(r"^'dict object' has no attribute '([^']*)'$")


# ---------------------------------------------------------------------------------------------------
# Sample alerts for check() and check-config


def sample_payload(now: datetime) -> Payload:
    """A realistic firing group: several alerts, markup characters in labels, one without annotations."""
    alerts = [
        Alert(
            status="firing",
            labels={
                "alertname": "KubePodCrashLooping",
                "severity": "critical",
                "cluster": "prod-eu-1",
                "namespace": "payments",
                "pod": "api-7d9f<b>&\"'",
                "instance": "10.2.3.4:8080",
                "job": "kube-state-metrics",
            },
            annotations={
                "summary": "Pod payments/api is crash looping <&>",
                "description": "Restarted 5 times in 10m. See https://runbooks.example.com/KubePodCrashLooping",
                "runbook_url": "https://runbooks.example.com/KubePodCrashLooping",
            },
            startsAt=now - timedelta(minutes=12),
            generatorURL="http://prometheus:9090/graph?g0.expr=a%3Cb&g0.tab=1",
            fingerprint="5ef77f1f8bb1b4d1",
        ),
        Alert(
            status="firing",
            labels={
                "alertname": "HighCPUUsage",
                "severity": "warning",
                "instance": "node1:9100",
                "job": "node",
            },
            annotations={"summary": "CPU at 95.3% on node1 & node2", "description": "CPU > 90% for 5m"},
            startsAt=now - timedelta(hours=1, minutes=5),
            fingerprint="c139641b6822c29d",
        ),
        Alert(
            status="firing",
            labels={"alertname": "NodeFilesystemAlmostFull", "instance": "[::1]:9100"},
            startsAt=now - timedelta(days=3),
            fingerprint="0bb1d603e9bcb6cf",
        ),
        Alert(
            status="firing",
            labels={"alertname": "TargetDown", "severity": "page", "job": 'flip "a<b"'},
            annotations={"summary": "Target down"},
            startsAt=now - timedelta(seconds=30),
            fingerprint="3f9479ec671b7208",
        ),
    ]
    return Payload(
        version="4",
        receiver="voice",
        status="firing",
        alerts=alerts,
        groupLabels={"cluster": "prod-eu-1"},
        commonLabels={},
        commonAnnotations={},
        externalURL="http://alertmanager.monitoring.svc:9093",
        groupKey='{}:{cluster="prod-eu-1"}',
        truncatedAlerts=1,
    )


def sample_contexts(now: datetime) -> list[SpeechContext]:
    """Contexts check() renders: a firing group, a single firing alert, the group resolved, a bare alert."""
    payload = sample_payload(now)
    single = payload.model_copy(update={"alerts": payload.alerts[:1], "truncatedAlerts": 0})
    ended = [a.model_copy(update={"status": "resolved", "endsAt": now - timedelta(minutes=1)}) for a in payload.alerts]
    resolved = payload.model_copy(update={"status": "resolved", "alerts": ended})
    # Only what every alert has: no instance, severity or summary, no group labels.
    bare_alert = Alert(status="firing", labels={"alertname": "Watchdog"}, startsAt=now - timedelta(minutes=2),
                       fingerprint="e1f6a2b9c0d3e4f5")
    bare = Payload(version="4", receiver="voice", status="firing", alerts=[bare_alert], groupKey="{}:{}")
    return [
        SpeechContext(payload, payload.alerts, "sample-route", "sample-contact", now),
        SpeechContext(single, single.alerts, "sample-route", "sample-contact", now),
        SpeechContext(resolved, resolved.alerts, "sample-route", "sample-contact", now, status="resolved"),
        SpeechContext(bare, bare.alerts, "sample-route", "sample-contact", now),
    ]
