"""The calls a payload would cause now, and what each would say (the render command and /-/render)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import tempfile
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
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


async def speak_wav(espeak: str, ssml: str) -> bytes:
    """The SSML (or plain text) spoken locally by espeak-ng, as WAV; RuntimeError saying why it failed.

    Cancelled (a timeout around it), espeak-ng is killed and reaped: nothing outlives the request.
    """
    with tempfile.TemporaryDirectory(prefix="alert2voice-speak-") as tmp:
        source, out = Path(tmp, "call.ssml"), Path(tmp, "call.wav")
        await asyncio.to_thread(source.write_text, ssml, encoding="utf-8")
        process = await asyncio.create_subprocess_exec(espeak, "-m", "-f", source, "-w", out,
                                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, stderr = await process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"espeak-ng failed: {stderr.decode(errors='replace').strip()}")
        return await asyncio.to_thread(out.read_bytes)


class Previews:
    """The status page's WAV previews: each call's speech spoken once (cached by page, attempt and the text's
    hash, up to `max_bytes` of WAV, least recently played dropped first), `concurrency` espeak-ng at a time,
    and none for longer than `timeout` seconds, the wait for a turn included (TimeoutError)."""

    def __init__(self, *, concurrency: int = 2, timeout: float = 10.0, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.timeout, self.max_bytes = timeout, max_bytes
        self._turns = asyncio.Semaphore(concurrency)
        self._cache: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._bytes = 0

    async def wav(self, espeak: str, page_key: str, attempt: int, text: str) -> bytes:
        key = (page_key, attempt, hashlib.sha256(text.encode()).hexdigest())
        if (cached := self._cached(key)) is not None:
            return cached
        async with asyncio.timeout(self.timeout), self._turns:
            if (cached := self._cached(key)) is not None:  # spoken while this request waited its turn
                return cached
            wav = await speak_wav(espeak, text)
            self._keep(key, wav)
        return wav

    def _cached(self, key: tuple[str, int, str]) -> bytes | None:
        wav = self._cache.get(key)
        if wav is not None:
            self._cache.move_to_end(key)
        return wav

    def _keep(self, key: tuple[str, int, str], wav: bytes) -> None:
        if len(wav) > self.max_bytes or key in self._cache:
            return
        self._cache[key] = wav
        self._bytes += len(wav)
        while self._bytes > self.max_bytes:
            self._bytes -= len(self._cache.popitem(last=False)[1])
