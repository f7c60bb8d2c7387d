"""Rendering: a template to the text of a call, within speech.max_chars (the length budget), with fallbacks.

A render is bounded in work, time and size (alert2voice.sandbox); over a bound it fails like any other error.
render() raises a TemplateError; speak(), which calls use, falls back instead: to the packaged template of the
same kind, then to a fixed sentence naming the alerts, so that a call always goes out. See docs/templates.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import jinja2
import jinja2.meta
from markupsafe import Markup

from .. import sandbox
from ..config import SpeechConfig
from . import ssml
from .filters import FILTERS, words
from .samples import sample_contexts
from .variables import AlertView, SpeechContext, cut, variables

_SPEECH = SpeechConfig.model_fields  # the defaults of max_alerts_spoken and max_chars

# Length budget, tried in order once a single alert spoken is still too long: (annotation cut, label cut).
# Labels are cut last and never below 16 characters, so a severity like "critical" stays whole.
_CUTS: tuple[tuple[int, int | None], ...] = ((200, None), (80, None), (30, None), (10, 40), (10, 16))


class TemplateError(Exception):
    """A template that cannot be rendered; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Spoken:
    """What a call says; when its template failed, why, and what is said instead."""

    text: str
    text_format: Literal["SSML", "TEXT"]
    asks_ack: bool  # the text says the acknowledgement prompt itself
    error: Exception | None = None  # why the template asked for is not what is said
    fallback: str | None = None  # what is said instead: "the built-in firing.ssml.j2" or "a fixed sentence"


# AlertView's fields and properties: plain data, so reading one needs none of the sandbox's checks.
_VIEW_ATTRIBUTES = sandbox.plain_attributes(AlertView)



_MAX_TEXT = sandbox.MAX_TEXT  # no value is printed longer: the sandbox relies on it (see BoundedSandbox)


def _finalize(value: object) -> str:
    # Most values: a printable ASCII str, which has nothing XML forbids, of a length that is no runaway.
    kind = type(value)
    if (kind is str or kind is Markup) and value.isascii() and value.isprintable() and len(value) <= _MAX_TEXT:
        return value
    return _finalize_other(value)


def _finalize_other(value: object) -> str:
    text = value if type(value) in (str, Markup) else ("" if value is None else str(value))
    if len(text) > _MAX_TEXT:
        sandbox.check_text(text)
    if text.isascii() and text.isprintable():
        return text
    text = ssml.XML_INVALID.sub("", ("" if value is None else str(value)))
    # Markup stays Markup (a macro's output, already escaped): only the forbidden characters went.
    return Markup(text) if isinstance(value, Markup) else text  # noqa: S704


def _is_normal(text: str) -> bool:
    """Whether _normalise would leave the text as it is: single spaces between words, no empty lines."""
    if text.startswith((" ", "\n")) or text.endswith((" ", "\n")):
        return False
    if "  " in text or " \n" in text or "\n " in text or "\n\n" in text:
        return False
    # Whitespace other than a space or a newline is never printable.
    return text.replace("\n", " ").isprintable()


def _normalise(text: str) -> str:
    if _is_normal(text):  # what the built-in templates render: nothing to split and join again
        return text
    # Each line with its whitespace collapsed, empty lines left out.
    return "\n".join(filter(None, map(" ".join, map(str.split, text.split("\n")))))

def _completed_ssml(document: str, problem: str, name: str, language: str) -> str:
    """A document ssml.problem() refused, completed if its only fault is a bare <speak>, else a TemplateError."""
    completed = ssml.completed_speak(document, language)
    if completed is not None:  # what is wrong with it once completed, if anything, is what to report
        problem = ssml.problem(completed)
        if problem is None:
            return completed
    raise TemplateError(f"{name}: {problem}")


