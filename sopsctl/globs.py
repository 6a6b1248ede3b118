"""Policy path globs: validate them and compile them to anchored, RE2-compatible path regexes."""

from __future__ import annotations

import functools

__all__ = ["escape_glob_literal", "glob_to_regex", "validate_glob"]

# Outside a class these characters mean something to a glob; a name is escaped by
# bracketing them (`*` → `[*]`), since globs have no backslash escapes.
_GLOB_SPECIAL = frozenset("*?[]{},")
# Regex metacharacters; both RE2 and Python read each of them backslash-escaped as itself,
# and leave every other character (`/`, `-`, `#`, space, non-ASCII…) literal unescaped.
_RE_SPECIAL = frozenset("\\.+*?()|[]{}^$")
# Inside a regex class these need a backslash in both dialects (`&~|` only quiet Python's
# warnings about future set syntax).
_CLASS_SPECIAL = frozenset("\\]^-[&~|")
_MAX_EXPANSIONS = 1024

# The glob tree: a sequence is a list of nodes, each a tuple whose first item is its kind:
#   ("lit", ch) · ("star",) · ("globstar", column) · ("any",)
#   ("class", negated, ((lo, hi), …)) · ("alt", [sequence, …])
_Node = tuple
_SLASH = ("lit", "/")


class _Parser:
    def __init__(self, glob: str):
        self.glob, self.i = glob, 0

    def error(self, msg: str, col: int) -> ValueError:
        return ValueError(f"glob {self.glob!r}: {msg} (column {col + 1})")

    def sequence(self, depth: int) -> list[_Node]:
        glob, out = self.glob, []
        while self.i < len(glob):
            c = glob[self.i]
            if depth and c in ",}":
                break
            if c == "}":
                raise self.error("unbalanced '}' (write [}] for a literal brace)", self.i)
            if c == "{":
                out.append(self.group(depth))
            elif c == "[":
                out.append(self.char_class())
            elif c == "*":
                end = self.i
                while end < len(glob) and glob[end] == "*":
                    end += 1
                if end - self.i > 2:
                    raise self.error("'***' means nothing; use '*' (one segment) or '**' (any depth)", self.i)
                out.append(("star",) if end - self.i == 1 else ("globstar", self.i))
                self.i = end
            else:
                out.append(("any",) if c == "?" else ("lit", c))
                self.i += 1
        return out

    def group(self, depth: int) -> _Node:
        start = self.i
        self.i += 1
        alternatives = [self.sequence(depth + 1)]
        while self.i < len(self.glob) and self.glob[self.i] == ",":
            self.i += 1
            alternatives.append(self.sequence(depth + 1))
        if self.i >= len(self.glob):
            raise self.error("unbalanced '{'", start)
        self.i += 1
        if alternatives == [[]]:
            raise self.error("empty alternatives group '{}'", start)
        return ("alt", alternatives)

    def char_class(self) -> _Node:
        glob, start = self.glob, self.i
        self.i += 1
        negated = glob.startswith("!", self.i)
        self.i += negated
        ranges: list[tuple[str, str]] = []
        while True:
            if self.i >= len(glob):
                raise self.error("unbalanced '['", start)
            lo = glob[self.i]
            if lo == "]" and ranges:  # a `]` right after `[` or `[!` is a member
                self.i += 1
                break
            hi = lo
            if self.i + 2 < len(glob) and glob[self.i + 1] == "-" and glob[self.i + 2] != "]":
                hi = glob[self.i + 2]
                if hi < lo:
                    raise self.error(f"reversed range '{lo}-{hi}'", self.i)
                self.i += 2
            self.i += 1
            ranges.append((lo, hi))
        if not negated and any(lo <= "/" <= hi for lo, hi in ranges):
            raise self.error(f"class {glob[start:self.i]} would match '/', which separates segments", start)
        return ("class", negated, tuple(ranges))


def _expand(seq: list[_Node]) -> list[tuple[_Node, ...]]:
    """Every brace-free reading of `seq` (wildcards kept as nodes), for the segment checks."""
    results: list[tuple[_Node, ...]] = [()]
    for node in seq:
        if node[0] == "alt":
            options = [x for alt in node[1] for x in _expand(alt)]
            results = [r + o for r in results for o in options]
        else:
            results = [r + (node,) for r in results]
        if len(results) > _MAX_EXPANSIONS:
            raise ValueError(f"more than {_MAX_EXPANSIONS} brace alternatives (too many to check)")
    return results


