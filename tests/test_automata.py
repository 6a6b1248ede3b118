"""Tests for sopsctl.automata: languages agree with sops's search, witnesses are exact and shortest."""

from __future__ import annotations

import itertools
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl.automata import (
    PATHS,
    Unsupported,
    intersection_witness,
    language,
    literal_prefix,
    uncovered_witness,
)
from sopsctl.globs import glob_to_regex
from sopsctl.regexes import compile_search
from tests.test_globs import globs

ALPHABET = "abc/.x"


def search(regex: str, text: str) -> bool:
    return bool(compile_search(regex).search(text))


def is_path(text: str) -> bool:
    parts = text.split("/")
    return all(p and p not in (".", "..") and "\x00" not in p for p in parts)


def strings(max_len: int) -> list[str]:
    return ["".join(t) for n in range(max_len + 1) for t in itertools.product(ALPHABET, repeat=n)]


SMALL = strings(4)


def uncovered(target: str, earlier: list[str], text: str, paths_only: bool) -> bool:
    return (not paths_only or is_path(text)) and search(target, text) and not any(search(e, text) for e in earlier)


# --- random RE2 regexes over the characters paths are made of -----------------------------

_CHARS = st.sampled_from(["a", "b", "/", ".", r"\.", "x", "[ab]", "[^a]", "[a-c]", "[^/]", r"\w", r"[^\d/]"])
_QUANTIFIERS = st.sampled_from(["", "", "", "*", "+", "?", "{1,2}", "{0,2}", "{2}", "*?"])


def _alternation(depth: int) -> st.SearchStrategy[str]:
    atom = _CHARS if depth == 0 else st.one_of(_CHARS, _alternation(depth - 1).map(lambda r: f"(?:{r})"))
    piece = st.one_of(st.tuples(atom, _QUANTIFIERS).map("".join), st.sampled_from(["^", "$"]))
    concat = st.lists(st.one_of(piece, atom), min_size=1, max_size=3).map("".join)
    return st.lists(concat, min_size=1, max_size=3).map("|".join)


def _anchored(body: str, start: bool, end: bool) -> str:
    return ("^" if start else "") + (f"(?:{body})" if "|" in body else body) + ("$" if end else "")


regexes = st.builds(_anchored, _alternation(2), st.booleans(), st.booleans())
glob_regexes = globs.map(glob_to_regex)
path_regexes = st.one_of(regexes, glob_regexes)


@settings(max_examples=300, deadline=None)
@given(regex=regexes, texts=st.lists(st.text(alphabet=ALPHABET, max_size=7), max_size=20))
def test_membership_agrees_with_search(regex: str, texts: list[str]) -> None:
    lang = language(regex)
    for text in texts + SMALL[:200]:
        assert lang.accepts(text) is search(regex, text), (regex, text)


@settings(max_examples=150, deadline=None)
@given(target=path_regexes, earlier=st.lists(path_regexes, min_size=1, max_size=3), paths_only=st.booleans())
def test_uncovered_witness_is_exact_and_shortest(target: str, earlier: list[str], paths_only: bool) -> None:
    witness = uncovered_witness(language(target), [language(e) for e in earlier], paths_only=paths_only)
    if witness is not None:
        assert uncovered(target, earlier, witness, paths_only), (target, earlier, witness)
        shorter = [s for s in SMALL if len(s) < len(witness)]
        assert not any(uncovered(target, earlier, s, paths_only) for s in shorter), (target, earlier, witness)
    else:
        assert not any(uncovered(target, earlier, s, paths_only) for s in SMALL), (target, earlier)


@settings(max_examples=150, deadline=None)
@given(a=path_regexes, b=path_regexes)
def test_intersection_witness_is_exact_and_shortest(a: str, b: str) -> None:
    witness = intersection_witness(language(a), language(b))
    both = [s for s in SMALL if is_path(s) and search(a, s) and search(b, s)]
    if witness is None:
        assert both == [], (a, b)
    else:
        assert is_path(witness) and search(a, witness) and search(b, witness)
        assert all(len(s) >= len(witness) for s in both)


@settings(deadline=None)
@given(regex=glob_regexes, other=glob_regexes)
def test_literal_prefix_is_a_prefix_of_every_member(regex: str, other: str) -> None:
    prefix = literal_prefix(regex)
    # at least the literal text the glob starts with (sre may hoist more out of a branch)
    literal = re.match(r"\^((?:\\.|[^\\.^$*+?()\[\]{}|])*)", regex)
    assert literal is not None and prefix.startswith(re.sub(r"\\(.)", r"\1", literal[1]))
    combined = f"^(?:{regex[1:-1]}|{other[1:-1]})$"  # how the engine joins a class's paths
    for r in (regex, combined):
        starts_with_prefix = language(r"^\Q" + literal_prefix(r) + r"\E")
        assert uncovered_witness(language(r), [starts_with_prefix], paths_only=False) is None
        assert all(text.startswith(literal_prefix(r)) for text in SMALL[:259] if search(r, text))


# --- known cases ---------------------------------------------------------------------------


def glob(g: str):  # noqa: ANN201 - a Language
    return language(glob_to_regex(g))


