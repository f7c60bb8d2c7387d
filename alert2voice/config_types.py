"""The config's scalar types: durations, sizes, rates, E.164 numbers, time zones, clock times, local date-times,
matchers and phone keys, each parsed from what YAML gives and refused with a message saying what was expected."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer

from . import oncall
from .matchers import Matcher, MatcherError, parse_matchers
from .units import Rate, format_duration, parse_duration, parse_listen, parse_rate, parse_size


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


def _e164(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads an unquoted +14155550101 as the integer 14155550101: the "+" is already gone.
        raise ValueError(f'phone numbers must be quoted strings in E.164 form, e.g. "+{value}"')
    if not isinstance(value, str):
        raise ValueError(f"expected a phone number in E.164 form such as +14155550101, got {value!r}")
    text = value.strip()
    if not re.fullmatch(r"\+[1-9]\d{6,14}", text):
        raise ValueError(f"{value!r} is not an E.164 number: expected + then country code and number, digits only")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not an E.164 number: {exc}") from None
    # IS_POSSIBLE_LOCAL_ONLY is not enough: the provider dials the number as given, without an area code.
    if phonenumbers.is_possible_number_with_reason(parsed) != phonenumbers.ValidationResult.IS_POSSIBLE:
        region = phonenumbers.region_code_for_country_code(parsed.country_code)
        raise ValueError(f"{value!r} has the wrong length for a number of +{parsed.country_code} ({region})")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _timezone(value: Any) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}: expected an IANA name such as Europe/London") from None


def _clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        # YAML 1.1 reads an unquoted 22:00 as the base-60 integer 1320: turn it back into what was written.
        value = f"{value // 60}:{value % 60:02d}"
    return oncall.parse_clock(str(value))


def _local_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"invalid date-time {value!r}: expected e.g. 2026-01-05T09:00:00") from None
    if not isinstance(value, datetime):
        raise ValueError(f"expected a date-time such as 2026-01-05T09:00:00, got {value!r}")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
RateLimit = Annotated[Rate, BeforeValidator(lambda v: v if isinstance(v, Rate) else parse_rate(v)),
                      PlainSerializer(str, return_type=str)]
E164 = Annotated[str, BeforeValidator(_e164)]
TimeZone = Annotated[ZoneInfo, BeforeValidator(_timezone), PlainSerializer(str, return_type=str)]
Clock = Annotated[time, BeforeValidator(_clock)]
LocalDateTime = Annotated[datetime, BeforeValidator(_local_datetime)]


def _matcher_list(value: Any) -> list[Matcher]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("matchers must be a list of strings such as 'team=\"payments\"'")
    out: list[Matcher] = []
    for item in value:
        if isinstance(item, Matcher):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise ValueError(f"matcher {item!r} must be a string such as 'severity=\"critical\"'")
        try:
            out.extend(parse_matchers(item))
        except MatcherError as exc:
            raise ValueError(str(exc)) from None
    return out


Matchers = Annotated[list[Matcher], BeforeValidator(_matcher_list),
                     PlainSerializer(lambda ms: [str(m) for m in ms], return_type=list)]

# A key of the phone menu.
Key = Annotated[str, Field(pattern=r"^[0-9*#]$")]


def at_least(value: timedelta, minimum: timedelta, name: str) -> timedelta:
    """A duration no shorter than `minimum`, or the ValueError that says so."""
    if value < minimum:
        raise ValueError(f"{name} must be at least {format_duration(minimum)}")
    return value


def host_name(authority: str) -> str:
    """`Alert2Voice.example.:443` -> `alert2voice.example`, `[::1]:9095` -> `[::1]`: a Host header's name as
    compared, without port, case or the root's trailing dot."""
    authority = authority.rpartition("@")[2].strip().lower()
    if authority.startswith("["):
        return authority[:authority.find("]") + 1] if "]" in authority else ""
    return authority.partition(":")[0].rstrip(".")


def _host_name(value: str) -> str:
    if not value or any(c in value for c in "/ @") or value != value.strip():
        raise ValueError(f"expected a host name without port or scheme, such as alert2voice.example, got {value!r}")
    return host_name(value)


def _listen(value: str) -> str:
    parse_listen(value)
    return value


HostName = Annotated[str, AfterValidator(_host_name)]  # as compared: lower case, no port, no trailing dot
Listen = Annotated[str, AfterValidator(_listen)]  # host:port, [::1]:port or :port


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"expected an http(s) URL such as https://host:port, got {value!r}")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]  # http(s)://host..., without a trailing slash
