"""Alertmanager label matchers: the classic parser and matching semantics of Alertmanager 0.25."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["MatchType", "Matcher", "MatcherError", "matches_all", "parse_matcher", "parse_matchers"]


class MatchType(StrEnum):
    """The four matcher operators."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


class MatcherError(ValueError):
    """A matcher Alertmanager would reject, or a regex that cannot be reproduced in Python."""


# pkg/labels/parse.go. RE2's \s is [\t\n\f\r ] (no \v, nothing beyond ASCII) and its $ is end of text.
_MATCHER = re.compile(
    r"[\t\n\f\r ]*([a-zA-Z_:][a-zA-Z0-9_:]*)[\t\n\f\r ]*(=~|=|!=|!~)[\t\n\f\r ]*(.*?)[\t\n\f\r ]*\Z", re.S
)
# Go's strings.TrimSpace (unicode.IsSpace), which Python's str.strip() does not match exactly.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


@dataclass(frozen=True)
class Matcher:
    """One label matcher, such as severity=~"critical|page"."""

    name: str
    type: MatchType
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", MatchType(self.type))
        if self.type in (MatchType.REGEX, MatchType.NOT_REGEX):
            object.__setattr__(self, "_regex", _compile(self.value))

    def matches(self, value: str) -> bool:
        """Whether a label value ("" for a missing label) satisfies this matcher."""
        if self._regex is not None:
            return (self._regex.search(value) is not None) == (self.type is MatchType.REGEX)
        return (value == self.value) == (self.type is MatchType.EQUAL)

    def matches_labels(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set satisfies this matcher; a missing label matches as ""."""
        return self.matches(labels.get(self.name, ""))

    def __str__(self) -> str:
        """Alertmanager's Matcher.String(): the value quoted with OpenMetrics escaping."""
        escaped = self.value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        return f'{self.name}{self.type.value}"{escaped}"'


def parse_matchers(text: str) -> list[Matcher]:
    """Parse one item of a route's `matchers`: comma-separated matchers in optional braces."""
    # Exactly one leading "{" and one trailing "}" go; anything else stays part of a matcher.
    text = text.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    token: list[str] = []
    in_quotes = escaped = False
    for ch in text:
        if ch == ",":
            if not in_quotes:
                tokens.append("".join(token))
                token = []
                continue
            # Go's switch leaves `escaped` untouched for a comma: "\\," then '"' is still an escaped quote.
        elif ch == '"':
            if escaped:
                escaped = False
            else:
                in_quotes = not in_quotes
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(ch)
    # Only the last token is trimmed and dropped when empty: that is what allows one trailing comma,
    # while an empty token elsewhere ("a=1,,b=2", ",") fails in parse_matcher.
    if last := "".join(token).strip(_GO_SPACE):
        tokens.append(last)
    return [parse_matcher(t) for t in tokens]


def parse_matcher(text: str) -> Matcher:
    """Parse exactly one matcher, such as foo="bar" or foo=~bar.* (quotes around the value are optional)."""
    found = _MATCHER.match(text)
    if found is None:
        raise MatcherError(f"bad matcher format: {text}")
    name, op, raw = found.groups()
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    if any("\ud800" <= ch <= "\udfff" for ch in body):
        raise MatcherError(f"matcher value not valid UTF-8: {raw}")
    value: list[str] = []
    escaped = False
    last = len(body) - 1
    for i, ch in enumerate(body):
        if escaped:
            escaped = False
            # Only \n, \" and \\ are escapes; any other backslash is literal (\t stays backslash-t).
            value.append("\n" if ch == "n" else ch if ch in '"\\' else "\\" + ch)
        elif ch == "\\":
            if i < last:
                escaped = True
            else:
                value.append(ch)
        elif ch == '"':
            # A quote is only allowed as the last character, closing a quoted value.
            if not quoted or i < last:
                raise MatcherError(f"matcher value contains unescaped double quote: {raw}")
            quoted = False
        else:
            value.append(ch)
    if quoted:
        raise MatcherError(f"matcher value contains unescaped double quote: {raw}")
    return Matcher(name, MatchType(op), "".join(value))


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether a label set satisfies every matcher (true for no matchers)."""
    return all(m.matches_labels(labels) for m in matchers)


# ------------------------------------------------------------------------------------- Go RE2 -> Python re
#
# Alertmanager compiles "^(?:" + value + ")$" with Go's regexp (RE2 syntax). Python's `re` reads much
# of that syntax differently, so the pattern is rewritten token by token: what has an exact Python
# equivalent is translated, what is Go-only and untranslatable (\p{..} classes) or invalid in Go but
# valid in Python (lookarounds, backreferences, possessive quantifiers) is rejected.

# Go's Perl classes are ASCII-only; Python's are Unicode, and its \s also has \v.
_PERL = {"d": "0-9", "s": "\\t\\n\\f\\r ", "w": "0-9A-Za-z_"}
_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": "\\t-\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}  # fmt: skip
_C_ESCAPES = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
# Go reads {n}, {n,} and {n,m} without leading zeros as a repeat, and any other "{" as a literal.
_REPEAT = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")
_FLAGS = re.compile(r"\(\?([imsU]*)(?:-([imsU]+))?([:)])")
_GROUP = re.compile(r"\((?!\?)|\(\?P<[A-Za-z0-9_]+>")
_OCTAL = re.compile(r"[0-7]{1,3}")
_HEX = re.compile(r"\{([0-9A-Fa-f]+)\}|([0-9A-Fa-f]{2})")


class _Unsupported(Exception):
    pass


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        # Translate the wrapped pattern, as Go compiles it: a value such as "a)|(b" is valid there.
        return re.compile(_translate(f"^(?:{pattern})$"))
    except _Unsupported as exc:
        raise MatcherError(f"error parsing regexp: {exc}: `{pattern}`") from None
    except re.error as exc:  # exc.msg: Python's positions refer to the translated pattern
        raise MatcherError(f"error parsing regexp: {exc.msg}: `{pattern}`") from None


def _translate(p: str) -> str:
    out: list[str] = []
    flags: set[str] = set()  # Go flags in effect: i, m, s, U
    scopes: list[str] = []  # Python scoped groups standing for the (?flags) seen in the current group
    groups: list[tuple[set[str], list[str]]] = []  # per open group: flags and scopes to restore at ")"
    pending: list[str] = []  # opened after any quantifier: Go's "a(?i)*" repeats the "a"
    i = 0
    while i < len(p):
        c = p[i]
        repeat = _REPEAT.match(p, i) if c == "{" else None
        if c in "*+?" or repeat:
            i = _quantifier(p, i, repeat, "U" in flags, out)
            continue
        out += pending
        pending.clear()
        if c == "\\":
            piece, i = _escape_outside_class(p, i)
        elif c == "[":
            piece, i = _char_class(p, i)
        elif c == "(" and (group := _GROUP.match(p, i)):
            groups.append((flags, scopes))
            scopes = []
            piece, i = "(", group.end()  # names do not matter, and Go's (digits first) upset Python
        elif c == "(":
            found = _FLAGS.match(p, i)
            if found is None:
                raise _Unsupported(f"invalid or unsupported Perl syntax: `{p[i : i + 3]}`")
            on, off, end = found.groups()
            new = (flags | set(on)) - set(off or "")
            py_on, py_off = "".join(sorted(new - flags - {"U"})), "".join(sorted(flags - new - {"U"}))
            piece = f"(?{py_on}-{py_off}:" if py_off else f"(?{py_on}:"
            if end == ":":
                groups.append((flags, scopes))
                scopes = []
            else:
                # Go's (?i) holds to the end of the enclosing group, across "|"; Python allows global
                # flags only at the very start, so this becomes a scoped group closed with the group.
                scopes.append(piece)
                pending.append(piece)
                piece = ""
            flags, i = new, found.end()
        elif c == ")":
            if not groups:
                raise _Unsupported("unexpected )")
            piece = ")" * (len(scopes) + 1)
            flags, scopes = groups.pop()
            i += 1
        elif c == "|":
            piece = ")" * len(scopes) + "|" + "".join(scopes)
            i += 1
        else:
            # Go's $ is end of text unless (?m), Python's also matches before a final "\n". Anchors are
            # grouped because Go accepts repeating them ("^*") and Python only repeats groups.
            end_anchor = "(?:$)" if "m" in flags else "(?:\\Z)"
            piece = {"^": "(?:^)", "$": end_anchor, "{": "\\{"}.get(c, c)
            i += 1
        out.append(piece)
    if groups:
        raise _Unsupported("missing closing )")
    return "".join(out + pending) + ")" * len(scopes)


def _quantifier(p: str, i: int, repeat: re.Match[str] | None, ungreedy: bool, out: list[str]) -> int:
    if repeat:
        low, _, high = repeat.groups()
        if int(low) > 1000 or int(high or 0) > 1000 or (high is not None and int(low) > int(high)):
            raise _Unsupported(f"invalid repeat count: `{repeat.group()}`")
        out.append(repeat.group())
        i = repeat.end()
    else:
        out.append(p[i])
        i += 1
    # Go's (?U) swaps greedy and lazy. Go has no possessive quantifiers (Python 3.11 does).
    lazy = p.startswith("?", i)
    if lazy != ungreedy:
        out.append("?")
    i += lazy
    if p.startswith(("*", "+", "?"), i) or _REPEAT.match(p, i):
        raise _Unsupported("invalid nested repetition operator")
    return i


def _escape_outside_class(p: str, i: int) -> tuple[str, int]:
    c = p[i + 1 : i + 2]
    if c == "Q":
        end = p.find("\\E", i + 2)
        end = len(p) if end < 0 else end
        return re.escape(p[i + 2 : end]), end + 2
    if c in ("A", "z"):
        return ("(?:\\A)" if c == "A" else "(?:\\Z)"), i + 2
    if c == "b":
        return "(?a:\\b)", i + 2
    if c == "B":  # spelled out: Python's \B never matches in an empty string, Go's does
        return "(?a-i:(?<=\\w)(?=\\w)|(?<!\\w)(?!\\w))", i + 2
    if c and c in "dswDSW":
        return f"[{'^' if c.isupper() else ''}{_PERL[c.lower()]}]", i + 2
    ch, i = _escaped_char(p, i)
    return re.escape(ch), i


def _char_class(p: str, i: int) -> tuple[str, int]:
    negate = p.startswith("^", i + 1)
    i += 1 + negate
    members: list[str] = []
    # Go allows negated groups inside a class ([\D], [[:^alpha:]]); Python sets cannot nest them.
    excluded: list[str] = []
    first = True  # "]" is a literal as the first member
    while i >= len(p) or p[i] != "]" or first:
        if i >= len(p):
            raise _Unsupported("missing closing ]")
        first = False
        if p.startswith("[:", i) and (end := p.find(":]", i + 2)) >= 0:
            name = p[i + 2 : end]
            if name.removeprefix("^") not in _POSIX:
                raise _Unsupported(f"invalid character class range: [:{name}:]")
            (excluded if name.startswith("^") else members).append(_POSIX[name.removeprefix("^")])
            i = end + 2
            continue
        if p.startswith("\\", i) and p[i + 1 : i + 2] in ("d", "s", "w", "D", "S", "W"):
            (excluded if p[i + 1].isupper() else members).append(_PERL[p[i + 1].lower()])
            i += 2
            continue
        low, i = _class_char(p, i)
        if p.startswith("-", i) and i + 1 < len(p) and p[i + 1] != "]":
            high, i = _class_char(p, i + 1)
            if high < low:
                raise _Unsupported(f"invalid character class range: {low}-{high}")
            members.append(f"{re.escape(low)}-{re.escape(high)}")
        else:
            members.append(re.escape(low))
    if not excluded:
        return f"[{'^' * negate}{''.join(members)}]", i + 1
    union = "|".join([f"[{''.join(members)}]"] * bool(members) + [f"[^{x}]" for x in excluded])
    return (f"(?:(?!{union})(?s:.))" if negate else f"(?:{union})"), i + 1


def _class_char(p: str, i: int) -> tuple[str, int]:
    if i >= len(p):
        raise _Unsupported("missing closing ]")
    if p[i] == "\\":
        return _escaped_char(p, i)
    return p[i], i + 1


def _escaped_char(p: str, i: int) -> tuple[str, int]:
    """Go's parseEscape: the one character a backslash escape stands for."""
    c = p[i + 1 : i + 2]
    if not c:
        raise _Unsupported("trailing backslash at end of expression")
    if c.isascii() and not c.isalnum():
        return c, i + 2
    if c in "01234567":
        # Octal: \0 plus up to two digits, or \1-\7 followed by a digit (a lone \1 is a backreference).
        digits = _OCTAL.match(p, i + 1).group()  # c is an octal digit, so this matches
        if c != "0" and len(digits) == 1:
            raise _Unsupported(f"invalid escape sequence: \\{c} (backreferences are not supported)")
        return chr(int(digits, 8)), i + 1 + len(digits)
    if c == "x":
        found = _HEX.match(p, i + 2)
        if found and (code := int(found.group(1) or found.group(2), 16)) <= 0x10FFFF:
            return chr(code), found.end()
    elif c in _C_ESCAPES:
        return _C_ESCAPES[c], i + 2
    elif c in ("p", "P"):
        raise _Unsupported(f"Unicode character classes (\\{c}) are not supported")
    raise _Unsupported(f"invalid escape sequence: \\{c}")
