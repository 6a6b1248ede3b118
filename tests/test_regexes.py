"""Tests for sopsctl.regexes: RE2 validation and the RE2 → Python translation keep sops's answers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl.regexes import check_re2, compile_search, to_python


@pytest.mark.parametrize(
    ("re2", "python"),
    [
        (r"^secrets/[^/]*\.yaml$", r"^secrets/[^/]*\.yaml\Z"),
        (r"a\z", r"a\Z"),
        (r"\Aa", r"\Aa"),
        (r"\Qa.b*\E+", r"a\.b\*+"),
        (r"\Qa.b", r"a\.b"),  # \Q runs to the end without \E
        (r"(?P<n>x)", r"(?P<n>x)"),
        (r"(?<n>x)", r"(?P<n>x)"),
        (r"a(?i)b|c", r"a(?i:b)|(?i:c)"),
        (r"(a(?s).)b", r"(a(?s:.))b"),
        (r"(?i)abc", r"(?i:abc)"),
        (r"(?m)^a$", r"(?m:^a$)"),
        (r"(?i:a)$", r"(?i:a)\Z"),
        (r"\x{263a}\x41\101\0", "☺AA\\x00"),
        (r"x{,2}", r"x\{,2\}"),  # not a repeat in RE2; Python would read {0,2}
        (r"a{2,}?b{3}", r"a{2,}?b{3}"),
        (r"\d\W\s", r"[0-9][^0-9A-Z_a-z][\t\n\f\r ]"),
        (r"[[:alpha:]\d-]", r"[\-0-9A-Za-z]"),
        (r"[^[:^digit:]]", r"[^\x00-/:-\U0010ffff]"),
        (r"[]a]", r"[\]a]"),
        (r"[&&a]", r"[\&a]"),
        (r"\bfoo", r"(?a:\b)foo"),
        (r"a]b}", r"a\]b\}"),
        ("", ""),
        (r"(?:)|", r"(?:)|"),
    ],
)
def test_to_python(re2: str, python: str) -> None:
    assert to_python(re2) == python
    re.compile(python)
    check_re2(re2)


@pytest.mark.parametrize(
    ("regex", "message"),
    [
        (r"(?=a)", "look-ahead"),
        (r"(?!a)", "look-ahead"),
        (r"(?<=a)b", "look-behind"),
        (r"(?<!a)b", "look-behind"),
        (r"(a)\1", "backreference"),
        (r"\9", "backreference"),
        (r"(?P<x>a)(?P=x)", "(?P=name)"),
        (r"(?>a)", "atomic"),
        (r"a*+", "possessive"),
        (r"a++", "possessive"),
        (r"a{2}+", "possessive"),
        (r"a**", "quantifier on a quantifier"),
        (r"a\Z", r"RE2 spells end of text \z"),
        (r"(?(1)a|b)", "conditionals"),
        (r"(?#note)a", "comments"),
        (r"(?U)a+", "(?U)"),
        (r"(?x)a", "no flag"),
        (r"\pL", "Unicode classes"),
        (r"\p{Greek}", "Unicode classes"),
        (r"[\PL]", "Unicode classes"),
        (r"a{1001}", "limits repeat counts"),
        (r"a{3,2}", "min > max"),
        (r"\u0041", r"no escape \u"),
        (r"\e", r"no escape \e"),
        (r"[\b]", r"no escape \b"),
        (r"(a", "missing closing ')'"),
        (r"a)", "unmatched ')'"),
        (r"[a", "missing closing ']'"),
        (r"[z-a]", "reversed"),
        (r"[[:nope:]]", "unknown POSIX class"),
        (r"*a", "missing argument"),
        (r"a|*", "missing argument"),
        (r"^*", "missing argument"),
        (r"\x4", r"invalid \x escape"),
        (r"\x{110000}", r"invalid \x escape"),
        (r"(?P<>a)", "group name"),
        (r"(?-)a", "Perl syntax"),
        ("a\\", "trailing backslash"),
    ],
)
def test_rejected(regex: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_re2(regex)
    with pytest.raises(ValueError):
        compile_search(regex)


@pytest.mark.parametrize(
    ("regex", "text", "matches"),
    [
        # sops's own examples (reference §2): unanchored search
        ("dev", "secrets/dev/a.yaml", True),
        (r"a/b/s\.yaml", "xa/b/s.yaml.bak", True),
        ("^nested", "deep/nested/n.yaml", False),
        # RE2's $ and \z are the end of the text, never before a final newline
        ("a$", "a\n", False),
        (r"a\z", "a\n", False),
        ("(?m)a$", "a\nb", True),
        # RE2's \d \w \s \b are ASCII; Python's would be Unicode
        (r"\d", "٣", False),
        (r"\w", "é", False),
        (r"\s", "\v", False),
        (r"\s", "\t", True),
        (r"x\b", "xé", True),
        (r"[[:space:]]", "\v", True),  # POSIX space does include \v
        # quoting, braces, octal, flags
        (r"\Qa.b\E", "axb", False),
        (r"\Qa.b\E", "a.b", True),
        ("x{,2}", "x{,2}", True),
        ("^x{,2}$", "xx", False),
        (r"^\101$", "A", True),
        (r"^a(?i)b|c$", "C", True),
        (r"^a(?i)b|c$", "aB", True),
        (r"^a(?i)b|c$", "AB", False),
        (r"[^a]", "\n", True),  # RE2 (Perl mode) negated classes match newline, as Python's do
        (".", "\n", False),
    ],
)
def test_search_answers_like_sops(regex: str, text: str, matches: bool) -> None:
    assert bool(compile_search(regex).search(text)) is matches


def test_compile_search_is_cached() -> None:
    assert compile_search(r"^secrets/.*$") is compile_search(r"^secrets/.*$")


@settings(deadline=None)
@given(st.text(min_size=0, max_size=12).filter(lambda s: "\\E" not in s and not s.endswith("\\")))
def test_quoted_text_matches_exactly_itself(text: str) -> None:
    pattern = compile_search("^" + r"\Q" + text + r"\E" + "$")
    assert pattern.fullmatch(text)
    assert not pattern.search(text + "x")


@settings(deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=0x10FFFF).filter(lambda c: not 0xD800 <= c <= 0xDFFF), min_size=1, max_size=4))
def test_hex_escapes_round_trip(codepoints: list[int]) -> None:
    regex = "".join(f"\\x{{{c:x}}}" for c in codepoints)
    text = "".join(map(chr, codepoints))
    assert compile_search("^" + regex + "$").search(text)
    negated = "[^" + regex + "]"
    assert not any(compile_search(negated).fullmatch(ch) for ch in text)
