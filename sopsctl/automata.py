"""Exact language reasoning over sops path regexes: coverage and overlap witnesses for lint."""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

from .regexes import MAX_CODEPOINT, PERL_CLASSES, complement, normalize, to_python

__all__ = ["PATHS", "Language", "Unsupported", "intersection_witness", "language", "literal_prefix",
           "uncovered_witness"]

# The method. A regex R denotes, under sops's unanchored search, the strings with a match
# somewhere: the automaton of `.*R.*`, where `^` and `$` are empty moves allowed only at
# offset 0 / only when nothing follows; so anchors anywhere are exact, not just at the ends.
# Paths never contain a newline, so the alphabet is every code point but \n: `.` (with or
# without DOTALL) is then the whole alphabet and multiline anchors are plain ones. Sets of
# characters stay intervals; each deterministic step cuts the code-point range into the
# elementary intervals bounded by the ranges that the states at hand use, which is the exact
# finite alphabet for that step (a refinement of the global one, built on demand).
NEWLINE = 0x0A
UNIVERSE = ((0, NEWLINE - 1), (NEWLINE + 1, MAX_CODEPOINT))
_EPS, _BEGIN, _END = 0, 1, 2  # kinds of empty moves: plain, only at offset 0, only at the end
_MAX_STATES = 50_000
_SEARCH_BUDGET = 200_000
# RE2 semantics (ASCII), which is also how regexes.to_python spells \d \w \s out
_CATEGORIES = {
    sre.CATEGORY_DIGIT: PERL_CLASSES["d"], sre.CATEGORY_NOT_DIGIT: complement(PERL_CLASSES["d"]),
    sre.CATEGORY_WORD: PERL_CLASSES["w"], sre.CATEGORY_NOT_WORD: complement(PERL_CLASSES["w"]),
    sre.CATEGORY_SPACE: PERL_CLASSES["s"], sre.CATEGORY_NOT_SPACE: complement(PERL_CLASSES["s"]),
}
_AT_BEGIN = (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING)
_AT_END = (sre.AT_END, sre.AT_END_STRING)
# Witness characters, best first: they end up in lint messages, so prefer path-like ones.
_NICE = "xyzabcdefghijklmnopqrstuvwXYZABCDEFGHIJKLMNOPQRSTUVW0123456789_-.~@+=%,"

Charset = tuple[tuple[int, int], ...]


class Unsupported(Exception):
    """The regex is valid but uses something this module cannot model exactly."""


def _restrict(ranges: Iterable[tuple[int, int]]) -> Charset:
    """`ranges` minus \\n: the alphabet has no newline."""
    return complement(complement(tuple(ranges)) + ((NEWLINE, NEWLINE),))


def _contains(cs: Charset, c: int) -> bool:
    return any(lo <= c <= hi for lo, hi in cs)


class _NFA:
    """Thompson automaton with conditional empty moves for `^` and `$`."""

    def __init__(self) -> None:
        self.eps: list[list[tuple[int, int]]] = []  # (kind, target)
        self.chars: list[list[tuple[Charset, int]]] = []  # (charset, target)

    def new(self) -> int:
        if len(self.eps) >= _MAX_STATES:
            raise Unsupported(f"regex needs more than {_MAX_STATES} automaton states")
        self.eps.append([])
        self.chars.append([])
        return len(self.eps) - 1

    def char(self, cs: Charset) -> tuple[int, int]:
        s, e = self.new(), self.new()
        if cs:
            self.chars[s].append((cs, e))
        return s, e

    def seq(self, items: Iterable[tuple[object, object]]) -> tuple[int, int]:
        start = end = self.new()
        for op, av in items:
            s, e = self.item(op, av)
            self.eps[end].append((_EPS, s))
            end = e
        return start, end

    def item(self, op: object, av: object) -> tuple[int, int]:
        if op is sre.LITERAL:
            return self.char(_restrict([(av, av)]))
        if op is sre.NOT_LITERAL:
            return self.char(_restrict(complement(((av, av),))))
        if op is sre.ANY:
            return self.char(UNIVERSE)
        if op is sre.IN:
            return self.char(_class(av))
        if op is sre.SUBPATTERN:
            _group, add_flags, _del_flags, sub = av
            if add_flags & re.IGNORECASE:
                raise Unsupported("case-insensitive (?i) matching is not modelled")
            return self.seq(sub)
        if op is sre.BRANCH:
            s, e = self.new(), self.new()
            for sub in av[1]:
                a, b = self.seq(sub)
                self.eps[s].append((_EPS, a))
                self.eps[b].append((_EPS, e))
            return s, e
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):  # laziness changes spans, not languages
            lo, hi, sub = av
            start = end = self.new()
            for _ in range(lo):
                a, b = self.seq(sub)
                self.eps[end].append((_EPS, a))
                end = b
            if hi == sre.MAXREPEAT:
                loop = self.new()
                a, b = self.seq(sub)
                self.eps[end].append((_EPS, loop))
                self.eps[loop].append((_EPS, a))
                self.eps[b].append((_EPS, loop))
                return start, loop
            for _ in range(hi - lo):
                a, b = self.seq(sub)
                nxt = self.new()
                self.eps[end] += [(_EPS, a), (_EPS, nxt)]
                self.eps[b].append((_EPS, nxt))
                end = nxt
            return start, end
        if op is sre.AT and av in _AT_BEGIN + _AT_END:
            s, e = self.new(), self.new()
            self.eps[s].append((_BEGIN if av in _AT_BEGIN else _END, e))
            return s, e
        raise Unsupported(f"regex construct {op} {av if op is sre.AT else ''} is not modelled".strip())


