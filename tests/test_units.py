"""Durations, byte sizes and rates as the YAML config spells them."""

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alert2voice.units import Rate, format_duration, parse_duration, parse_listen, parse_rate, parse_size

S, M, H, D, W = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(weeks=1)
MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30 * S),
        ("5m", 5 * M),
        ("1h", H),
        ("1h30m", H + 30 * M),
        ("90m", 90 * M),
        ("1d", D),
        ("1w", W),
        ("1y", 365 * D),
        ("2w3d4h5m6s7ms", 2 * W + 3 * D + 4 * H + 5 * M + 6 * S + 7 * MS),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("500ms", 500 * MS),
        (" 5m ", 5 * M),
        (0, timedelta(0)),  # YAML `window: 0` is the integer 0
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("5", id="no-unit"),
        pytest.param(30, id="int-without-unit"),
        pytest.param("1m1h", id="wrong-order"),
        pytest.param("1h1h", id="unit-twice"),
        pytest.param("-1s", id="negative"),
        pytest.param("1.5h", id="fraction"),
        pytest.param("", id="empty"),
        pytest.param("5M", id="upper-case-unit"),
        pytest.param("1h 30m", id="inner-space"),
        pytest.param("5 minutes", id="word"),
        pytest.param(None, id="none"),
        pytest.param(True, id="bool"),
        pytest.param(1.5, id="float"),
    ],
)
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(0), "0s"),
        (30 * S, "30s"),
        (5 * M, "5m"),
        (H + 30 * M, "1h30m"),
        (W, "1w"),
        (2 * W + 3 * D + 4 * H + 5 * M + 6 * S + 7 * MS, "2w3d4h5m6s7ms"),
        (500 * MS, "500ms"),
        (365 * D, "52w1d"),
        # Large enough that total_seconds() * 1000 in floating point falls just below the true count.
        (7 * W + 3 * MS, "7w3ms"),
        (14 * W + 7 * MS, "14w7ms"),
    ],
)
def test_format_duration(td, text):
    assert format_duration(td) == text
    assert parse_duration(text) == td


@given(st.integers(min_value=0, max_value=20 * 365 * 86_400_000))
def test_format_duration_round_trips(milliseconds):
    td = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(td)) == td


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4MiB", 4 * 1024 * 1024),
        ("1MB", 1_000_000),
        ("512KiB", 512 * 1024),
        ("1KB", 1000),
        ("1GiB", 1024**3),
        ("4 MiB", 4 * 1024 * 1024),
        ("1.5KiB", 1536),
        ("1000000", 1_000_000),
        (1024, 1024),
        (0, 0),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["4XB", "abc", "", "MiB", "-1MiB", -1, True, None, "4 Mi B"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "count", "per", "per_second", "canonical"),
    [
        ("10/s", 10, S, 10.0, "10/s"),
        ("600/m", 600, M, 10.0, "600/m"),
        ("100/5m", 100, 5 * M, 100 / 300, "100/5m"),
        ("0.5/s", 0.5, S, 0.5, "0.5/s"),
        ("3600/h", 3600, H, 1.0, "3600/h"),
        ("10 / s", 10, S, 10.0, "10/s"),
    ],
)
def test_parse_rate(text, count, per, per_second, canonical):
    rate = parse_rate(text)
    assert rate == Rate(count, per)
    assert rate.per_second == pytest.approx(per_second)
    assert str(rate) == canonical
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0/s", id="zero-count"),
        pytest.param("10/0s", id="zero-period"),
        pytest.param("abc", id="garbage"),
        pytest.param("10", id="no-period"),
        pytest.param("/s", id="no-count"),
        pytest.param("-1/s", id="negative"),
        pytest.param("10/x", id="unknown-unit"),
        pytest.param(10, id="int"),
    ],
)
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError, match="rate") as raised:
        parse_rate(text)
    # The message quotes the rate as the user wrote it, not some intermediate form such as '1x'.
    assert repr(text) in str(raised.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0:9095", ("0.0.0.0", 9095)),
    ("127.0.0.1:1", ("127.0.0.1", 1)),
    ("[::1]:9095", ("::1", 9095)),
    (":9095", ("0.0.0.0", 9095)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9095", "host:", "host:port", "host:0", "host:65536", ""])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError, match="host:port"):
        parse_listen(text)
