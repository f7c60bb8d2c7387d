"""What a call says: the recording or the rendered speech, the provider request, and interactive replies."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .. import interactive
from ..alertmanager import Alert, Payload
from ..config import Config, SpeechConfig
from ..pages import Call, CallState, Page, route_of
from ..provider import Audio, CallRequest, MediaAudio, TtsAudio, UrlAudio
from ..provider.base import audio_from_json
from ..speech import SpeechContext, ssml_document
from .context import Context

# CallRequest needs audio, but POST /v1/voice/calls sends none.
_UNSPOKEN = TtsAudio(text="")


def payload_of(page: Page, extra: Sequence[Page] = (), alerts: Sequence[Alert] | None = None) -> Payload:
    """The webhook group a page (and the pages folded with it) came from, for the templates. `alerts`: the page's,
    validated already (a new page's, as its webhook carried them), so not validated again from what it stores."""
    g = page.group
    own = list(alerts) if alerts is not None else [Alert.model_validate(a) for a in page.alerts]
    return Payload(version="4", receiver=g.get("receiver", ""), status="firing",
                   alerts=[*own, *(Alert.model_validate(a) for p in extra for a in p.alerts)],
                   groupLabels=g.get("groupLabels", {}),
                   commonLabels=g.get("commonLabels", {}), commonAnnotations=g.get("commonAnnotations", {}),
                   externalURL=g.get("externalURL", ""), groupKey=page.group_key,
                   truncatedAlerts=g.get("truncatedAlerts", 0))


def voice(cfg: Config, contact: str) -> SpeechConfig:
    """The speech settings for the contact being called."""
    settings = cfg.contacts.get(contact)
    return cfg.speech.for_contact(settings.speech if settings else None)


def tts(cfg: Config, contact: str, text: str, text_format: str = "SSML") -> TtsAudio:
    """Text to speak, in the contact's language and voice."""
    said = voice(cfg, contact)
    return TtsAudio(text=text, language=said.language, voice=said.voice, gender=said.gender, text_format=text_format)


def sentence(cfg: Config, contact: str, text: str) -> TtsAudio:
    """One plain sentence (the menu, the thank-you, a test call) as an SSML document in the contact's voice."""
    return tts(cfg, contact, ssml_document(text, voice(cfg, contact).language))


def call_request(cfg: Config, call: Call, audio: Audio) -> CallRequest:
    """The provider request of an attempt saying `audio`: the dispatcher's calls and `alert2voice test-call`."""
    return CallRequest(
        caller_id=cfg.provider.caller_id,
        dialed_number=call.number,
        audio=audio,
        correlation_id=call.correlation_id,
        callback_url=cfg.server.public_url + "/callbacks/webex",
        callback_auth_id=cfg.provider.callback.auth_id,
        idempotency_key=call.idempotency_key,
    )


class Speaker:
    """Turns a page and one of its calls into audio, a provider request, or the reply to a call event."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def audio_for(self, page: Page, call: Call, cfg: Config, now: datetime, extra: Sequence[Page] = (),
                  alerts: Sequence[Alert] | None = None) -> list[Audio]:
        """What a call says: the recording, else the speech; interactive: both, the speech ending with the prompt.
        `alerts`: the page's alerts validated already (payload_of)."""
        # `extra` pages (a storm summary) add their alerts to what is said.
        route = route_of(cfg, page)
        recording: Audio | None = None
        if route is not None and route.audio is not None and call.kind == "page" and not extra:
            a = route.audio
            recording = UrlAudio(a.location or "") if a.type == "URL" else MediaAudio(a.mediaId or "")
            if not call.interactive:
                return [recording]
        speech = self.ctx.speech()
        status = "resolved" if call.kind == "resolved" else "firing"
        if route is not None:
            name = route.template_for(cfg.templates, status)
        else:
            name = cfg.templates.resolved if status == "resolved" else cfg.templates.firing
        keys = interactive.speech_keys(cfg, call.interactive)
        payload = payload_of(page, extra, alerts)
        # The page stores only the alerts it paged for (its firing ones), so they are what is spoken.
        spoken = speech.speak(name, SpeechContext(payload=payload, alerts=payload.alerts, route=page.route,
                                                  contact=call.contact, now=now, status=status,
                                                  language=voice(cfg, call.contact).language, **keys))
        if spoken.error is not None:
            # The call goes out all the same: a template's mistake must not keep anyone from being called.
            self.ctx.metrics.template_errors.labels(page.route).inc()
            self.ctx.log(page, call, f"template failed; {spoken.fallback} is spoken instead", logging.WARNING,
                         template=name, error=str(spoken.error))
        audio = [tts(cfg, call.contact, spoken.text, spoken.text_format)]
        if keys["menu"] is not None and not spoken.asks_ack:
            # A template that does not say the menu itself: it follows as a sentence of its own.
            audio.append(sentence(cfg, call.contact, keys["menu"]))
        return [recording, *audio] if recording is not None else audio

    def freeze(self, page: Page, call: Call, cfg: Config, extra: Sequence[Page] = (),
               alerts: Sequence[Alert] | None = None) -> None:
        """Build the attempt's whole request once, as of its creation, and keep it on the call (SPEC §5).

        Every try sends these bytes: the speech is rendered at `call.created_at`, never at a retry's `now`, so a
        retry after a lost answer carries the same Idempotency-Key and the same body, and a reload or a template
        change between tries changes nothing already frozen. `extra` pages (a storm summary) are spoken too;
        `alerts`: the page's, validated already (payload_of).
        """
        # Resolved notices (and test calls) stay play-and-hang-up: there is nothing to acknowledge.
        call.interactive = cfg.provider.mode == "interactive" and call.kind == "page"
        spoken = self.audio_for(page, call, cfg, call.created_at, extra, alerts)
        # POST /v1/voice/calls carries no audio: interactive calls are spoken when answered (see reply()).
        call.request = call_request(cfg, call, _UNSPOKEN if call.interactive else spoken[0]).to_dict()
        if call.interactive:
            call.request["say"] = [a.to_json() for a in spoken]

    def freeze_new(self, page: Page, cfg: Config) -> None:
        """Freeze every attempt of the page created since it was read (queued, with no request yet)."""
        for call in page.calls:
            if call.request is None and call.state is CallState.QUEUED:
                self.freeze(page, call, cfg)

    def request_of(self, page: Page, call: Call, cfg: Config) -> CallRequest:
        """The attempt's frozen request (frozen now if an older version of us queued it without one)."""
        if call.request is None:
            self.freeze(page, call, cfg)
        assert call.request is not None
        return CallRequest.from_dict(call.request)

    def said(self, page: Page, call: Call, cfg: Config, extra: Sequence[Page] = ()) -> list[Audio]:
        """What the call says, as frozen with its request (rendered as of its creation, with the `extra` pages
        of a storm summary, for a record older than frozen requests)."""
        frozen = call.request or {}
        if "say" in frozen:
            return [audio_from_json(a) for a in frozen["say"]]
        if "audio" in frozen and not call.interactive:
            return [audio_from_json(frozen["audio"])]
        return self.audio_for(page, call, cfg, call.created_at, extra)

    async def reply(self, page: Page, call: Call, step: interactive.Step, cfg: Config,
                    now: datetime) -> dict[str, Any]:
        """The action answering an interactive call's event: the message and menu, the menu alone, the thank-you,
        the word that the page goes on, or hang up."""
        if step.reply == "prompt":
            call.prompts += 1
            extra: list[Page] = []
            if "say" not in (call.request or {}):  # queued by an older version of us, before attempts were frozen
                store = self.ctx.store
                extra = [p for k in call.storm if k != page.key and (p := await store.get(k)) is not None]
            return interactive.prompt_action(self.said(page, call, cfg, extra), cfg.acknowledgement)
        if step.reply == "menu":
            menu = sentence(cfg, call.contact, interactive.prompt_text(cfg.acknowledgement))
            return interactive.prompt_action([menu], cfg.acknowledgement)
        if step.reply in ("thanks", "passed"):
            said = interactive.THANKS if step.reply == "thanks" else interactive.PASSED_ON
            return interactive.play_action([sentence(cfg, call.contact, said)])
        return interactive.CONTINUE if step.reply == "continue" else interactive.HANGUP