def _class(items: list[tuple[object, object]]) -> Charset:
    ranges: list[tuple[int, int]] = []
    negate = False
    for op, av in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            ranges.append((av, av))
        elif op is sre.RANGE:
            ranges.append(av)
        elif op is sre.CATEGORY and av in _CATEGORIES:
            ranges += _CATEGORIES[av]
        else:
            raise Unsupported(f"character class item {op} {av} is not modelled")
    return _restrict(complement(normalize(ranges)) if negate else ranges)


class Language:
    """The set of newline-free strings in which `regex` matches somewhere (sops's search).

    Built as an automaton whose deterministic states are made on demand and kept, so the
    same Language (language() caches them) gets faster with every comparison.
    """

    def __init__(self, regex: str, nfa: _NFA, start: int, final: int):
        self.regex, self._nfa, self._final = regex, nfa, final
        self._live = self._co_reachable()
        self._universal = frozenset(self._universal_states())
        self._ids: dict[tuple[frozenset[int], bool], int] = {}
        self._sets: list[frozenset[int]] = []
        self.accepting: list[bool] = []
        self.universal: list[bool] = []  # every non-empty extension is in the language
        self._steps: list[tuple[list[int], list[int]] | None] = []
        self._intern(frozenset(), False)  # state 0: dead
        self.start = self._intern(*self._closure([start], at_start=True))

    def _co_reachable(self) -> set[int]:
        """States from which the final state can be reached without a `^` move: after a
        character has been read, `^` can never hold again."""
        back: list[list[int]] = [[] for _ in self._nfa.eps]
        for s, (eps, chars) in enumerate(zip(self._nfa.eps, self._nfa.chars, strict=True)):
            for t in [t for kind, t in eps if kind != _BEGIN] + [t for _, t in chars]:
                back[t].append(s)
        live, todo = {self._final}, [self._final]
        while todo:
            for s in back[todo.pop()]:
                if s not in live:
                    live.add(s)
                    todo.append(s)
        return live

    def _closure(self, seeds: Iterable[int], at_start: bool) -> tuple[frozenset[int], bool]:
        """The live character-reading states reachable by empty moves, and whether the final
        state is; a `$` move means no character may follow, so it only leads to acceptance."""
        todo = [(s, False) for s in seeds]
        seen = set(todo)
        reading, accept = set(), False
        while todo:
            s, at_end = todo.pop()
            accept |= s == self._final
            if not at_end and self._nfa.chars[s] and s in self._live:
                reading.add(s)
            for kind, t in self._nfa.eps[s]:
                if kind == _BEGIN and not at_start:
                    continue
                nxt = (t, at_end or kind == _END)
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(reading), accept

    def _universal_states(self) -> Iterable[int]:
        """Reading states that loop back to themselves on any character into an accepting
        closure (`.*` at the end of an unanchored regex): everything after them matches."""
        for s in self._live:
            for cs, t in self._nfa.chars[s]:
                if cs == UNIVERSE:
                    reading, accept = self._closure([t], at_start=False)
                    if accept and s in reading:
                        yield s

    def _intern(self, states: frozenset[int], accept: bool) -> int:
        universal = states & self._universal
        if universal:  # one universal state says it all: keep the state space small
            states = frozenset([min(universal)])
        key = (states, accept)
        found = self._ids.get(key)
        if found is not None:
            return found
        self._ids[key] = len(self._sets)
        self._sets.append(states)
        self.accepting.append(accept)
        self.universal.append(bool(universal))
        self._steps.append(None)
        return len(self._sets) - 1

    def has_future(self, d: int) -> bool:
        return bool(self._sets[d])

    def step(self, d: int) -> tuple[list[int], list[int]]:
        """Deterministic moves from state `d`: `succ[i]` for characters from `bounds[i]` up
        to the next bound (the last runs to U+10FFFF); \\n always leads to state 0."""
        cached = self._steps[d]
        if cached is not None:
            return cached
        moves = [m for s in self._sets[d] for m in self._nfa.chars[s]]
        cuts = {0, NEWLINE, NEWLINE + 1}
        for cs, _ in moves:
            for lo, hi in cs:
                cuts.add(lo)
                if hi < MAX_CODEPOINT:
                    cuts.add(hi + 1)
        bounds: list[int] = []
        succ: list[int] = []
        for c in sorted(cuts):
            targets = [t for cs, t in moves if _contains(cs, c)]
            nxt = self._intern(*self._closure(targets, at_start=False)) if targets else 0
            if not succ or succ[-1] != nxt:
                bounds.append(c)
                succ.append(nxt)
        self._steps[d] = (bounds, succ)
        return bounds, succ

    def accepts(self, text: str) -> bool:
        """Whether sops's search for this regex matches `text` (which has no newline)."""
        if "\n" in text:
            raise ValueError("paths never contain a newline; languages exclude it")
        d = self.start
        for ch in text:
            if not self._sets[d]:
                return False
            bounds, succ = self.step(d)
            d = succ[bisect_right(bounds, ord(ch)) - 1]
        return self.accepting[d]

    def __repr__(self) -> str:
        return f"Language({self.regex!r})"


