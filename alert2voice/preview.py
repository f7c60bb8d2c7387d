"""The calls a payload would cause now, and what each would say (the render command and /-/render)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from datetime import datetime
from typing import Any

from . import interactive
from .alertmanager import Payload
from .config import Config
from .logs import mask_number
from .pages import new_nonce
from .routing import correlation_id, first_callable, plan
from .speech import Speech, SpeechContext


def render_calls(config: Config, speech: Speech, payload: Payload, now: datetime) -> list[dict[str, Any]]:
    """For each call the payload would cause now: route, contact, correlationId and SSML."""
    out = []
    for planned in plan(config, payload).pages:
        if not planned.firing:
            continue
        target = first_callable(config, planned.route, now, planned.severities)
        entry: dict[str, Any] = {"route": planned.route.name, "page_key": planned.key,
                                 "correlation_id": correlation_id(planned.key, new_nonce(), 1)}
        if target is None:
            entry.update(contact=None, reason="nobody callable now (no escalation, quiet hours or nobody on call)")
            out.append(entry)
            continue
        name = planned.route.template_for(config.templates, "firing")
        contact = config.contacts[target.contact] if target.contact else None
        voice = config.speech.for_contact(contact.speech if contact else None)
        keys = interactive.speech_keys(config, config.provider.mode == "interactive")
        ssml = speech.render(name, SpeechContext(payload=payload, alerts=list(planned.firing),
                                                 route=planned.route.name, contact=target.contact or "", now=now,
                                                 language=voice.language, **keys))
        entry.update(contact=target.contact, number=mask_number(target.number), reason=target.reason,
                     text_format=speech.text_format(name), ssml=ssml)
        out.append(entry)
    return out


def speak_wav(espeak: str, ssml: str) -> bytes:
    """The SSML (or plain text) spoken locally by espeak-ng, as WAV; RuntimeError saying why it failed."""
    with tempfile.TemporaryDirectory(prefix="alert2voice-speak-") as tmp:
        source, out = os.path.join(tmp, "call.ssml"), os.path.join(tmp, "call.wav")
        with open(source, "w", encoding="utf-8") as f:
            f.write(ssml)
        try:
            subprocess.run([espeak, "-m", "-f", source, "-w", out], check=True, capture_output=True)  # noqa: S603
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"espeak-ng failed: {exc.stderr.decode(errors='replace').strip()}") from None
        with open(out, "rb") as f:
            return f.read()