def test_known_coverage() -> None:
    assert uncovered_witness(glob("secrets/a/*.yaml"), [glob("secrets/**")]) is None
    assert uncovered_witness(glob("secrets/a/b.yaml"), [glob("secrets/*.yaml")]) == "secrets/a/b.yaml"
    assert uncovered_witness(glob("secrets/**"), [glob("secrets/*.yaml")]) == "secrets/x"
    assert uncovered_witness(language(r"^secrets/dev/.*$"), [language("dev")]) is None
    assert uncovered_witness(language(r"^secrets/x\.yaml$"), [language(r"\.yaml$")]) is None
    assert uncovered_witness(language(r"^secrets/x\.yml$"), [language(r"\.yaml$")]) == "secrets/x.yml"
    assert uncovered_witness(glob("{a,b}/*"), [glob("a/*"), glob("b/*")]) is None
    assert uncovered_witness(glob("{a,b}/*"), [glob("a/*")]) == "b/x"
    assert uncovered_witness(glob("a/**"), [glob("a/*")]) == "a/x/x"
    assert uncovered_witness(glob("a/**"), [glob("a/*"), glob("a/*/**")]) is None
    assert uncovered_witness(glob("x/[a-c]"), [glob("x/[ab]")]) == "x/c"
    assert uncovered_witness(glob("x/[a-c]"), [glob("x/[ab]"), glob("x/c")]) is None
    assert uncovered_witness(glob("x/[!a]"), [glob("x/[b-z]")]) == "x/X"
    assert uncovered_witness(glob("x/?"), [glob("x/[!.]")]) is None  # "x/." is not a path
    assert uncovered_witness(glob("x/?"), [glob("x/[!.]")], paths_only=False) == "x/."
    assert uncovered_witness(glob("x/*"), [language("")]) is None  # a catch-all covers all
    assert uncovered_witness(language(""), [glob("**")]) is None
    assert uncovered_witness(language(""), [glob("a/**")]) == "x"


def test_known_overlaps() -> None:
    assert intersection_witness(glob("secrets/*.yaml"), glob("**/x*")) == "secrets/x.yaml"
    assert intersection_witness(glob("secrets/a/**"), glob("secrets/b/**")) is None
    assert intersection_witness(glob("secrets/hosts/web/**"), language("web")) == "secrets/hosts/web/x"
    assert intersection_witness(language("^a"), language("^b")) is None


def test_anchors_anywhere() -> None:
    assert uncovered_witness(language("a^b"), [], paths_only=False) is None  # empty language
    assert uncovered_witness(language("(^|/)foo$"), []) == "foo"
    assert language("(^|/)foo$").accepts("a/foo")
    assert not language("(^|/)foo$").accepts("afoo")
    assert not language("a$b").accepts("ab")
    assert language("(?:^a)*b").accepts("aab")  # the search may start at b


def test_paths_language() -> None:
    for good in ["a", "a/b", ".hidden", "a/..x", "...", "é/ü"]:
        assert PATHS.accepts(good), good
    for bad in ["", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", "a\x00"]:
        assert not PATHS.accepts(bad), bad
    with pytest.raises(ValueError, match="newline"):
        PATHS.accepts("a\nb")


def test_literal_prefix() -> None:
    assert literal_prefix(glob_to_regex("secrets/hosts/{a,b}/**")) == "secrets/hosts/"
    assert literal_prefix(glob_to_regex("secrets/x.yaml")) == "secrets/x.yaml"
    assert literal_prefix(r"\Asecrets/a+") == "secrets/"
    assert literal_prefix("secrets/") == ""  # unanchored: may match anywhere
    assert literal_prefix("^a|^b") == ""
    assert literal_prefix("^ab|^ac") == "a"
    assert literal_prefix(r"^(?:secrets/a/.*|secrets/b\.yaml)$") == "secrets/"
    assert literal_prefix(r"^(?:se)(cr)ets/(?:x|y)") == "secrets/"
    assert literal_prefix(r"^a(?i:b)") == "a"
    assert literal_prefix(glob_to_regex("{ab,cd}x")) == ""
    assert literal_prefix(r"^(a|b)c") == ""
    assert literal_prefix(r"^(ab|ac)d") == "a"
    assert literal_prefix(glob_to_regex("a{b,cd}/x")) == "a"


def test_witness_prefers_letters() -> None:
    assert uncovered_witness(glob("[!a-z]"), []) == "X"
    assert uncovered_witness(glob("[!a-zA-Z0-9]"), []) == "_"
    assert uncovered_witness(language(r"^\d$"), []) == "0"


def test_python_categories_mean_what_re2_classes_do() -> None:
    """to_python spells \\d \\w \\s out, but a parsed CATEGORY is read the RE2 (ASCII) way."""
    from re import _parser

    from sopsctl.automata import _class

    charset = _class(_parser.parse(r"[\d\s]")[0][1])
    assert charset == ((0x09, 0x09), (0x0C, 0x0D), (0x20, 0x20), (0x30, 0x39))  # no \n, no \v
    assert _class(_parser.parse(r"[^\W]")[0][1]) == ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))


@pytest.mark.parametrize("regex", [r"\bx", "(?i)secrets/", r"a(?i)b", "x(?i:y)"])
def test_unsupported(regex: str) -> None:
    with pytest.raises(Unsupported):
        language(regex)


@pytest.mark.parametrize("regex", [r"(?=x)", r"(a)\1", "a**", "[a"])
def test_invalid_regex_is_a_value_error(regex: str) -> None:
    with pytest.raises(ValueError):
        language(regex)
    with pytest.raises(ValueError):
        literal_prefix(regex)


def test_many_instances_stay_fast() -> None:
    """Lint compares each templated instance with the ones before it: keep that cheap."""
    language.cache_clear()
    hosts = [f"secrets/hosts/host{i:03d}/**" for i in range(60)]
    langs = [glob(h) for h in hosts]
    began = time.perf_counter()
    for i, lang in enumerate(langs):
        witness = uncovered_witness(lang, langs[:i][-50:])
        assert witness == f"{hosts[i][:-2]}x"
    assert uncovered_witness(glob("secrets/hosts/host007/a.yaml"), langs) is None
    assert uncovered_witness(glob("secrets/**"), [language(re.escape("hosts"))]) == "secrets/x"
    assert time.perf_counter() - began < 5.0  # typically ~30 ms