@functools.lru_cache(maxsize=8192)
def language(regex: str) -> Language:
    """The language of an RE2 `path_regex` under sops's unanchored search ('' = catch-all).

    Raises ValueError if the regex is not valid, portable RE2 (see regexes.check_re2), and
    Unsupported for what is not modelled: (?i), \\b, and Python-side extras.
    """
    parsed = _parse(regex)
    nfa = _NFA()
    body_start, body_end = nfa.seq(parsed)
    # An unanchored search is `.*R.*`; anchors inside R then prune the loops exactly.
    start, final = nfa.new(), nfa.new()
    nfa.eps[start].append((_EPS, body_start))
    nfa.chars[start].append((UNIVERSE, start))
    tail = nfa.new()
    nfa.eps[body_end].append((_EPS, tail))
    nfa.chars[tail].append((UNIVERSE, tail))
    nfa.eps[tail].append((_EPS, final))
    return Language(regex, nfa, start, final)


def _parse(regex: str) -> list[tuple[object, object]]:
    translated = to_python(regex)
    try:
        parsed = sre_parse.parse(translated)
    except re.error as exc:
        raise ValueError(f"regex {regex!r}: {exc.msg}") from None
    if parsed.state.flags & re.IGNORECASE:
        raise Unsupported("case-insensitive (?i) matching is not modelled")
    return list(parsed)


def literal_prefix(regex: str) -> str:
    """The literal text every match of an anchored `^…` regex starts with ('' otherwise):
    two languages whose prefixes are not prefixes of one another do not intersect."""
    items = _parse(regex)
    if not items or items[0] not in ((sre.AT, sre.AT_BEGINNING), (sre.AT, sre.AT_BEGINNING_STRING)):
        return ""
    return _literal_run(items[1:])[0]


def _literal_run(items: Iterable[tuple[object, object]]) -> tuple[str, bool]:
    """The literal characters `items` start with, and whether that is all of them; looks
    into groups, so `^(?:secrets/a|secrets/b)$` (sre hoists `secrets/`) gives `secrets/`."""
    out = []
    for op, av in items:
        if op is sre.LITERAL:
            out.append(chr(av))
            continue
        if op is sre.SUBPATTERN and not av[1] & re.IGNORECASE:
            text, whole = _literal_run(av[3])
            out.append(text)
            if whole:
                continue
        return "".join(out), False
    return "".join(out), True


