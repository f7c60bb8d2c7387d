"""The Jinja sandbox templates render in, bounded: in work, in time, and in the size of what they build.

Jinja's sandbox keeps templates away from Python internals, but a template may still loop for hours
or build a gigabyte of text in one operator, and a render runs on the event loop. Here every loop
iteration, call, lookup, include and intercepted operator of a render counts against its budget
(operations and a deadline), every operation that can grow a value is checked before it runs, and
no text a template builds or outputs may be longer than MAX_TEXT.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sized
from contextvars import ContextVar
from functools import wraps
from itertools import islice
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_OPERATIONS = 1_000_000  # loop iterations, calls, lookups and operators in one render
MAX_SECONDS = 1.0  # one render's wall-clock time: the event loop waits for it
MAX_GROWTH = 1_000_000  # characters or items one operation may add, checked before it runs
MAX_BITS = 16_384  # the largest integer arithmetic may build (Python refuses to print ~14,000 bits anyway)
# The longest text a template may build or output, and print in one piece: more than three times what
# any call says (speech.max_chars is at most 6,000). Over it, the speech budget tries shorter text.
MAX_TEXT = 20_000
_BATCH = 128  # output pieces joined at a time: a runaway render is stopped after at most this many
# A loop over this many items or fewer counts them when it starts, not one at a time: its body, unless it
# loops or calls itself (and counts there), runs at most this many times between two looks at the clock.
_FEW = 16

_COUNTED = "_a2v_counted"  # the filter every loop's iterable passes through
_SIZED = "_a2v_sized"  # the filter every `~` concatenation passes through


class LimitExceeded(Exception):
    """A render stopped at one of the sandbox's limits."""


class TooLarge(LimitExceeded):
    """The output, or a text, list or number the template builds, is over its limit."""


class TooCostly(LimitExceeded):
    """The render used up its operations or its time."""


class Budget:
    """One render's allowance, operations and a deadline: counted while it is BUDGET's value."""

    __slots__ = ("clock", "deadline", "left", "operations", "seconds")

    def __init__(self, clock: Callable[[], float] = time.monotonic, seconds: float = MAX_SECONDS,
                 operations: float = MAX_OPERATIONS) -> None:
        self.clock, self.seconds, self.operations, self.left = clock, seconds, operations, operations
        self.deadline = clock() + seconds

    def tick(self, operations: int = 1) -> None:
        """Count operations; raise TooCostly once the render is over its operations or its deadline."""
        self.left -= operations
        if self.left < 0:
            raise TooCostly(f"the template did more than {self.operations:,} operations (loop iterations, calls)")
        if self.clock() > self.deadline:
            raise TooCostly(f"the template took longer than {self.seconds:g} s to render")


# The budget renders count against: set it around a render (`token = BUDGET.set(Budget(...))`, then
# `BUDGET.reset(token)`; not a `with`, which costs two calls more on every render). Outside, nothing is
# counted: the default's operations stay infinite and its deadline never comes, so sharing it changes nothing.
_UNBOUNDED = Budget(lambda: 0.0, float("inf"), float("inf"))
BUDGET: ContextVar[Budget] = ContextVar("render_budget", default=_UNBOUNDED)


# ---------------------------------------------------------------------------------------------------
# How much an operation can add, worked out from its arguments before it runs (0: nothing to fear).


def _size(value: object) -> int:
    return len(value) if isinstance(value, Sized) else 0


def _count(value: object) -> int:
    return value if type(value) is int and value > 0 else 0


def _format_growth(template: object, args: Iterable[object]) -> int:
    """What %-formatting or str.format can add: every number in the template may be a width or a precision."""
    if not isinstance(template, str):
        return 0
    # Long digit runs are counted as too large without converting them (int() refuses ~4,300 digits).
    widths = sum(int(run) if len(run) <= 7 else MAX_GROWTH + 1 for run in _DIGITS.findall(template))
    if "*" in template or _NESTED_FIELD.search(template):  # widths taken from the arguments
        widths += sum(map(_count, args))
    return widths


_DIGITS = re.compile("[0-9]+")
_NESTED_FIELD = re.compile(r"\{[^{}]*\{")  # "{:{width}}"; [^{}] stops at every brace: linear


def _replace_growth(text: object, old: object, new: object, count: object = None) -> int:
    n, removed, added = _size(text), _size(old), _size(new)
    times = n + 1 if removed == 0 else n // removed
    if type(count) is int and count >= 0:
        times = min(times, count)
    return times * max(0, added - removed)


def _padding(text: object, width: object, *_: object) -> int:
    return max(0, _count(width) - _size(text))


def _indent_growth(text: object, width: object = 4, *_: object, **__: object) -> int:
    lines = text.count("\n") + 1 if isinstance(text, str) else 1
    return lines * (len(width) if isinstance(width, str) else _count(width))


def _wordwrap_growth(text: object, width: object = 79, _break_long: object = True, wrapstring: object = None,
                     *_: object, **__: object) -> int:
    # Each break inserts wrapstring: in place of a space, or inside a long word every `width` characters.
    n, wrap = _size(text), _size(wrapstring) or 1
    return n * max(0, wrap - 1) + n // max(1, _count(width)) * wrap


