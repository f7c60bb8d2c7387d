"""SSML as Webex Connect takes it: a plain sentence as a document, the check of a rendered one, and the completion
of a bare `<speak>` (the version, xmlns and xml:lang it leaves out filled in)."""

from __future__ import annotations

import re
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

SSML_NAMESPACE = "http://www.w3.org/2001/10/synthesis"
# The Azure SSML elements Webex Connect documents for TTS (reference/webex-connect-voice-v1.md §2).
ALLOWED_ELEMENTS = frozenset({"speak", "voice", "prosody", "break", "say-as", "sub", "emphasis", "lang", "p", "s"})
# Names as expat gives them with namespace processing (see problem()).
_SSML_NAMES = frozenset(f"{SSML_NAMESPACE}}}{local}" for local in ALLOWED_ELEMENTS)
_XML_LANG = "http://www.w3.org/XML/1998/namespace}lang"

# Characters XML 1.0 forbids even when escaped; a label holding one would make the document unparseable.
XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def ssml_document(text: str, language: str) -> str:
    """A plain sentence as one complete SSML document."""
    text = escape(XML_INVALID.sub("", text))
    return f'<speak version="1.0" xmlns="{SSML_NAMESPACE}" xml:lang={quoteattr(language)}>{text}</speak>'


def completed_speak(document: str, language: str) -> str | None:
    """The document with the version, xmlns and xml:lang its root <speak> lacks filled in; None if it lacks none."""
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        return None
    parser = expat.ParserCreate()  # without namespace processing: the root's attributes as written
    roots: list[tuple[str, dict[str, str], int]] = []
    parser.StartElementHandler = lambda tag, attributes: roots or roots.append(
        (tag, attributes, parser.CurrentByteIndex))
    try:
        parser.Parse(document, True)
    except expat.ExpatError:
        return None
    if not roots or roots[0][0] != "speak":
        return None
    _, attributes, offset = roots[0]
    wanted = (("version", "1.0"), ("xmlns", SSML_NAMESPACE), ("xml:lang", language))
    missing = "".join(f" {key}={quoteattr(value)}" for key, value in wanted if key not in attributes)
    if not missing:
        return None
    at = len(document.encode()[:offset].decode()) + len("<speak")  # expat counts UTF-8 bytes
    return document[:at] + missing + document[at:]


def problem(document: str) -> str | None:
    """What is wrong with a rendered SSML document for Webex Connect, or None."""
    # Only our own output is parsed, and a DOCTYPE (the way to declare entities) is refused first.
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        return "DOCTYPE and entity declarations are not allowed"
    # Expat driven as ElementTree drives it (the same calls, so the same errors), without building a tree.
    # Expat names an element "namespace}local" (ElementTree: "{namespace}local"); setdefault records each name
    # once, in document order, with the attributes of its first element: the root's, for the root.
    elements: dict[str, dict[str, str]] = {}
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartElementHandler = elements.setdefault
    try:
        parser.Parse(document, False)
        parser.Parse("", True)
    except expat.ExpatError as exc:
        return f"output is not well-formed SSML ({exc})"
    root, attributes = next(iter(elements.items()))
    if root != f"{SSML_NAMESPACE}}}speak":
        return f'the document must be one <speak version="1.0" xmlns="{SSML_NAMESPACE}" xml:lang="...">'
    if attributes.get("version") != "1.0" or not attributes.get(_XML_LANG):
        return '<speak> needs version="1.0" and xml:lang'
    for name in elements:
        if name in _SSML_NAMES:  # the common case, first: what the test below allows anyway
            continue
        namespace, _, local = name.rpartition("}")
        if namespace.lstrip("{") != SSML_NAMESPACE or local not in ALLOWED_ELEMENTS:
            allowed = ", ".join(sorted(ALLOWED_ELEMENTS))
            return f"element <{local}> is not allowed in SSML for Webex Connect (allowed: {allowed})"
    return None