class Speech:
    """Renders the text of calls from templates: user templates first, built-in ones otherwise."""

    def __init__(self, directory: Path | None, *, max_alerts_spoken: int = _SPEECH["max_alerts_spoken"].default,
                 max_chars: int = _SPEECH["max_chars"].default,
                 clock: Callable[[], float] = time.monotonic, render_seconds: float = sandbox.MAX_SECONDS):
        if max_alerts_spoken < 1 or max_chars < 1:
            raise ValueError("max_alerts_spoken and max_chars must be at least 1")
        self.directory = directory
        self.max_alerts_spoken = max_alerts_spoken
        self.max_chars = max_chars
        self._clock, self._render_seconds = clock, render_seconds
        self._packaged: Speech | None = None if directory is not None else self
        loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("alert2voice", "templates")]
        if directory is not None:
            loaders.insert(0, jinja2.FileSystemLoader(directory))
        self._loader = jinja2.ChoiceLoader(loaders)
        # Escaping follows the document being produced, not the name of a file it imports or includes,
        # so an SSML template's helper macros escape too: one environment per output format.
        self._environments = {
            "SSML": self._environment(self._loader, True),
            "TEXT": self._environment(self._loader, False),
        }
        self._uses: dict[tuple[str, str], bool] = {}
        # Compiled once: Jinja's own cache is an LRU behind a lock, looked up on every render.
        self._templates: dict[tuple[str, str], jinja2.Template] = {}

    @staticmethod
    def _environment(loader: jinja2.BaseLoader, autoescape: bool) -> jinja2.Environment:
        # Sandboxed: templates are configuration and must not reach Python internals (or secrets) from there.
        environment = sandbox.BoundedSandbox(
            loader=loader,
            plain={AlertView: _VIEW_ATTRIBUTES},
            undefined=jinja2.StrictUndefined,
            autoescape=autoescape,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        environment.filters.update(FILTERS)
        return environment

    @staticmethod
    def text_format(name: str) -> Literal["SSML", "TEXT"]:
        """The provider's textFormat for a template: SSML for `*.ssml.j2`, TEXT otherwise."""
        return "SSML" if name.endswith(".ssml.j2") else "TEXT"

    def has_template(self, name: str) -> bool:
        """Whether the template exists in the user directory or among the built-in ones."""
        try:
            self._loader.get_source(self._environments["SSML"], name)
        except jinja2.TemplateNotFound:
            return False
        return True

    def uses(self, name: str, variable: str) -> bool:
        """Whether the template itself refers to a variable (what it imports or includes is not looked at)."""
        key = (name, variable)
        if key not in self._uses:
            env = self._environments[self.text_format(name)]
            source = self._loader.get_source(env, name)[0]
            self._uses[key] = variable in jinja2.meta.find_undeclared_variables(env.parse(source))
        return self._uses[key]

    def speak(self, name: str, ctx: SpeechContext) -> Spoken:
        """What a call says, always: the template's text, else the built-in template's, else a fixed sentence."""
        try:
            return self._spoken(name, ctx)
        except Exception as exc:  # whatever went wrong, the call goes out: `error` says what it was
            error = exc
        packaged = self._packaged_only()
        fallback = f"{ctx.status}.{'ssml' if self.text_format(name) == 'SSML' else 'txt'}.j2"
        if packaged is not self or fallback != name:  # the same template would fail the same way
            with contextlib.suppress(Exception):
                return dataclasses.replace(packaged._spoken(fallback, ctx), error=error,
                                           fallback=f"the built-in {fallback}")
        return Spoken(self._fixed_sentence(ctx), "SSML", False, error, "a fixed sentence")

    def render(self, name: str, ctx: SpeechContext) -> str:
        """The call's text: one well-formed SSML document (or plain text), at most max_chars characters."""
        text_format = self.text_format(name)
        template = self._template(name, text_format)
        token = sandbox.BUDGET.set(sandbox.Budget(self._clock, self._render_seconds))
        try:
            failure = ""
            for spoken, annotation_cut, label_cut in self._budget(len(ctx.alerts)):
                seen = variables(ctx, spoken, annotation_cut, label_cut)
                try:
                    output = _normalise(sandbox.render(template, seen))
                except sandbox.TooLarge as exc:  # fewer alerts or shorter text may fit
                    failure = f"{self._located(exc, name)} (even with one alert spoken and shortened text)"
                    continue
                except Exception as exc:
                    raise self._located(exc, name) from exc
                if text_format == "SSML" and len(output) <= self.max_chars and (problem := ssml.problem(output)):
                    output = _completed_ssml(output, problem, name, ctx.language)
                if len(output) <= self.max_chars:
                    return output
                failure = (f"{name}: output is {len(output)} characters even with one alert spoken and "
                           f"shortened text, over speech.max_chars ({self.max_chars})")
            raise TemplateError(failure)
        finally:
            sandbox.BUDGET.reset(token)

    def check(self, name: str, now: datetime) -> list[str]:
        """Render the template against sample alerts and return its problems instead of raising."""
        problems: list[str] = []
        for ctx in sample_contexts(now):
            try:
                self.render(name, ctx)
            except TemplateError as exc:
                if str(exc) not in problems:
                    problems.append(str(exc))
        return problems

    def _spoken(self, name: str, ctx: SpeechContext) -> Spoken:
        text = self.render(name, ctx)
        asks = ctx.ack_digit is not None and (self.uses(name, "menu") or self.uses(name, "ack_digit"))
        return Spoken(text, self.text_format(name), asks)

    def _packaged_only(self) -> Speech:
        """A Speech that sees only the packaged templates: a user directory may shadow their names."""
        if self._packaged is None:
            self._packaged = Speech(None, max_alerts_spoken=self.max_alerts_spoken, max_chars=self.max_chars,
                                    clock=self._clock, render_seconds=self._render_seconds)
        return self._packaged

    def _fixed_sentence(self, ctx: SpeechContext) -> str:
        """The last resort, for when no template renders: "Alert firing: HighCPU, DiskFull." as SSML."""
        names = [name for name in dict.fromkeys(cut(a.labels.get("alertname", ""), 60) for a in ctx.alerts) if name]
        shown = names[: self.max_alerts_spoken]
        while True:
            more = f" and {len(names) - len(shown)} more" if len(shown) < len(names) else ""
            said = f": {', '.join(shown)}{more}" if shown else f" on route {cut(words(ctx.route), 60)}"
            document = ssml.ssml_document(f"Alert {ctx.status}{said}.", ctx.language)
            if len(document) <= self.max_chars or not shown:
                return document
            shown.pop()

    def _budget(self, alert_count: int) -> Iterator[tuple[int, int | None, int | None]]:
        # Fewer alerts spoken first ("and N more" grows), then shorter annotations, then shorter labels.
        for spoken in range(min(self.max_alerts_spoken, max(alert_count, 1)), 0, -1):
            yield spoken, None, None
        for annotation_cut, label_cut in _CUTS:
            yield 1, annotation_cut, label_cut

    def _template(self, name: str, text_format: str) -> jinja2.Template:
        template = self._templates.get((name, text_format))
        if template is None:
            try:
                template = self._environments[text_format].get_template(name)
            except Exception as exc:
                raise self._located(exc, name) from exc
            self._templates[name, text_format] = template
        return template

    def _located(self, exc: Exception, name: str) -> TemplateError:
        if isinstance(exc, jinja2.TemplateSyntaxError):
            where = self._display(exc.filename) if exc.filename else exc.name or name
            return TemplateError(f"{where}:{exc.lineno}: {exc.message}")
        # Jinja rewrites tracebacks so template frames carry the template's file name and line number.
        where = name
        tb = exc.__traceback__
        while tb is not None:
            if "__jinja_exception__" in tb.tb_frame.f_globals:
                where = f"{self._display(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
            tb = tb.tb_next
        if isinstance(exc, jinja2.TemplateNotFound):
            searched = f"{self.directory} or " if self.directory is not None else ""
            return TemplateError(f"{where}: template {exc.name!r} not found in {searched}the built-in templates")
        if isinstance(exc, jinja2.UndefinedError) and (missing := _MISSING_KEY.search(str(exc))):
            key = missing.group(1)
            return TemplateError(f'{where}: {exc} (not every alert has every label and annotation: '
                                 f'write .get("{key}"): alert.labels.get("{key}") or alert.annotations.get("{key}"))')
        return TemplateError(f"{where}: {exc}")

    def _display(self, filename: str) -> str:
        """A template file as users name it: relative to the template directory, else its file name."""
        path = Path(filename).resolve()
        if self.directory is not None and path.is_relative_to(Path(self.directory).resolve()):
            return path.relative_to(Path(self.directory).resolve()).as_posix()
        return path.name


_MISSING_KEY = re.compile(r"^'dict object' has no attribute '([^']*)'$")
