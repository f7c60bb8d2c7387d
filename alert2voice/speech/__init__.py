"""What a call says: Jinja templates rendered to SSML (or plain text), speakable filters, a length budget.

The template language, its variables and filters are documented in docs/templates.md. The rooms: render
(templates to text within speech.max_chars, with fallbacks), variables (what a template sees), filters (the
speakable filters), ssml (checking and completing SSML), samples (the alerts `check-config` renders).
"""

from .filters import FILTERS, duration, instance, ip, key, nourls, number, since, span, speakable, spoken, words
from .render import Speech, Spoken, TemplateError
from .samples import sample_contexts, sample_payload
from .ssml import ALLOWED_ELEMENTS, SSML_NAMESPACE, ssml_document
from .variables import AlertView, SpeechContext

__all__ = [
    "ALLOWED_ELEMENTS",
    "FILTERS",
    "SSML_NAMESPACE",
    "AlertView",
    "Speech",
    "SpeechContext",
    "Spoken",
    "TemplateError",
    "duration",
    "instance",
    "ip",
    "key",
    "nourls",
    "number",
    "sample_contexts",
    "sample_payload",
    "since",
    "span",
    "speakable",
    "spoken",
    "ssml_document",
    "words",
]