def _join_growth(items: object, separator: object = "", *_: object, **__: object) -> int:
    return _size(items) * _size(separator)


# Jinja's built-in filters that can return more than they are given (the others return at most about
# what they are given, which is bounded already): name -> what a call can add, from its arguments.
_FILTER_GROWTH: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80: _padding(value, width),
    "indent": _indent_growth,
    "replace": _replace_growth,
    "wordwrap": _wordwrap_growth,
    "join": _join_growth,
    "batch": lambda value, linecount, fill_with=None: _count(linecount),
    "slice": lambda value, slices, fill_with=None: _count(slices),
    "format": lambda value, *args, **kwargs: _format_growth(value, (*args, *kwargs.values())),
}
# The same for str's own methods, called from a template ("x".center(80)).
_STR_METHOD_GROWTH: dict[str, Callable[..., int]] = {
    "center": _padding,
    "ljust": _padding,
    "rjust": _padding,
    "zfill": _padding,
    "expandtabs": lambda text, tabsize=8: text.count("\t") * _count(tabsize),
    "replace": _replace_growth,
    "join": lambda separator, items: _join_growth(items, separator),
    "format": lambda text, *args, **kwargs: _format_growth(text, (*args, *kwargs.values())),
    "format_map": lambda text, mapping: _format_growth(text, mapping.values() if isinstance(mapping, dict) else ()),
}


def _listed(value: object) -> object:
    # An iterator (map, select...) cannot be measured without consuming it: list it first.
    if isinstance(value, Iterator):
        return list(value)
    return value


def _check_growth(growth: int) -> None:
    if growth > MAX_GROWTH:
        raise TooLarge(f"one operation would add {growth:,} characters or items (at most {MAX_GROWTH:,})")


def _bounded_filter(filter_: Callable[..., Any], growth: Callable[..., int]) -> Callable[..., Any]:
    """A built-in filter that first checks what it would add, then runs as Jinja's does."""
    passed = 1 if getattr(filter_, "jinja_pass_arg", None) is not None else 0  # context, eval_ctx or environment

    @wraps(filter_)  # keeps jinja_pass_arg: Jinja passes the same arguments
    def bounded(*args: Any, **kwargs: Any) -> Any:
        BUDGET.get().tick()
        args = (*args[:passed], _listed(args[passed]), *args[passed + 1 :])
        _check_growth(growth(*args[passed:], **kwargs))
        result = filter_(*args, **kwargs)
        _check_built(result)
        return result

    return bounded


@jinja2.pass_context  # never constant-folded at compile time: it must run at every render
def _counted(_context: jinja2.runtime.Context, iterable: Iterable[Any]) -> Iterable[Any]:
    budget = BUDGET.get()
    if type(iterable) in (list, tuple) and len(iterable) <= _FEW:  # alerts_spoken: counted at once, cheaply
        budget.tick(len(iterable) or 1)
        return iterable
    return _ticking(budget, iterable)


