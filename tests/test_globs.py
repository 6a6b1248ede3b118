"""Tests for sopsctl.globs: glob → anchored RE2 regex, against an independent reference matcher."""

from __future__ import annotations

import random
import re
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl.globs import escape_glob_literal, glob_to_regex, validate_glob
from sopsctl.regexes import check_re2, compile_search

# --- a reference matcher: brace expansion, then segment-wise fnmatch ---------------------

_GLOBSTAR = "\x00"  # stands for a `**` written as a whole segment, before brace expansion


def _split_top(text: str) -> tuple[str, list[str], str] | None:
    """(before, alternatives, after) for the first top-level {…} in text, or None."""
    start = text.find("{")
    if start < 0:
        return None
    depth, alts, cur = 0, [], start + 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                alts.append(text[cur:i])
                return text[:start], alts, text[i + 1 :]
        elif text[i] == "," and depth == 1:
            alts.append(text[cur:i])
            cur = i + 1
    raise AssertionError(f"unbalanced test glob {text!r}")


def brace_expand(text: str) -> list[str]:
    split = _split_top(text)
    if split is None:
        return [text]
    before, alts, after = split
    return [before + x + y for alt in alts for x in brace_expand(alt) for y in brace_expand(after)]


def _segments_match(globs: list[str], parts: list[str]) -> bool:
    if not globs:
        return not parts
    head, rest = globs[0], globs[1:]
    if head == _GLOBSTAR:
        least = 1 if not rest else 0  # a trailing `**` is "everything below", not the folder
        return any(_segments_match(rest, parts[i:]) for i in range(least, len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _segments_match(rest, parts[1:])


def _mark_globstars(glob: str) -> str:
    return "/".join(_GLOBSTAR if seg == "**" else seg for seg in glob.split("/"))


def reference_match(glob: str, path: str) -> bool:
    return any(
        _segments_match(g.split("/"), path.split("/")) for g in brace_expand(_mark_globstars(glob))
    )


def sample_path(glob: str, rnd: random.Random) -> str:
    """A path the glob matches: pick a brace reading, then fill in each wildcard."""
    reading = rnd.choice(brace_expand(_mark_globstars(glob)))
    out: list[str] = []
    segments = reading.split("/")
    for n, seg in enumerate(segments):
        if seg == _GLOBSTAR:
            least = 1 if n == len(segments) - 1 else 0
            out += ["".join(rnd.choices("ab.", k=rnd.randint(1, 2))) for _ in range(rnd.randint(least, 2))]
            continue
        text, i = [], 0
        while i < len(seg):
            c = seg[i]
            if c == "*":
                text.append("".join(rnd.choices("ab.c", k=rnd.randint(0, 2))))
            elif c == "?":
                text.append(rnd.choice("ab.c"))
            elif c == "[":
                end = seg.index("]", i + 2)
                text.append(rnd.choice([m for m in "abc.xy" if fnmatchcase(m, seg[i : end + 1])]))
                i = end
            else:
                text.append(c)
            i += 1
        out.append("".join(text))
    return "/".join(out)


def _mutate(path: str, rnd: random.Random) -> str:
    """A path one edit away from `path`: where globs and regexes most often disagree."""
    i = rnd.randint(0, len(path))
    c = rnd.choice("/ab.c")
    return rnd.choice([path[:i] + c + path[i:], path[:i] + c + path[i + 1 :], path[:i] + path[i + 1 :]])


# --- strategies ----------------------------------------------------------------------------

_LITERALS = st.sampled_from(["a", "b", "a.", ".b", "c"])
_WILDCARDS = st.sampled_from(["*", "?", "[ab]", "[!a]", "[a-c]", "[!.]"])


def _pieces(depth: int) -> st.SearchStrategy[str]:
    piece = st.one_of(_LITERALS, _LITERALS, _WILDCARDS)
    if depth > 0:
        alternative = st.lists(_pieces(depth - 1), min_size=1, max_size=2).map("/".join)
        piece = st.one_of(piece, st.lists(alternative, min_size=1, max_size=3).map(lambda a: "{" + ",".join(a) + "}"))
    # adjacent `*` pieces would spell a `**` that is not a whole segment: a different test
    return st.lists(piece, min_size=1, max_size=3).map("".join).filter(lambda s: "**" not in s)


def count_readings(text: str) -> int:
    split = _split_top(text)
    if split is None:
        return 1
    _, alts, after = split
    return sum(map(count_readings, alts)) * count_readings(after)


segment = st.one_of(st.just("**"), _pieces(2), _pieces(1), _pieces(0))
# glob_to_regex refuses more than 1024 brace readings; stay well below, for speed too
globs = st.lists(segment, min_size=1, max_size=4).map("/".join).filter(lambda g: count_readings(g) <= 64)
path_segments = st.text(alphabet="abc.", min_size=1, max_size=3)
paths = st.lists(path_segments, min_size=1, max_size=4).map("/".join)


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(glob=globs, candidates=st.lists(paths, max_size=8), rnd=st.randoms(use_true_random=False))
def test_glob_regex_agrees_with_reference_matcher(glob: str, candidates: list[str], rnd: random.Random) -> None:
    regex = glob_to_regex(glob)
    assert regex.startswith("^") and regex.endswith("$")
    check_re2(regex)
    samples = [sample_path(glob, rnd) for _ in range(4)]
    for path in samples:
        assert reference_match(glob, path), (glob, path)
    near_misses = [_mutate(path, rnd) for path in samples for _ in range(3)]
    for path in samples + near_misses + candidates:
        expected = reference_match(glob, path)
        assert bool(re.fullmatch(regex, path)) is expected, (glob, regex, path)
        assert bool(compile_search(regex).search(path)) is expected, (glob, regex, path)


@settings(deadline=None)
@given(name=st.text(alphabet="ab.-_*?[]{},!^$()+|~ é", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")))
def test_escaped_literal_matches_exactly_itself(name: str) -> None:
    escaped = escape_glob_literal(name)
    regex = glob_to_regex(f"secrets/{escaped}/*.yaml")
    check_re2(regex)
    assert compile_search(regex).search(f"secrets/{name}/x.yaml")
    assert not compile_search(regex).search(f"secrets/{name}x/x.yaml")
    assert not compile_search(regex).search(f"secrets/x{name}/x.yaml")


# --- examples ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "regex"),
    [
        ("secrets/hosts/stibnite/**", r"^secrets/hosts/stibnite/.*$"),
        ("secrets/*.yaml", r"^secrets/[^/]*\.yaml$"),
        ("secrets/shared.yaml", r"^secrets/shared\.yaml$"),
        ("**", r"^.*$"),
        ("**/*.yaml", r"^(?:.*/)?[^/]*\.yaml$"),
        ("a/**/b", r"^a/(?:.*/)?b$"),
        ("secrets/{a,b}/?.json", r"^secrets/(?:a|b)/[^/]\.json$"),
        ("x/[!.]*", r"^x/[^./][^/]*$"),
        ("x/[a-c][]]", r"^x/[a-c]\]$"),
        ("x/{a,{b,c*}}", r"^x/(?:a|(?:b|c[^/]*))$"),
        ("x/{only}", r"^x/only$"),
        ("x/a{b,}", r"^x/a(?:b|)$"),
        ("{a/**,c}", r"^(?:a/.*|c)$"),
        ("a+b (1)|$^#", r"^a\+b \(1\)\|\$\^#$"),
        ("x/[*][?]", r"^x/\*\?$"),
    ],
)
def test_readable_output(glob: str, regex: str) -> None:
    assert glob_to_regex(glob) == regex
    check_re2(regex)


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/xb", False),
        ("a/**", "a/x", True),
        ("a/**", "a/x/y/z", True),
        ("a/**", "a", False),  # everything below a/, not a itself
        ("a/**", "ab/x", False),
        ("**/x.yaml", "x.yaml", True),
        ("**/x.yaml", "a/b/x.yaml", True),
        ("**/x.yaml", "a/bx.yaml", False),
        ("**", "anything/at/all", True),
        ("secrets/*", "secrets/.hidden", True),  # dotfiles included
        ("secrets/*", "secrets/a/b", False),
        ("secrets/?", "secrets//", False),
        ("x/[!a]", "x//", False),  # a negated class never matches /
        ("x/[!a]", "x/b", True),
        ("x/[!a]", "x/a", False),
        ("{a,b}/*", "b/c", True),
        ("{a,b}/*", "c/c", False),
        ("{a/**,c}", "a/x/y", True),
        ("{a/**,c}", "c", True),
        ("{**/a,b}", "x/y/a", True),
        ("secrets/shared.yaml", "secrets/sharedxyaml", False),
    ],
)
def test_matching(glob: str, path: str, matches: bool) -> None:
    assert bool(compile_search(glob_to_regex(glob)).search(path)) is matches
    if not ("{" in glob and "**" in glob):  # the reference only knows top-level `**`
        assert reference_match(glob, path) is matches


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("", "empty glob"),
        ("/etc/x", "absolute path"),
        ("a//b", "empty path segment"),
        ("a/", "trailing '/'"),
        ("./a", "'.' and '..'"),
        ("a/../b", "'.' and '..'"),
        ("a/{.,b}/c", "'.' and '..'"),
        ("{a,}/b", "absolute path"),
        ("a\\*", "backslashes"),
        ("a/{}", "empty alternatives group"),
        ("a/{b", "unbalanced '{'"),
        ("a/b}", "unbalanced '}'"),
        ("a/[bc", "unbalanced '['"),
        ("a/[!", "unbalanced '['"),
        ("a/[]", "unbalanced '['"),
        ("a/[z-a]", "reversed range"),
        ("a/[/x]", "would match '/'"),
        ("a/[.-9]", "would match '/'"),
        ("a/***", "'***'"),
        ("a**", "whole path segment"),
        ("a/**.yaml", "whole path segment"),
        ("x{**,y}", "whole path segment"),
        ("{a/**,c}x", "whole path segment"),
        ("{,}", "empty path"),
        ("{a,b}" * 11, "brace alternatives"),
    ],
)
def test_invalid_globs(glob: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_glob(glob)
    with pytest.raises(ValueError):
        glob_to_regex(glob)


@pytest.mark.parametrize("glob", ["secrets/**", "a/{b,c}/[!x]?*.yaml", "x/[]]", "{a,b}/**/c"])
def test_valid_globs_pass_validation(glob: str) -> None:
    assert validate_glob(glob) is None


def test_escape_glob_literal() -> None:
    assert escape_glob_literal("web-01") == "web-01"
    assert escape_glob_literal("a[b]{c,d}*?") == "a[[]b[]][{]c[,]d[}][*][?]"
    with pytest.raises(ValueError, match="backslash"):
        escape_glob_literal("a\\b")
    with pytest.raises(ValueError, match="'.' and '..'"):  # `..` is kept, so still refused
        glob_to_regex(f"secrets/{escape_glob_literal('..')}/x")
