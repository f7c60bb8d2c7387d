"""The provider boundary: status/body -> result or typed error, request bodies, Retry-After."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alert2voice.provider import (
    Accepted,
    AuthFailed,
    CallRequest,
    CallStatus,
    MediaAudio,
    NetworkError,
    ProviderError,
    RateLimited,
    Rejected,
    TtsAudio,
    Unavailable,
    UrlAudio,
    classify_response,
    classify_status_response,
    normalize_status,
    parse_retry_after,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def err(code: str, message: str = "x") -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


ACCEPTED_BODY = json.dumps(
    {"acceptedTime": "2024-09-04T06:42:16.520-04:00", "messageId": "acc27bb5-1", "correlationId": "c-1"}
).encode()

# (HTTP status, body, headers) -> (error class, retryable, reason label, code, retry_after)
ERROR_TABLE = [
    pytest.param(400, err("7000"), {}, Rejected, False, "rejected", "7000", None, id="7000-invalid-json"),
    pytest.param(403, err("7001"), {}, AuthFailed, False, "auth", "7001", None, id="7001-auth-failed"),
    pytest.param(403, err("7002"), {}, AuthFailed, False, "auth", "7002", None, id="7002-key-missing"),
    pytest.param(400, err("7003"), {}, Rejected, False, "rejected", "7003", None, id="7003-mandatory"),
    pytest.param(400, err("7004"), {}, Rejected, False, "rejected", "7004", None, id="7004-invalid-param"),
    pytest.param(400, err("7005"), {}, Rejected, False, "rejected", "7005", None, id="7005-expired"),
    pytest.param(500, err("7006"), {}, Unavailable, True, "unavailable", "7006", None, id="7006-internal"),
    pytest.param(400, err("7006"), {}, Unavailable, True, "unavailable", "7006", None, id="7006-on-a-400"),
    pytest.param(400, err("7007"), {}, AuthFailed, False, "auth", "7007", None, id="7007-service-inactive"),
    pytest.param(400, err("7009"), {}, Rejected, False, "rejected", "7009", None, id="7009-destinations"),
    pytest.param(500, err("7016"), {}, Unavailable, True, "unavailable", "7016", None, id="7016-unknown"),
    pytest.param(400, err("7016"), {}, Unavailable, True, "unavailable", "7016", None, id="7016-on-a-400"),
    pytest.param(429, err("7020"), {}, RateLimited, True, "rate_limited", "7020", None, id="7020-429"),
    pytest.param(400, err("7020"), {}, RateLimited, True, "rate_limited", "7020", None, id="7020-on-a-400"),
    pytest.param(400, err("7022"), {}, Rejected, False, "rejected", "7022", None, id="7022-size"),
    pytest.param(400, err("7101"), {}, Rejected, False, "rejected", "7101", None, id="7101-sender"),
    pytest.param(400, err("7102"), {}, Rejected, False, "rejected", "7102", None, id="7102-destination"),
    pytest.param(400, err("7107"), {}, Rejected, False, "rejected", "7107", None, id="7107-length"),
    pytest.param(400, err("7126"), {}, Rejected, False, "rejected", "7126", None, id="7126-content-type"),
    pytest.param(403, err("7127"), {}, AuthFailed, False, "auth", "7127", None, id="7127-source-ip"),
    pytest.param(401, b"", {}, AuthFailed, False, "auth", None, None, id="401-empty"),
    pytest.param(403, b"Forbidden", {}, AuthFailed, False, "auth", None, None, id="403-text"),
    pytest.param(429, b"", {"Retry-After": "2"}, RateLimited, True, "rate_limited", None, 2.0, id="429-seconds"),
    pytest.param(
        429,
        err("7020"),
        {"retry-after": "1.5"},
        RateLimited,
        True,
        "rate_limited",
        "7020",
        1.5,
        id="429-lower",
    ),
    pytest.param(
        429,
        err("7020"),
        {"Retry-After": "Sun, 01 Mar 2026 12:00:30 GMT"},
        RateLimited,
        True,
        "rate_limited",
        "7020",
        30.0,
        id="429-http-date",
    ),
    pytest.param(
        429,
        b"",
        {"Retry-After": "Sun, 01 Mar 2026 11:00:00 GMT"},
        RateLimited,
        True,
        "rate_limited",
        None,
        0.0,
        id="429-date-in-the-past",
    ),
    pytest.param(429, b"", {"Retry-After": "soon"}, RateLimited, True, "rate_limited", None, None, id="429-garbage"),
    pytest.param(429, b"", {"Retry-After": "-3"}, RateLimited, True, "rate_limited", None, None, id="429-negative"),
    pytest.param(429, b"", {}, RateLimited, True, "rate_limited", None, None, id="429-no-retry-after"),
    pytest.param(500, b"", {}, Unavailable, True, "unavailable", None, None, id="500-empty"),
    pytest.param(502, b"<html>Bad Gateway</html>", {}, Unavailable, True, "unavailable", None, None, id="502-html"),
    pytest.param(503, b"Service Unavailable", {}, Unavailable, True, "unavailable", None, None, id="503-text"),
    pytest.param(504, b"\xff\xfe", {}, Unavailable, True, "unavailable", None, None, id="504-binary"),
    pytest.param(500, err("7004"), {}, Unavailable, True, "unavailable", "7004", None, id="5xx-beats-code"),
    pytest.param(408, b"", {}, Unavailable, True, "unavailable", None, None, id="408-proxy-timeout"),
    pytest.param(404, b"", {}, Rejected, False, "rejected", None, None, id="404-wrong-path"),
    pytest.param(405, b"Method Not Allowed", {}, Rejected, False, "rejected", None, None, id="405"),
    pytest.param(302, b"", {"Location": "https://x"}, Rejected, False, "rejected", None, None, id="302"),
    pytest.param(400, b"[1, 2]", {}, Rejected, False, "rejected", None, None, id="400-json-not-object"),
    pytest.param(
        400, b'{"code": 7102, "message": 1}', {}, Rejected, False, "rejected", "7102", None, id="numeric-code"
    ),
    pytest.param(
        202, b'{"acceptedTime": "t"}', {}, Unavailable, True, "unavailable", None, None, id="202-no-messageid"
    ),
    pytest.param(202, b"accepted", {}, Unavailable, True, "unavailable", None, None, id="202-not-json"),
]


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "retryable", "reason", "code", "retry_after"), ERROR_TABLE
)
def test_error_table(status, body, headers, cls, retryable, reason, code, retry_after):
    with pytest.raises(ProviderError) as info:
        classify_response(status, body, headers, now=NOW)
    error = info.value
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.reason == reason
    assert error.status == status
    assert error.code == code
    if cls is RateLimited:
        assert error.retry_after == retry_after


@pytest.mark.parametrize("status", [200, 201, 202])
def test_2xx_is_accepted(status):
    accepted = classify_response(status, ACCEPTED_BODY, {})
    assert accepted == Accepted("acc27bb5-1", "c-1", "2024-09-04T06:42:16.520-04:00")


def test_calls_endpoint_answer_with_session_id_is_accepted():
    accepted = classify_response(202, b'{"sessionId": "s-1", "status": "QUEUED"}', {})
    assert accepted == Accepted("s-1", "", None)


def test_error_message_carries_the_provider_text_and_code():
    with pytest.raises(Rejected) as info:
        classify_response(400, err("7004", "Invalid parameter -  : contentType"), {})
    assert str(info.value) == "rejected HTTP 400 code 7004: Invalid parameter -  : contentType"


def test_error_message_is_short_single_line_and_redacted():
    body = ("line one\nsecret-key " + "x" * 1000).encode()
    with pytest.raises(Unavailable) as info:
        classify_response(502, body, {}, redact=["secret-key"])
    text = str(info.value)
    assert "secret-key" not in text
    assert "\n" not in text
    assert len(text) < 260


def test_error_message_never_contains_headers():
    headers = {"Retry-After": "1", "Set-Cookie": "session=abc"}
    with pytest.raises(RateLimited) as info:
        classify_response(429, err("7020", "Transaction limit reached."), headers)
    assert "session=abc" not in str(info.value)
    assert "session=abc" not in repr(info.value)
    assert str(info.value) == "rate_limited HTTP 429 code 7020: Transaction limit reached. (retry after 1s)"


def test_network_error_is_retryable():
    error = NetworkError("messages: timed out after 10s", timeout=True)
    assert error.retryable and error.reason == "network" and error.timeout
    assert error.status is None and error.code is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 3 ", 3.0),
        ("nan", None),
        ("inf", None),
        ("Sun, 01 Mar 2026 12:01:00 GMT", 60.0),
        ("Sunday, 01-Mar-26 12:01:00 GMT", 60.0),
        ("not a date", None),
    ],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_retry_after_seconds_roundtrip(seconds):
    assert parse_retry_after(str(seconds)) == float(seconds)


@given(st.integers(min_value=100, max_value=599), st.binary(max_size=300), st.dictionaries(st.text(), st.text()))
def test_classify_response_only_ever_returns_accepted_or_raises_a_provider_error(status, body, headers):
    try:
        result = classify_response(status, body, headers, now=NOW)
    except ProviderError as error:
        assert error.reason in {"rejected", "auth", "rate_limited", "unavailable"}
    else:
        assert 200 <= status < 300
        assert isinstance(result, Accepted) and result.message_id


# --- call status --------------------------------------------------------------------------------------


def test_status_200_is_parsed_and_normalised():
    body = {
        "durationSeconds": 21,
        "statusTime": "2025-01-28T19:37:09.875+05:30",
        "offeredTime": "2025-01-28T19:36:49.739+05:30",
        "answeredTime": "2025-01-28T19:37:09.875+05:30",
        "status": "ANSWERED",
    }
    status = classify_status_response(200, json.dumps(body).encode(), {})
    assert status == CallStatus("ANSWERED", 21, "2025-01-28T19:37:09.875+05:30", body)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Message Expired", "MESSAGE_EXPIRED"),
        ("Trombone Connected", "TROMBONE_CONNECTED"),
        ("answered", "ANSWERED"),
        (" Rejected ", "REJECTED"),
        ("MESSAGE EXPIRED", "MESSAGE_EXPIRED"),
    ],
)
def test_status_values_are_normalised(raw, normalised):
    assert normalize_status(raw) == normalised
    body = json.dumps({"status": raw, "durationSeconds": None, "answeredTime": None}).encode()
    status = classify_status_response(200, body, {})
    assert status is not None
    assert status.status == normalised and status.duration_seconds is None and status.answered_time is None


def test_status_404_is_none():
    assert classify_status_response(404, b"", {}) is None


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (403, err("7001"), AuthFailed),
        (500, b"", Unavailable),
        (429, b"", RateLimited),
        (200, b"{}", Unavailable),
    ],
)
def test_status_errors(status, body, cls):
    with pytest.raises(cls):
        classify_status_response(status, body, {})


# --- request bodies -------------------------------------------------------------------------------------


def request(audio, **kwargs) -> CallRequest:
    return CallRequest(
        caller_id="+15550001234",
        dialed_number="+14155550101",
        audio=audio,
        correlation_id="p-3f2a-1",
        callback_url="https://a2v.example.com/callbacks/webex",
        **kwargs,
    )


def test_message_body_tts():
    body = request(TtsAudio("<speak>Disk full</speak>"), callback_auth_id="TNPXXXT09U").message_body()
    assert json.dumps(body) == json.dumps(
        {
            "callerId": "+15550001234",
            "dialedNumber": "+14155550101",
            "audio": {
                "type": "TTS",
                "style": "NEURAL",
                "language": "en-US",
                "voice": "AriaNeural",
                "gender": "FEMALE",
                "engine": "AZURE",
                "textFormat": "SSML",
                "text": "<speak>Disk full</speak>",
            },
            "correlationId": "p-3f2a-1",
            "callbackUrl": "https://a2v.example.com/callbacks/webex",
            "callbackUrlAuthId": "TNPXXXT09U",
        }
    )


def test_message_body_tts_overrides():
    audio = TtsAudio("Disk full", language="en-GB", voice="RyanNeural", gender="MALE", text_format="TEXT")
    assert request(audio).message_body()["audio"] == {
        "type": "TTS",
        "style": "NEURAL",
        "language": "en-GB",
        "voice": "RyanNeural",
        "gender": "MALE",
        "engine": "AZURE",
        "textFormat": "TEXT",
        "text": "Disk full",
    }


def test_message_body_url_without_auth_id():
    assert request(UrlAudio("https://example.com/major-incident.wav")).message_body() == {
        "callerId": "+15550001234",
        "dialedNumber": "+14155550101",
        "audio": {"type": "URL", "location": "https://example.com/major-incident.wav"},
        "correlationId": "p-3f2a-1",
        "callbackUrl": "https://a2v.example.com/callbacks/webex",
    }


def test_message_body_media():
    assert request(MediaAudio("m-42")).message_body()["audio"] == {"type": "MEDIA", "mediaId": "m-42"}


def test_call_body():
    assert request(MediaAudio("m-42"), callback_auth_id="TNPXXXT09U").call_body() == {
        "callerId": "+15550001234",
        "dialedNumber": "+14155550101",
        "recordCallSeconds": 0,
        "detectVoiceMail": True,
        "correlationId": "p-3f2a-1",
        "callbackUrl": "https://a2v.example.com/callbacks/webex",
        "callbackUrlAuthId": "TNPXXXT09U",
    }


def test_idempotency_key_defaults_to_the_correlation_id():
    assert request(MediaAudio("m")).effective_idempotency_key == "p-3f2a-1"
    assert request(MediaAudio("m"), idempotency_key="k-1").effective_idempotency_key == "k-1"