def _check_segments(glob: str, tokens: tuple[_Node, ...]) -> None:
    if not tokens:
        raise ValueError(f"glob {glob!r}: matches only the empty path")
    if tokens[0] == _SLASH:
        raise ValueError(f"glob {glob!r}: absolute path; paths are relative to the directory of .sops.yaml")
    segments: list[list[_Node]] = [[]]
    for node in tokens:
        if node == _SLASH:
            segments.append([])
        else:
            segments[-1].append(node)
    if not segments[-1]:
        raise ValueError(f"glob {glob!r}: trailing '/'; write '…/**' for everything under a folder")
    for seg in segments:
        if not seg:
            raise ValueError(f"glob {glob!r}: empty path segment ('//')")
        if seg in ([("lit", ".")], [("lit", ".")] * 2):
            raise ValueError(f"glob {glob!r}: '.' and '..' segments are not allowed (sops matches cleaned paths)")


def _regex_char(ch: str, in_class: bool = False) -> str:
    return "\\" + ch if ch in (_CLASS_SPECIAL if in_class else _RE_SPECIAL) else ch


def _emit(glob: str, seq: list[_Node], at_start: bool, at_end: bool) -> str:
    """Regex text for `seq`; `at_start`/`at_end`: nothing of the glob comes before/after it."""
    parts, k = [], 0
    while k < len(seq):
        node, kind = seq[k], seq[k][0]
        if kind == "globstar":
            # `**` is a whole segment: after `/` or the glob's start, before `/` or its end
            whole = (k == 0 and at_start) or (k > 0 and seq[k - 1] == _SLASH)
            if whole and k + 1 < len(seq) and seq[k + 1] == _SLASH:
                parts.append("(?:.*/)?")  # `**/` may match nothing
                k += 2
                continue
            if whole and k + 1 == len(seq) and at_end:
                parts.append(".*")  # a trailing `**`: everything below, at any depth
                k += 1
                continue
            raise ValueError(
                f"glob {glob!r}: '**' must be a whole path segment (column {node[1] + 1}); "
                "write e.g. '**/*.yaml' for files at any depth"
            )
        if kind == "lit":
            parts.append(_regex_char(node[1]))
        elif kind == "star":
            parts.append("[^/]*")
        elif kind == "any":
            parts.append("[^/]")
        elif kind == "class":
            negated, ranges = node[1], node[2]
            if not negated and len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
                parts.append(_regex_char(ranges[0][0]))  # `[*]`: a bracketed literal
            else:
                body = "".join(
                    _regex_char(lo, True) + ("-" + _regex_char(hi, True) if hi != lo else "")
                    for lo, hi in ranges
                )
                parts.append(f"[^{body}/]" if negated else f"[{body}]")
        else:  # alternation: the alternatives inherit whether they start or end the glob
            first, last = k == 0 and at_start, k == len(seq) - 1 and at_end
            inner = [_emit(glob, alt, first, last) for alt in node[1]]
            parts.append(inner[0] if len(inner) == 1 else "(?:" + "|".join(inner) + ")")
        k += 1
    return "".join(parts)


@functools.lru_cache(maxsize=4096)
def glob_to_regex(glob: str) -> str:
    """Compile a policy path glob to an anchored RE2 (and Python) regex `^…$`.

    `*` any run of characters but `/` (dotfiles included); `?` one character but `/`;
    `[abc]` `[a-z]` `[!abc]` (a class never matches `/`; `]` first is a member);
    `{a,b}` alternation (nested, alternatives may hold wildcards and `/`); `**` only as a
    whole path segment: `a/**/b` matches `a/b` and `a/x/y/b` (`**/` may match nothing),
    a trailing `a/**` everything below `a/` at any depth (not `a` itself), and `**`
    alone every path. Everything else is literal. Raises ValueError (see validate_glob).
    """
    if not glob:
        raise ValueError("empty glob")
    if "\\" in glob:
        raise ValueError(f"glob {glob!r}: backslashes are not allowed (write [*] for a literal '*')")
    parser = _Parser(glob)
    seq = parser.sequence(0)
    for tokens in _expand(seq):
        _check_segments(glob, tokens)
    return "^" + _emit(glob, seq, True, True) + "$"


def validate_glob(glob: str) -> None:
    """Raise ValueError with a one-line reason if `glob` is not a usable policy path glob:
    unbalanced `[` `{` `}`, `{}`, a leading `/`, `.`/`..` or empty segments (in any brace
    reading), backslashes, `***`, `**` that is not a whole segment, a class matching `/`."""
    glob_to_regex(glob)


def escape_glob_literal(name: str) -> str:
    """A glob matching exactly `name` (an entity name substituted into a template).

    `*?[]{},` are bracketed (`[` → `[[]`); `.` and `/` stay as they are, so a name such as
    `..` still fails validation. Raises ValueError for a backslash, which globs cannot hold.
    """
    if "\\" in name:
        raise ValueError(f"{name!r}: a name with a backslash cannot appear in a path glob")
    return "".join(f"[{c}]" if c in _GLOB_SPECIAL else c for c in name)
