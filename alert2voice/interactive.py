"""Interactive mode (SPEC §5): the action that answers each event of a programmable call, and what it decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .callbacks import Event
from .pages import Call, CallState, Page
from .provider import Audio

# The message and its prompt are played at most twice: on answer, and once more after a miss.
PROMPT_PLAYS = 2
DIGIT_TIMEOUT = 8
NOT_ACKNOWLEDGED = "answered but not acknowledged"
THANKS = "Acknowledged. Thank you."
HANGUP: dict[str, Any] = {"action": "HANGUP"}
# An answer without an action: the platform goes on with the current one (the simulator treats it so).
CONTINUE: dict[str, Any] = {}

Reply = Literal["prompt", "thanks", "hangup", "continue"]


@dataclass(frozen=True)
class Step:
    """What an event does to its call: the reply to send, and the call's final outcome when it ends now."""

    reply: Reply
    outcome: CallState | None = None
    error: str | None = None


@dataclass(frozen=True)
class Answer:
    """A call event handled: the callbacks_total result, the action to answer with, the pages it acknowledged."""

    result: str  # ok | stale | unknown
    action: dict[str, Any]
    acknowledged: Sequence[Page] = field(default_factory=tuple)
    contact: str = ""


def decide(call: Call, event: Event, digit: str) -> Step:
    """The next step of an open interactive call after `event` (the caller records it and counts the prompts)."""
    name = event.event
    if name == "answered":
        return Step("prompt")
    if name == "collected_digits" and event.digits == digit and call.prompts > 0:
        # Only a key pressed in answer to our prompt acknowledges: digits before it was played prove nothing.
        return Step("thanks", CallState.ACKNOWLEDGED)
    # What fires when nobody presses before digitTimeout is unconfirmed (reference §5): handle both.
    if name in ("collected_digits", "played"):
        if call.prompts < PROMPT_PLAYS:
            return Step("prompt")
        # SPEC §5: in interactive mode only the acknowledgement ends the escalation, so a human who
        # heard the message twice without pressing the digit counts as not reached.
        return Step("hangup", CallState.NO_ANSWER, NOT_ACKNOWLEDGED)
    if name in ("vmdetected", "dropped") and event.outcome is not None:
        answered = call.prompts > 0 and event.outcome is CallState.NO_ANSWER
        return Step("hangup", event.outcome, NOT_ACKNOWLEDGED if answered else None)
    return Step("continue")


def spoken_digit(digit: str) -> str:
    """The key as said on the phone: "1", "star", "pound"."""
    return {"*": "star", "#": "pound"}.get(digit, digit)


def prompt_text(digit: str) -> str:
    """The acknowledgement prompt, for templates that do not say it themselves."""
    return f"Press {spoken_digit(digit)} to acknowledge."


def prompt_action(audio: Sequence[Audio], digit: str) -> dict[str, Any]:
    """PLAY the message and collect one digit (current docs nest the settings under collectInput)."""
    # With maxDigits 1 the termination key only ends input early; it must not be the acknowledgement key.
    return {"action": "PLAY", "audio": [a.to_json() for a in audio],
            "collectInput": {"maxDigits": 1, "digitTimeout": DIGIT_TIMEOUT,
                             "terminationDigit": "*" if digit == "#" else "#"}}


def play_action(audio: Sequence[Audio]) -> dict[str, Any]:
    """PLAY without collecting input; the platform answers with PLAYED."""
    return {"action": "PLAY", "audio": [a.to_json() for a in audio]}
