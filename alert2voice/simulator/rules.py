"""The simulator's contract tables: request validation, error bodies, receipt sequences and call events."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from xml.parsers import expat

from aiohttp import web
from yarl import URL

E164 = re.compile(r"\+[1-9]\d{6,14}")
CORRELATION_ID = re.compile(r"[A-Za-z0-9-]{1,50}")
# Reference §2: no v1 limit is documented; v2 allows 2000 characters, the flow builder 6000 of SSML.
TEXT_LIMITS = {"TEXT": 2000, "SSML": 6000}
AUDIO_TYPES = ("TTS", "URL", "MEDIA")
# Reference §2: an invalid value of these is not an error; the platform falls back to these values.
TTS_DEFAULTS = {
    "style": "NEURAL",
    "language": "en-US",
    "voice": "AriaNeural",
    "gender": "FEMALE",
    "engine": "AZURE",
}
LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Z][a-z]{3})?-[A-Z]{2}")
# Voices are short names without the locale: "AriaNeural", not "en-US-AriaNeural".
VOICE = re.compile(r"[A-Z][A-Za-z]*Neural")
_TTS_VALID = {
    "style": lambda v: v == "NEURAL",
    "engine": lambda v: v == "AZURE",
    "gender": lambda v: v in ("MALE", "FEMALE"),
    "language": lambda v: LANGUAGE.fullmatch(v) is not None,
    "voice": lambda v: VOICE.fullmatch(v) is not None,
}

# Messages of codes the reference gives no text for are the simulator's wording.
MESSAGES = {
    "7000": "Invalid JSON.",
    "7001": "Authentication failed.",
    "7002": "Service key missing.",
    "7004": "Invalid parameter.",
    "7006": "Internal error.",
    "7016": "Unknown exception.",
    "7020": "Transaction limit reached.",
    "7022": "JSON size exceeded.",
    "7101": "Invalid sender id.",
    "7102": "Invalid destination.",
    "7107": "Message length exceeded.",
    "7126": "Invalid content type.",
    "7127": "Source IP not allowed.",
}

OUTCOMES = ("answer", "no_answer", "busy", "hangup_ringing", "hangup_playing", "voicemail", "press", "failed")

# Reference §4 receipts: (deliveryStatus, code, Description). "Released" and "Failed" are mixed case
# as documented; REJECTED carries 7402 for busy and 7401 for no answer.
OFFERED = ("OFFERED", "7407", "Call offered")
ACCEPTED = ("ACCEPTED", "7408", "Call accepted")
ANSWERED = ("ANSWERED", "7519", "Call answered")
DROPPED = ("DROPPED", "7409", "Call dropped")
RELEASED = ("Released", "7405", "Call released")
DISCONNECTED = ("DISCONNECTED", "7410", "Call disconnected")
REJECTED_BUSY = ("REJECTED", "7402", "Call rejected - busy")
REJECTED_NO_ANSWER = ("REJECTED", "7401", "Call rejected - no answer")
FAILED = ("Failed", "7005", "Request expired")

# Each inner list is one instant: its receipts share a timestamp (reference §4 "bracketed events").
SEQUENCES: dict[str, list[list[tuple[str, str, str]]]] = {
    "answer": [[OFFERED], [ACCEPTED], [ANSWERED], [DROPPED, RELEASED]],
    "hangup_playing": [[OFFERED], [ACCEPTED], [ANSWERED], [RELEASED, DISCONNECTED, DROPPED]],
    "busy": [[OFFERED], [ACCEPTED], [DROPPED, REJECTED_BUSY]],
    "no_answer": [[OFFERED], [ACCEPTED], [DROPPED, REJECTED_NO_ANSWER]],
    "hangup_ringing": [[OFFERED], [ACCEPTED], [DISCONNECTED, DROPPED, REJECTED_BUSY]],
    "failed": [[FAILED]],
}
# Message mode neither detects answering machines nor collects digits: both are plain answers.
SEQUENCES["voicemail"] = SEQUENCES["answer"]
SEQUENCES["press"] = SEQUENCES["answer"]

# Known platform bug (reference §4): these receipts lack callbackData and correlationid.
LACKS_CORRELATION = frozenset({"DISCONNECTED", "TROMBONE_CONNECTED", "TROMBONE_RELEASED"})

# Status of GET /calls/{id} after a receipt; receipts not listed leave it unchanged.
STATUS_AFTER = {
    "OFFERED": "OFFERED",
    "ANSWERED": "ANSWERED",
    "REJECTED": "REJECTED",
    "Failed": "MESSAGE EXPIRED",
}

# Programmable calls that are never answered end with one DROPPED event: (droppedBy, logbook code, text).
NOT_ANSWERED = {
    "no_answer": ("NETWORK", "2002", "No answer"),
    "busy": ("CALLEE", "2003", "Subscriber busy"),
    "hangup_ringing": ("CALLEE", "1002", "Call rejected"),
    "failed": ("NETWORK", "3002", "No response from network"),
}
ACTIONS = ("PLAY", "HANGUP", "REJECT", "ANSWER", "RECORD", "PATCH")


class ApiError(Exception):
    """A provider error response: HTTP status and the {"code", "message"} body."""

    def __init__(
        self, status: int, code: str, message: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message or MESSAGES.get(code, "Error.")
        self.headers = dict(headers or {})
        super().__init__(f"{status} {code} {self.message}")

    def response(self) -> web.Response:
        """Return the JSON error response."""
        return web.json_response({"code": self.code, "message": self.message}, status=self.status, headers=self.headers)


def missing(name: str) -> ApiError:
    """Return the 7003 error naming a missing mandatory parameter."""
    return ApiError(400, "7003", f"Mandatory parameter missing - : {name}")


def invalid(name: str) -> ApiError:
    """Return the 7004 error naming an invalid parameter (two spaces, as the docs show it)."""
    return ApiError(400, "7004", f"Invalid parameter -  : {name}")


def validate_message(body: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Validate a POST /messages body; return the effective audio and the TTS fields that fell back."""
    for name in ("callerId", "dialedNumber", "audio"):
        if _absent(body.get(name)):
            raise missing(name)
    _check_numbers(body)
    audio = body["audio"]
    if not isinstance(audio, dict):
        raise invalid("audio")
    effective, fallbacks = validate_audio(audio, "audio")
    _check_optional(body)
    return effective, fallbacks


