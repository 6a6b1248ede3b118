"""The bridge between Go RE2 (what sops runs) and Python `re` (what sopsctl runs): check and translate."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import NoReturn

__all__ = ["PERL_CLASSES", "check_re2", "compile_search", "complement", "normalize", "to_python"]

MAX_CODEPOINT = 0x10FFFF
_MAX_REPEAT = 1000  # RE2 refuses larger repeat counts
_PY_SPECIAL = frozenset(".^$*+?{}[]\\|()")
_DIGIT = ((0x30, 0x39),)
_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_SPACE = ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20))  # RE2's \s: no \v, unlike Python's
# RE2's Perl and POSIX classes are ASCII-only; Python's \d \w \s are Unicode-aware for str
# patterns, so every one of them is spelled out as explicit ranges.
PERL_CLASSES = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
_POSIX = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": _DIGIT,
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": _WORD,
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_CHAR_ESCAPES = {"a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11}
_NAMED_ESCAPES = {cp: name for name, cp in _CHAR_ESCAPES.items()}  # same spelling in both
_REPEAT_BRACES = re.compile(r"\{(\d+)(,(\d*))?\}")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_]+")
_PYTHON_ONLY_GROUPS = (
    ("?P=", "(?P=name) backreferences are Python-only"),
    ("?P>", "(?P>name) recursion is not supported by RE2"),
    ("?=", "look-ahead (?=…) is not supported by RE2"),
    ("?!", "look-ahead (?!…) is not supported by RE2"),
    ("?<=", "look-behind (?<=…) is not supported by RE2"),
    ("?<!", "look-behind (?<!…) is not supported by RE2"),
    ("?>", "atomic groups (?>…) are not supported by RE2"),
    ("?#", "comments (?#…) are not supported by RE2"),
    ("?(", "conditionals (?(…)…) are not supported by RE2"),
)


def normalize(ranges: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Sorted, merged, inclusive code-point intervals."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


def complement(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Every code point not in `ranges`, as normalized intervals."""
    out, nxt = [], 0
    for lo, hi in normalize(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODEPOINT:
        out.append((nxt, MAX_CODEPOINT))
    return tuple(out)


def py_char(cp: int, in_class: bool = False) -> str:
    """One code point as a Python regex literal; in a class `&~|` are escaped too (Python
    warns about `&&`, `~~`, `||` as possible future set syntax)."""
    ch = chr(cp)
    if ch in _PY_SPECIAL or (in_class and ch in "&~|-"):
        return "\\" + ch
    if ch.isprintable() and not 0xD800 <= cp <= 0xDFFF:
        return ch
    if cp in _NAMED_ESCAPES:
        return "\\" + _NAMED_ESCAPES[cp]
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def py_class(ranges: tuple[tuple[int, int], ...], negate: bool = False) -> str:
    """A Python class for exactly `ranges` (or its complement when `negate`)."""
    if not ranges:  # `[]` / `[^]` are not valid Python
        return r"(?s:.)" if negate else r"[^\x00-\U0010ffff]"
    body = []
    for lo, hi in ranges:
        body.append(py_char(lo, True))
        if hi > lo:
            body.append(("-" if hi > lo + 1 else "") + py_char(hi, True))
    return ("[^" if negate else "[") + "".join(body) + "]"


@dataclass
class _Frame:
    """One open group: its flags, and the scoped-flag groups opened by a mid-group `(?i)`."""

    flags: frozenset[str]
    reopen: list[str] = field(default_factory=list)


class _Translator:
    """A single pass over RE2 syntax that rejects what RE2 lacks and writes Python syntax."""

    def __init__(self, src: str):
        self.src, self.i, self.out = src, 0, []
        self.frames = [_Frame(frozenset())]
        self.can_repeat = False  # the last thing emitted is an atom a quantifier may follow
        self.repeated = False  # the last thing emitted is a quantifier

    def fail(self, msg: str) -> NoReturn:
        raise ValueError(f"regex {self.src!r}: {msg} (at offset {self.i})")

    def atom(self, text: str) -> None:
        self.out.append(text)
        self.can_repeat, self.repeated = True, False

    def boundary(self, text: str) -> None:
        self.out.append(text)
        self.can_repeat = self.repeated = False

    def run(self) -> str:
        src = self.src
        while self.i < len(src):
            c = src[self.i]
            if c == "\\":
                self.escape()
                continue
            if c == "[":
                self.char_class()
                continue
            if c == "(":
                self.open_group()
                continue
            if c in "*+?" or (c == "{" and _REPEAT_BRACES.match(src, self.i)):
                self.quantifier()
                continue
            self.i += 1
            if c == ")":
                if len(self.frames) == 1:
                    self.fail("unmatched ')'")
                frame = self.frames.pop()
                self.atom(")" * (len(frame.reopen) + 1))
            elif c == "|":
                reopen = self.frames[-1].reopen
                self.boundary(")" * len(reopen) + "|" + "".join(reopen))
            elif c == ".":
                self.atom(".")
            elif c == "^":
                self.boundary("^")
            elif c == "$":  # RE2's `$` is end of text; Python's also matches before a final \n
                self.boundary("$" if "m" in self.frames[-1].flags else r"\Z")
            else:  # a literal; `{` `}` `]` that start no syntax are literal in RE2 too
                self.atom(py_char(ord(c)))
        if len(self.frames) > 1:
            self.fail("missing closing ')'")
        self.out.append(")" * len(self.frames[0].reopen))
        return "".join(self.out)

    def quantifier(self) -> None:
        src = self.src
        if self.repeated:
            self.fail("RE2 rejects a quantifier on a quantifier (possessive *+ ++ ?+ are Python-only)")
        if not self.can_repeat:
            self.fail("missing argument to repetition operator")
        if src[self.i] == "{":
            m = _REPEAT_BRACES.match(src, self.i)
            assert m is not None  # run() only calls us on a match
            lo = int(m[1])
            hi = lo if not m[2] else (int(m[3]) if m[3] else None)
            if lo > _MAX_REPEAT or (hi is not None and hi > _MAX_REPEAT):
                self.fail(f"RE2 limits repeat counts to {_MAX_REPEAT}")
            if hi is not None and hi < lo:
                self.fail("invalid repeat count (min > max)")
            text, self.i = m[0], m.end()
        else:
            text, self.i = src[self.i], self.i + 1
        if src.startswith("?", self.i):  # lazy: same language, same match/no-match answer
            text, self.i = text + "?", self.i + 1
        self.out.append(text)
        self.repeated = True

    def escape(self) -> None:
        src = self.src
        if self.i + 1 >= len(src):
            self.fail("trailing backslash")
        c = src[self.i + 1]
        if c == "Q":  # \Q…\E quotes literally, to \E or the end
            end = src.find("\\E", self.i + 2)
            end = len(src) if end < 0 else end
            for ch in src[self.i + 2 : end]:
                self.atom(py_char(ord(ch)))
            self.i = min(end + 2, len(src))
            return
        if c in "AzbB":
            self.i += 2
            # RE2's \b is an ASCII word boundary; (?a:…) makes Python's one ASCII too
            self.boundary({"A": r"\A", "z": r"\Z", "b": r"(?a:\b)", "B": r"(?a:\B)"}[c])
            return
        if c.lower() in PERL_CLASSES:
            self.i += 2
            self.atom(py_class(PERL_CLASSES[c.lower()], negate=c.isupper()))
            return
        self.i += 1
        self.atom(py_char(self.char_escape()))

    def char_escape(self) -> int:
        """The code point of the escape at self.i (just past the backslash); advances past it."""
        src = self.src
        if self.i >= len(src):
            self.fail("trailing backslash")
        c = src[self.i]
        self.i += 1
        if c in _CHAR_ESCAPES:
            return _CHAR_ESCAPES[c]
        if c == "x":
            m = re.compile(r"\{([0-9A-Fa-f]+)\}|[0-9A-Fa-f]{2}").match(src, self.i)
            if not m or int(m[1] or m[0], 16) > MAX_CODEPOINT:
                self.fail("invalid \\x escape (RE2: \\x41 or \\x{10FFFF})")
            self.i = m.end()
            return int(m[1] or m[0], 16)
        if c in "01234567":
            # RE2: \0 and \1-\7 followed by an octal digit start an octal escape (up to 3
            # digits); a lone \1-\9 would be a backreference, which RE2 does not have.
            m = re.compile(r"[0-7]{0,2}").match(src, self.i)
            assert m is not None
            if c != "0" and not m[0]:
                self.fail(f"backreference \\{c} is not supported by RE2")
            self.i += len(m[0])
            return int(c + m[0], 8)
        if c in "89":
            self.fail(f"backreference \\{c} is not supported by RE2")
        if c in "pP":
            self.fail("Unicode classes \\p… / \\P… have no Python equivalent")
        if c == "Z":
            self.fail("\\Z is Python-only; RE2 spells end of text \\z")
        if ord(c) < 0x80 and not c.isalnum():
            return ord(c)  # escaped punctuation is itself in both dialects (even \_)
        self.fail(f"RE2 has no escape \\{c}")

    def char_class(self) -> None:
        src, start = self.src, self.i
        self.i += 1
        negate = src.startswith("^", self.i)
        self.i += negate
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            if self.i >= len(src):
                self.i = start
                self.fail("missing closing ']'")
            if src[self.i] == "]" and not first:
                self.i += 1
                break
            first = False
            if src.startswith("[:", self.i):
                end = src.find(":]", self.i + 2)
                if end >= 0:
                    name = src[self.i + 2 : end]
                    table = _POSIX.get(name.removeprefix("^"))
                    if table is None:
                        self.fail(f"unknown POSIX class [:{name}:]")
                    ranges += complement(table) if name.startswith("^") else table
                    self.i = end + 2
                    continue
            if src[self.i] == "\\" and src[self.i + 1 : self.i + 2].lower() in PERL_CLASSES:
                table = PERL_CLASSES[src[self.i + 1].lower()]
                ranges += complement(table) if src[self.i + 1].isupper() else table
                self.i += 2
                continue
            lo = self.class_char()
            hi = lo
            if src.startswith("-", self.i) and self.i + 1 < len(src) and src[self.i + 1] != "]":
                self.i += 1
                hi = self.class_char()
                if hi < lo:
                    self.fail("invalid character class range (reversed)")
            ranges.append((lo, hi))
        self.atom(py_class(normalize(ranges), negate))

    def class_char(self) -> int:
        c = self.src[self.i]
        self.i += 1
        return self.char_escape() if c == "\\" else ord(c)

    def open_group(self) -> None:
        src, j = self.src, self.i + 1
        flags = self.frames[-1].flags
        if not src.startswith("?", j):
            self.i += 1
            self.frames.append(_Frame(flags))
            self.boundary("(")
            return
        if src.startswith("?P<", j) or (src.startswith("?<", j) and src[j + 2 : j + 3] not in "=!"):
            j += 3 if src[j + 1] == "P" else 2
            m = _GROUP_NAME.match(src, j)
            if not m or not src.startswith(">", m.end()):
                self.fail("invalid capture group name")
            self.i = m.end() + 1
            self.frames.append(_Frame(flags))
            self.boundary(f"(?P<{m[0]}>")  # Python spells (?<name> as (?P<name>
            return
        for prefix, msg in _PYTHON_ONLY_GROUPS:
            if src.startswith(prefix, j):
                self.fail(msg)
        m = re.compile(r"\?([A-Za-z]*)(?:-([A-Za-z]*))?([:)])").match(src, j)
        if not m or (m[2] is not None and not m[2]):
            self.fail("invalid or unsupported Perl syntax after '('")
        on, off = m[1], m[2] or ""
        for f in on + off:
            if f == "U":
                self.fail("(?U) (ungreedy) has no Python equivalent")
            if f not in "ims":
                self.fail(f"RE2 has no flag {f!r}")
        new_flags = (flags | set(on)) - set(off)
        spelled = "(?" + on + ("-" + off if off else "") + ":"
        self.i = m.end()
        if m[3] == ":":
            self.frames.append(_Frame(frozenset(new_flags)))
            self.boundary(spelled)
        elif on or off:
            # RE2 lets (?i) change flags mid-group, up to the group's end and across `|`;
            # Python only has scoped (?i:…), closed and reopened around every `|`.
            frame = self.frames[-1]
            frame.flags = frozenset(new_flags)
            frame.reopen.append(spelled)
            self.boundary(spelled)


def to_python(regex: str) -> str:
    """Translate an RE2 regex to a Python regex that matches exactly the same strings.

    Raises ValueError for syntax RE2 lacks and for RE2 syntax Python cannot express
    (`\\pL`, `(?U)`). Spelled out: `\\z`→`\\Z`, `$`→`\\Z` (RE2's `$` never matches before
    a final newline), `\\Q…\\E`, `\\x{…}`, octal, `(?<name>`, mid-group `(?i)`, POSIX
    classes, and RE2's ASCII-only `\\d \\w \\s \\b` (Python's are Unicode-aware).
    """
    return _Translator(regex).run()


@functools.lru_cache(maxsize=8192)
def compile_search(regex: str) -> re.Pattern[str]:
    """The Python pattern whose `.search` answers what sops's unanchored `MatchString` does."""
    translated = to_python(regex)
    try:
        return re.compile(translated)
    except re.error as exc:
        raise ValueError(f"regex {regex!r}: {exc.msg}") from None


def check_re2(regex: str) -> None:
    """Raise ValueError unless `regex` is valid RE2 that sopsctl can also run exactly."""
    compile_search(regex)