@functools.lru_cache(maxsize=4096)
def _nice(lo: int, hi: int) -> tuple[int, str]:
    """The best character in [lo, hi] to show, with its rank (lower is nicer)."""
    for rank, ch in enumerate(_NICE):
        if lo <= ord(ch) <= hi:
            return rank, ch
    if max(lo, 0x21) <= min(hi, 0x7E):
        return len(_NICE), chr(max(lo, 0x21))
    for c in range(lo, min(hi, lo + 0x3000) + 1):
        ch = chr(c)
        if ch.isprintable() and not 0xD800 <= c <= 0xDFFF:
            return len(_NICE) + 1, ch
    return len(_NICE) + 2, chr(lo if not 0xD800 <= lo <= 0xDFFF else min(hi, 0xE000))


def _search(accept: Sequence[Language], reject: Sequence[Language]) -> str | None:
    """A shortest string in every `accept` language and in no `reject` one, by breadth-first
    search over the product of their (lazily determinised) automata."""
    start = (
        tuple(lang.start for lang in accept),
        frozenset((k, lang.start) for k, lang in enumerate(reject) if lang.start),
    )
    parent: dict[object, tuple[object, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        a_states, r_states = node
        if all(lang.accepting[d] for lang, d in zip(accept, a_states, strict=True)) and not any(
            reject[k].accepting[d] for k, d in r_states
        ):
            out, step = [], parent[node]
            while step is not None:
                out.append(step[1])
                step = parent[step[0]]
            return "".join(reversed(out))
        if not all(lang.has_future(d) for lang, d in zip(accept, a_states, strict=True)):
            continue
        if any(reject[k].universal[d] for k, d in r_states):
            continue  # every extension is covered
        a_moves = [lang.step(d) for lang, d in zip(accept, a_states, strict=True)]
        r_moves = [(k, reject[k].step(d)) for k, d in r_states if reject[k].has_future(d)]
        cuts = sorted({c for bounds, _ in a_moves for c in bounds}.union(
            *(bounds for _, (bounds, _) in r_moves)
        ))
        children: dict[object, tuple[int, str]] = {}  # each new node, by its nicest character
        for i, lo in enumerate(cuts):
            if lo == NEWLINE:
                continue
            a_next = tuple(succ[bisect_right(bounds, lo) - 1] for bounds, succ in a_moves)
            if 0 in a_next:
                continue
            r_next = frozenset(
                (k, d) for k, (bounds, succ) in r_moves if (d := succ[bisect_right(bounds, lo) - 1])
            )
            child = (a_next, r_next)
            if child not in parent:
                nice = _nice(lo, cuts[i + 1] - 1 if i + 1 < len(cuts) else MAX_CODEPOINT)
                children[child] = min(children.get(child, nice), nice)
        for child, (_, ch) in sorted(children.items(), key=lambda item: item[1]):
            parent[child] = (node, ch)
            queue.append(child)
        if len(parent) > _SEARCH_BUDGET:
            raise Unsupported(f"search over more than {_SEARCH_BUDGET} states")
    return None


# A segment of a cleaned relative path: not empty, not `.` or `..`, no NUL, no `/`.
_SEGMENT = r"(?:[^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)"
PATHS = language(f"^{_SEGMENT}(?:/{_SEGMENT})*$")


def uncovered_witness(
    target: Language, earlier: Sequence[Language], *, paths_only: bool = True
) -> str | None:
    """A shortest string in `target` that no language in `earlier` contains, or None when
    the earlier languages together cover `target` (first match wins: it is unreachable).

    With `paths_only` (the default) only well-formed relative paths count: non-empty
    `/`-separated segments, none `.` or `..`, no NUL: what sops matches for a file inside
    the repository. Letters are preferred in the witness (`x` first).
    """
    return _search([target, PATHS] if paths_only else [target], list(earlier))


def intersection_witness(a: Language, b: Language, *, paths_only: bool = True) -> str | None:
    """A shortest string both languages contain (a path both rules match), or None."""
    return _search([a, b, PATHS] if paths_only else [a, b], [])