def validate_call(body: dict[str, Any]) -> None:
    """Validate a POST /calls body."""
    # The app drives a programmable call through its callbacks, so the simulator requires callbackUrl.
    for name in ("callerId", "dialedNumber", "callbackUrl"):
        if _absent(body.get(name)):
            raise missing(name)
    _check_numbers(body)
    seconds = body.get("recordCallSeconds")
    if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0):
        raise invalid("recordCallSeconds")
    detect = body.get("detectVoiceMail")
    if detect is not None and not isinstance(detect, bool):
        raise invalid("detectVoiceMail")
    _check_optional(body)


def validate_audio(audio: dict[str, Any], prefix: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Validate one audio object; return it with fallbacks applied and the names of fields that fell back."""
    kind = audio.get("type")
    if _absent(kind):
        raise missing(f"{prefix}.type")
    if kind not in AUDIO_TYPES:
        raise invalid(f"{prefix}.type")
    if kind == "URL":
        location = _string(audio, "location", prefix)
        if not is_http_url(location):
            raise invalid(f"{prefix}.location")
        return {"type": "URL", "location": location}, ()
    if kind == "MEDIA":
        return {"type": "MEDIA", "mediaId": _string(audio, "mediaId", prefix)}, ()
    text = _string(audio, "text", prefix)
    text_format = audio.get("textFormat", "TEXT")
    if not isinstance(text_format, str) or text_format not in TEXT_LIMITS:
        raise invalid(f"{prefix}.textFormat")
    if len(text) > TEXT_LIMITS[text_format]:
        raise ApiError(400, "7107")
    if text_format == "SSML" and not is_ssml_document(text):
        raise invalid(f"{prefix}.text")
    effective: dict[str, Any] = {"type": "TTS"}
    fallbacks = []
    for name, default in TTS_DEFAULTS.items():
        value = audio.get(name, default)
        if not isinstance(value, str) or not _TTS_VALID[name](value):
            fallbacks.append(name)
            value = default
        effective[name] = value
    effective.update(textFormat=text_format, text=text)
    # A tuple: calls keep it, and the usual empty one is shared.
    return effective, tuple(fallbacks)


def validate_action(status: int, raw: bytes) -> dict[str, Any]:
    """Validate the app's answer to a programmable-call event; raise ValueError saying what is wrong."""
    if status != 200:
        raise ValueError(f"callback answered HTTP {status}, expected 200")
    try:
        action = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("callback response is not JSON") from None
    if not isinstance(action, dict) or action.get("action") not in ACTIONS:
        raise ValueError(f"callback response has no valid action (one of {', '.join(ACTIONS)})")
    if action["action"] == "PLAY":
        audio = action.get("audio")
        if not isinstance(audio, list) or not audio:
            raise ValueError("PLAY needs a non-empty audio list")
        for i, item in enumerate(audio):
            if not isinstance(item, dict):
                raise ValueError(f"audio[{i}] is not an object")
            try:
                validate_audio(item, f"audio[{i}]")
            except ApiError as err:
                raise ValueError(err.message) from None
        collect = collect_spec(action)
        if collect is not None:
            digits = collect.get("maxDigits")
            if not isinstance(digits, int) or isinstance(digits, bool) or digits < 1:
                raise ValueError("collectInput.maxDigits must be a positive integer")
    return action


def collect_spec(action: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the digit-collection settings of a PLAY action, nested (docs) or top-level (2021 SDKs)."""
    nested = action.get("collectInput")
    if isinstance(nested, dict):
        return nested
    if "maxDigits" in action:
        return {k: action[k] for k in ("maxDigits", "digitTimeout", "terminationDigit") if k in action}
    return None


def receipt(
    message_id: str, dialed: str, correlation_id: str, event: tuple[str, str, str], stamp: str
) -> dict[str, Any]:
    """Return one delivery receipt as the platform POSTs it."""
    status, code, description = event
    notification: dict[str, Any] = {
        "deliveryInfo": {
            "timeStamp": stamp,
            "Description": description,
            "code": code,
            "deliveryChannel": "voice",
            "additionalInfo": "",
            "destination": dialed,
            "destinationType": "msisdn",
            "deliveryStatus": status,
        },
        "subtid": "",
        "transid": message_id,
        "callbackData": "",
        "correlationid": correlation_id,
    }
    if status in LACKS_CORRELATION:
        del notification["callbackData"], notification["correlationid"]
    # The content of deliveryTransInfo is not documented beyond "voice release event xml data".
    trans_info = f'<event type="{status}" code="{code}" transid="{message_id}" timeStamp="{stamp}"/>'
    return {"deliveryTransInfo": trans_info, "deliveryInfoNotification": notification}


# Clients send the same callbackUrl with every request: parse each URL once.
@functools.lru_cache(maxsize=256)
def is_http_url(value: str) -> bool:
    """Return whether value is an absolute http(s) URL with a host."""
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def is_ssml_document(text: str) -> bool:
    """Return whether text is well-formed XML whose root element is <speak>."""
    # Upper-casing maps no character to "<" or "!", so text without "<!" needs no closer look.
    if "<!" in text:
        upper = text.upper()
        if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
            return False
    try:
        # Safe: a document without DOCTYPE cannot declare entities, so nothing expands.
        root = _root_element(text)
    except (expat.ExpatError, ValueError):
        return False
    return root.rsplit("}", 1)[-1] == "speak"


def _root_element(text: str) -> str:
    """Parse the whole document (raising ExpatError when it is not well-formed) and return its root's name."""
    # Plain expat, the parser under ElementTree, with the same namespace processing ("uri}speak"), but
    # without building a tree: the handler unhooks itself after the root, so the rest is only checked.
    parser = expat.ParserCreate(namespace_separator="}")
    names: list[str] = []

    def start(name: str, attributes: object) -> None:
        names.append(name)
        parser.StartElementHandler = None

    parser.StartElementHandler = start
    parser.Parse(text, True)
    return names[0]


def stamp_z(seconds: float) -> str:
    """Format a receipt timestamp: 2020-02-05T07:34:23.596Z."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamp_offset(seconds: float) -> str:
    """Format an API timestamp with its offset: 2024-09-04T10:42:16.520+00:00."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _absent(value: object) -> bool:
    return value is None or value == ""


def _string(obj: Mapping[str, Any], name: str, prefix: str) -> str:
    value = obj.get(name)
    if _absent(value):
        raise missing(f"{prefix}.{name}")
    if not isinstance(value, str):
        raise invalid(f"{prefix}.{name}")
    return value


def _check_numbers(body: Mapping[str, Any]) -> None:
    for name in ("callerId", "dialedNumber"):
        if not isinstance(body[name], str):
            raise invalid(name)
    if not E164.fullmatch(body["callerId"]):
        raise ApiError(400, "7101")
    if not E164.fullmatch(body["dialedNumber"]):
        raise ApiError(400, "7102")


def _check_optional(body: Mapping[str, Any]) -> None:
    correlation_id = body.get("correlationId")
    if correlation_id is not None and (
        not isinstance(correlation_id, str) or (correlation_id and not CORRELATION_ID.fullmatch(correlation_id))
    ):
        raise invalid("correlationId")
    callback_url = body.get("callbackUrl")
    if not _absent(callback_url) and (not isinstance(callback_url, str) or not is_http_url(callback_url)):
        raise invalid("callbackUrl")
    auth_id = body.get("callbackUrlAuthId")
    if auth_id is not None and not isinstance(auth_id, str):
        raise invalid("callbackUrlAuthId")