def _ticking(budget: Budget, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        budget.tick()
        yield item


def check_text(text: object) -> None:
    """Raise TooLarge for text longer than MAX_TEXT."""
    if isinstance(text, str) and len(text) > MAX_TEXT:
        raise TooLarge(f"a text of {len(text):,} characters, over the {MAX_TEXT:,} a template may build or print")


def _check_built(value: object) -> None:
    check_text(value)
    if isinstance(value, (list, tuple, dict, set)) and len(value) > MAX_GROWTH:
        raise TooLarge(f"the template builds a collection of {len(value):,} items (at most {MAX_GROWTH:,})")


def _sized(text: str) -> str:
    check_text(text)
    return text


def render(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """Template.render, bounded: its output taken in batches, so that a runaway one stops early."""
    try:
        # Not Template.render: it copies the variables first, which new_context does anyway.
        return _joined(template.root_render_func(template.new_context(variables)))
    except Exception:
        return template.environment.handle_exception()  # raises, the traceback pointing into the template


def _joined(parts: Iterable[str]) -> str:
    """Output, blocks and macros joined (Jinja's concat), and checked against MAX_TEXT."""
    # Every piece is bounded (a value printed is at most MAX_TEXT before escaping, see BoundedSandbox), so
    # joining a batch first and measuring after costs at most a few megabytes, and less than measuring each.
    if type(parts) is list:  # a block or a macro's output
        if len(parts) > _BATCH and sum(map(len, parts)) > MAX_TEXT:
            raise TooLarge(f"the template builds a text of over {MAX_TEXT:,} characters")
        text = "".join(parts)
        if len(text) > MAX_TEXT:
            raise TooLarge(f"the template builds a text of over {MAX_TEXT:,} characters")
        return text
    chunks = iter(parts)  # a render's output, taken in batches
    batch = list(islice(chunks, _BATCH))
    text = "".join(batch) if len(batch) < _BATCH else _rest("".join(batch), chunks)  # mostly one batch
    if len(text) > MAX_TEXT:
        raise TooLarge(f"the template's output is over {MAX_TEXT:,} characters")
    return text


def _rest(text: str, chunks: Iterator[str]) -> str:
    pieces, size = [text], len(text)
    while size <= MAX_TEXT:
        batch = list(islice(chunks, _BATCH))
        pieces.append("".join(batch))
        size += len(pieces[-1])
        if len(batch) < _BATCH:
            break
    return "".join(pieces)


class _Bounded(NodeTransformer):
    """Routes every loop through the budget and every `~` through the size limit."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _COUNTED, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        return nodes.Filter(node, _SIZED, [], [], None, None, lineno=node.lineno)


def plain_attributes(cls: type) -> frozenset[str]:
    """A dataclass's fields and properties: plain data, which a template may read without the sandbox's checks."""
    return frozenset([f.name for f in dataclasses.fields(cls)]
                     + [name for name, value in vars(cls).items() if isinstance(value, property)])


_LOOP_ATTRIBUTES = frozenset(name for name in dir(jinja2.runtime.LoopContext) if not name.startswith("_"))


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox with a budget for every render and MAX_TEXT characters as the limit on text.

    Its `finalize` must call check_text on what it is given (speech's does): each piece of output is then
    bounded, which is what lets a render's output be joined batch by batch before it is measured.

    The shortcut: what every template reads most (the `plain` attributes of the types given, `labels.get`,
    `alerts[0]`, `loop.index`) is read directly, without a look at the budget or the sandbox's checks, which
    would allow it anyway.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    concat = staticmethod(_joined)

    def __init__(self, *args: Any, plain: Mapping[type, frozenset[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plain: Mapping[type, frozenset[str]] = dict(plain or {})
        del self.globals["lipsum"]  # lipsum(n=10**9) writes any amount of text, unseen by the budget
        self.filters[_COUNTED] = _counted
        self.filters[_SIZED] = _sized
        for name, growth in _FILTER_GROWTH.items():
            self.filters[name] = _bounded_filter(self.filters[name], growth)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every way to compile a template goes through here: the bounds are part of each compiled template.
        tree = _Bounded().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree

    def get_template(self, *args: Any, **kwargs: Any) -> jinja2.Template:
        BUDGET.get().tick()  # an include in a loop, or a template including itself twice, is work too
        return super().get_template(*args, **kwargs)

    def select_template(self, *args: Any, **kwargs: Any) -> jinja2.Template:
        BUDGET.get().tick()
        return super().select_template(*args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if attribute in self.plain.get(kind, ()):
            return getattr(obj, attribute)
        if kind is dict and attribute == "get":  # labels.get("cluster"): a read the sandbox allows anyway
            return obj.get
        if kind is jinja2.runtime.LoopContext and attribute in _LOOP_ATTRIBUTES:
            return getattr(obj, attribute)  # loop.index, loop.first...: public, as the sandbox would allow
        BUDGET.get().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if type(obj) is list and type(argument) is int:  # alerts[0]: a read the sandbox allows anyway
            try:
                return obj[argument]
            except IndexError:
                pass
        BUDGET.get().tick()
        return super().getitem(obj, argument)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # A template's globals as a dict rather than Jinja's ChainMap over the environment's: every render copies
        # them, and copying a ChainMap runs in Python (a tenth of a short render). Nothing changes globals later.
        return {**self.globals, **(d or {})}

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        BUDGET.get().tick()
        method = getattr(obj, "__wrapped__", obj)  # str.format comes wrapped by the sandbox
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str) and (growth := _STR_METHOD_GROWTH.get(getattr(method, "__name__", ""))):
            args = tuple(map(_listed, args))
            _check_growth(growth(owner, *args, **kwargs))
        result = super().call(context, obj, *args, **kwargs)
        _check_built(result)
        if isinstance(owner, (list, dict, set)):  # append, extend, update...: the collection itself grew
            _check_built(owner)
        return result

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        BUDGET.get().tick()
        _check_binop(operator, left, right)
        result = self.binop_table[operator](left, right)
        _check_built(result)
        return result


def _check_binop(operator: str, left: Any, right: Any) -> None:
    # Raise before the operator allocates: "a" * 10**9, 10 ** 10**9, "%0999999999d" % 1.
    if operator == "*":
        if type(left) is int and type(right) is int:
            _check_bits(left.bit_length() + right.bit_length())
        elif type(right) is int:
            _check_growth(_size(left) * max(0, right - 1))
        elif type(left) is int:
            _check_growth(_size(right) * max(0, left - 1))
    elif operator == "**" and type(left) is int and type(right) is int and right > 0 and abs(left) > 1:
        _check_bits(left.bit_length() * right)
    elif operator == "%" and isinstance(left, str):
        _check_growth(_format_growth(left, right if isinstance(right, tuple) else (right,)))


def _check_bits(bits: int) -> None:
    if bits > MAX_BITS:
        raise TooLarge(f"the template builds a number of about {bits:,} bits (at most {MAX_BITS:,})")
