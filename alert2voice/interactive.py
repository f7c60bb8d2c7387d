"""Interactive mode (SPEC §5): the action that answers each event of a programmable call, and what it decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .callbacks import Event
from .config import AcknowledgementConfig, Config
from .pages import Call, CallState, Page
from .provider import Audio
from .speech import key

# A miss (no key before the timeout, or a key not in the menu) plays the menu once more; the next one hangs up.
MISSES_ALLOWED = 1
# The repeat key replays the message and menu; this many plays in all, so a stuck key cannot hold the line.
MAX_PLAYS = 5
DIGIT_TIMEOUT = 8
NOT_ACKNOWLEDGED = "answered but not acknowledged"
THANKS = "Acknowledged. Thank you."
PASSED_ON = "Passing this on to the next person. Goodbye."
HANGUP: dict[str, Any] = {"action": "HANGUP"}
# An answer without an action: the platform goes on with the current one (the simulator treats it so).
CONTINUE: dict[str, Any] = {}

# prompt: the message and the menu; menu: the menu alone (after a key not in it); passed: the page goes on.
Reply = Literal["prompt", "menu", "thanks", "passed", "hangup", "continue"]


@dataclass(frozen=True)
class Step:
    """What an event does to its call: the reply to send, and the call's final outcome when it ends now.

    `miss`: the event counts against MISSES_ALLOWED; `reply == "passed"`: the page is escalated (the call
    given up, the next step due now) by whoever was called.
    """

    reply: Reply
    outcome: CallState | None = None
    error: str | None = None
    miss: bool = False


@dataclass(frozen=True)
class Answer:
    """A call event handled: the callbacks_total result, the action to answer with, the pages it acknowledged."""

    result: str  # ok | stale | unknown
    action: dict[str, Any]
    acknowledged: Sequence[Page] = field(default_factory=tuple)
    contact: str = ""


def decide(call: Call, event: Event, keys: AcknowledgementConfig) -> Step:
    """The next step of an open interactive call after `event` (the caller records it, counts prompts and misses)."""
    name = event.event
    if name == "answered":
        return Step("prompt")
    if name == "collected_digits" and call.prompts == 0:
        # Only a key pressed in answer to our menu counts: digits before it was played prove nothing.
        return Step("prompt")
    if name == "collected_digits" and event.digits:
        if event.digits == keys.digit:
            return Step("thanks", CallState.ACKNOWLEDGED)
        if event.digits == keys.escalate_digit:
            return Step("passed")
        if event.digits == keys.repeat_digit and call.prompts < MAX_PLAYS:
            return Step("prompt")
        return _missed(call, "menu")
    # What fires when nobody presses before digitTimeout is unconfirmed (reference §5): handle both.
    if name in ("collected_digits", "played"):
        return _missed(call, "prompt")
    if name in ("vmdetected", "dropped") and event.outcome is not None:
        answered = call.prompts > 0 and event.outcome is CallState.NO_ANSWER
        return Step("hangup", event.outcome, NOT_ACKNOWLEDGED if answered else None)
    return Step("continue")


def _missed(call: Call, again: Reply) -> Step:
    """No key, or a key not in the menu: `again` once, then the call ends not reached."""
    if call.misses < MISSES_ALLOWED:
        return Step(again, miss=True)
    # SPEC §5: in interactive mode only the acknowledgement ends the escalation, so a human who heard the
    # menu twice without pressing a key of it counts as not reached.
    return Step("hangup", CallState.NO_ANSWER, NOT_ACKNOWLEDGED, miss=True)


def prompt_text(keys: AcknowledgementConfig) -> str:
    """The menu, said once wherever it is said: "Press 1 to acknowledge, 5 to pass to the next person, star to
    repeat." The built-in templates say it as `{{ menu }}`; after a template that does not, it follows. Each key is
    said as the `key` filter says it, which a template saying `{{ ack_digit|key }}` uses too."""
    said = [f"{key(keys.digit)} to acknowledge"]
    if keys.escalate_digit is not None:
        said.append(f"{key(keys.escalate_digit)} to pass to the next person")
    if keys.repeat_digit is not None:
        said.append(f"{key(keys.repeat_digit)} to repeat")
    return f"Press {', '.join(said)}."


def speech_keys(cfg: Config, interactive: bool) -> dict[str, str | None]:
    """The SpeechContext fields of a call's menu: `ack_digit` and `menu`, None both unless it is interactive."""
    if not interactive:
        return {"ack_digit": None, "menu": None}
    return {"ack_digit": cfg.acknowledgement.digit, "menu": prompt_text(cfg.acknowledgement)}


def prompt_action(audio: Sequence[Audio], keys: AcknowledgementConfig) -> dict[str, Any]:
    """PLAY the message and collect one digit (current docs nest the settings under collectInput)."""
    # With maxDigits 1 the termination key only ends input early; it must not be a key of the menu.
    menu = {keys.digit, keys.escalate_digit, keys.repeat_digit}
    termination = next(k for k in "#*0123456789" if k not in menu)
    return {"action": "PLAY", "audio": [a.to_json() for a in audio],
            "collectInput": {"maxDigits": 1, "digitTimeout": DIGIT_TIMEOUT, "terminationDigit": termination}}


def play_action(audio: Sequence[Audio]) -> dict[str, Any]:
    """PLAY without collecting input; the platform answers with PLAYED."""
    return {"action": "PLAY", "audio": [a.to_json() for a in audio]}
