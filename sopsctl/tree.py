"""Walk a sops file's document as sops does (read-only, one adapter per format): every leaf, its path, encrypted or not."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml

from . import values as v

SOPS_KEY = "sops"
CRYPT_OPTIONS = ("unencrypted_suffix", "encrypted_suffix", "unencrypted_regex", "encrypted_regex",
                 "unencrypted_comment_regex", "encrypted_comment_regex")
DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"


class TreeError(ValueError):
    """The document cannot be walked the way sops walks it; the message names a line or path, never a value."""


class Comment(NamedTuple):
    """A comment entry of the tree (text after `#`/`;`); comments are never in the MAC."""

    value: str


class Branch(list):  # type: ignore[type-arg]
    """A mapping: (key, value) pairs in document order (a plain list is a YAML/JSON sequence)."""


class Leaf(NamedTuple):
    """One value as sops's walk meets it: clear leaves carry Go-typed values, encrypted ones the stored text."""

    aad: str  # path components joined with ':' plus a trailing ':'
    value: object  # str/bytes/int/float/bool/GoTime when clear; the ENC[…] string (or "", or junk) when encrypted
    encrypted: bool
    type: str  # the Go type of a clear value; the ENC[…] type of an encrypted one ("" when it does not parse)

    @property
    def path(self) -> str:
        """The path for messages (`db:password`); keys are in clear in the file, so naming them leaks nothing."""
        return self.aad[:-1]


# --- which values are encrypted (sops.go shouldBeEncrypted) ---------------------------------------


@dataclass(frozen=True)
class Rules:
    """The file's own crypt option (at most one) and mac_only_encrypted, applied as sops applies them."""

    option: str | None = "unencrypted_suffix"
    argument: str = DEFAULT_UNENCRYPTED_SUFFIX
    mac_only_encrypted: bool = False
    by_form: bool = False  # decide by the value's form (used where comments are not read)

    @classmethod
    def from_options(cls, options: Iterable[tuple[str, object]]) -> Rules:
        """From SopsMetadata.options; `_unencrypted` is assumed when none is set (stores.go ToInternal)."""
        found = dict(options)
        crypt = [(name, str(found[name])) for name in CRYPT_OPTIONS if found.get(name) not in (None, "")]
        if len(crypt) > 1:
            raise TreeError("the metadata sets more than one of " + ", ".join(n for n, _ in crypt)
                            + " (sops refuses such a file)")
        option, argument = crypt[0] if crypt else ("unencrypted_suffix", DEFAULT_UNENCRYPTED_SUFFIX)
        if option.endswith("_regex"):
            from .regexes import compile_search

            try:
                compile_search(argument)
            except ValueError as exc:
                raise TreeError(f"its {option} cannot be evaluated: {exc}") from None
        return cls(option, argument, found.get("mac_only_encrypted") in (True, "true", "True"))

    @property
    def uses_comments(self) -> bool:
        return self.option in ("unencrypted_comment_regex", "encrypted_comment_regex")

    def _search(self, text: str) -> bool:
        from .regexes import compile_search

        return compile_search(self.argument).search(text) is not None

    def encrypted(self, path: tuple[str, ...], stack: list[list[str]], is_comment: bool, value: object) -> bool:
        if self.by_form:
            return v.is_enc(value)
        option, arg = self.option, self.argument
        if option == "unencrypted_suffix":
            return not any(part.endswith(arg) for part in path)
        if option == "encrypted_suffix":
            return any(part.endswith(arg) for part in path)
        if option == "unencrypted_regex":
            return not any(self._search(part) for part in path)
        if option == "encrypted_regex":
            return any(self._search(part) for part in path)
        if option == "unencrypted_comment_regex":
            return not any(self._search(c) for level in stack for c in level)
        if option == "encrypted_comment_regex":
            # The marker comment itself (the last one of the innermost run) stays in clear.
            last = (len(stack) - 1, len(stack[-1]) - 1)
            return any(self._search(c) for i, level in enumerate(stack) for j, c in enumerate(level)
                       if not (is_comment and (i, j) == last))
        return True


# --- the walk (sops.go walkBranch / walkSlice / walkValue) ----------------------------------------


_ITEM = object()  # the "key" of a sequence item: items do not extend the path


def _walk_value(value: object, path: tuple[str, ...], stack: list[list[str]], rules: Rules) -> Iterator[Leaf]:
    if value is None or isinstance(value, Comment):
        return  # nulls are neither encrypted nor hashed; comments are never hashed
    if isinstance(value, list):  # a Branch (mapping) or a sequence
        yield from _walk_container(value, path, stack, rules)
        return
    aad = ":".join(path) + ":"
    if rules.encrypted(path, stack, False, value):
        match = v.match_enc(value) if isinstance(value, str) else None
        yield Leaf(aad, value, True, match.group(4) if match is not None else "")
    else:
        yield Leaf(aad, value, False, v.value_type(value))


def _walk_container(container: list[Any], path: tuple[str, ...], stack: list[list[str]],
                    rules: Rules) -> Iterator[Leaf]:
    stack = [*stack, []]  # a new level; the caller's levels are shared, never changed here
    pairs = container if isinstance(container, Branch) else ((_ITEM, item) for item in container)
    for key, value in pairs:
        comment = key if isinstance(key, Comment) else value if key is _ITEM and isinstance(value, Comment) else None
        if comment is not None:
            stack[-1] = [*stack[-1], comment.value]
            continue
        if key is not _ITEM and not isinstance(key, str):
            shown = ":".join(path) or "the top level"
            raise TreeError(f"a key under {shown} is a {type(key).__name__}, not a string (sops refuses it)")
        yield from _walk_value(value, path if key is _ITEM else (*path, key), stack, rules)
        stack[-1] = []  # a value ends the run of comments before it


def walk(branches: Iterable[Branch], rules: Rules) -> Iterator[Leaf]:
    """Every leaf of every document, in sops's order, with the file's rules applied."""
    for branch in branches:
        yield from _walk_container(branch, (), [], rules)


def leaves(data: bytes, fmt: str, rules: Rules) -> list[Leaf]:
    """The leaves of a file's document (its `sops` entry left out); TreeError when sops could not load it.

    YAML comments are not read (they are never in the MAC), so with a comment regex a YAML value
    counts as encrypted exactly when it is an ENC[…] string: a file sops wrote reads the same.
    """
    if fmt == "yaml":
        branches = yaml_branches(data)
        if rules.uses_comments:
            rules = Rules(rules.option, rules.argument, rules.mac_only_encrypted, by_form=True)
    elif fmt in ("json", "binary"):
        branches = [json_branch(data)]
    elif fmt == "dotenv":
        branches = [dotenv_branch(data)]
    elif fmt == "ini":
        branches = [ini_branch(data)]
    else:
        raise TreeError(f"unknown format {fmt!r}")
    try:
        return list(walk(branches, rules))
    except RecursionError:
        raise TreeError("the document is nested too deeply") from None
    except ValueError as exc:  # a value sops cannot walk (value_type)
        raise TreeError(str(exc)) from None


def _without_sops(branch: Branch) -> Branch:
    return Branch(item for item in branch if item[0] != SOPS_KEY)


# --- YAML (stores/yaml/store.go over go-yaml v3, read here with libyaml) ---------------------------

_PLAIN = "!sopsctl-plain"  # marks an untagged plain scalar, so go-yaml's resolver (below) types it
_LONG = "tag:yaml.org,2002:"
_RESOLVABLE = ("!!bool", "!!int", "!!float", "!!null", "!!timestamp")
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc,valid-type]
    def resolve(self, kind: Any, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]


class _YamlReader:
    """Turns composed libyaml nodes into sops's tree, expanding aliases as go-yaml does."""

    def __init__(self, budget: int) -> None:
        self.budget = budget  # nodes visited; aliases re-visit, so this bounds "billion laughs" input
        self.active: set[int] = set()

    def scalar(self, node: yaml.ScalarNode) -> object:
        tag = node.tag
        try:
            if tag == _PLAIN:
                return node.value if node.style else v.go_yaml_resolve(node.value)  # `! "x"` is a string
            short = "!!" + tag[len(_LONG):] if tag.startswith(_LONG) else tag
            if short == "!!binary":
                return v.go_base64(node.value)  # a Go string holding those bytes
            if short in _RESOLVABLE:
                return v.go_yaml_resolve(node.value, short)
            return node.value  # !!str, quoted and block scalars, and unknown tags: a string
        except ValueError as exc:
            raise TreeError(f"line {node.start_mark.line + 1}: {exc}") from None

    def node(self, node: yaml.Node) -> object:
        self.budget -= 1
        if self.budget < 0:
            raise TreeError("the document expands to too many values (excessive aliasing)")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if id(node) in self.active:
            raise TreeError(f"line {node.start_mark.line + 1}: an alias refers to its own ancestor")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.node(item) for item in node.value]
            branch = Branch()
            for key_node, value_node in node.value:
                key = self.node(key_node)
                if isinstance(key, bytes):  # a !!binary key is a Go string of those bytes
                    key = key.decode("utf-8", "surrogateescape")
                branch.append((key, self.node(value_node)))
            return branch
        finally:
            self.active.discard(id(node))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # MarkedYAMLError's str() quotes the offending line, which may hold a clear value: keep only the facts.
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or "invalid YAML"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"not valid YAML: {where}{problem}"


_SOPS_LINE = re.compile(rb"sops:[ \t]*\r?\n")
_AFTER_BLOCK = re.compile(rb"\n[^ \t\r\n#]")


def _sops_block_cut(data: bytes) -> bytes | None:
    """The document without its `sops:` block when that block is what sops writes: the last entry of a
    single document, plain block style (no anchors, aliases or tags). Composing it would be wasted work,
    as the entry is dropped anyway, and it is often most of the file (armored key entries)."""
    start = data.rfind(b"\nsops:") + 1
    if not start or data.startswith(b"sops:") or not _SOPS_LINE.match(data, start):
        return None
    if data.startswith((b"---", b"...")) or b"\n---" in data or b"\n..." in data:
        return None  # several documents (or markers): each is read whole
    block = data[start:]
    if _AFTER_BLOCK.search(block) or b"&" in block or b"*" in block or b"!" in block:
        return None  # something follows the block, or it holds YAML the plain cut could change
    return data[:start]


def yaml_branches(data: bytes) -> list[Branch]:
    """One branch per YAML document, `sops` entries removed (stores/yaml LoadEncryptedFile)."""
    reader = _YamlReader(budget=4 * len(data) + 10_000)
    branches = []
    cut = _sops_block_cut(data)
    try:
        for document in yaml.compose_all(data if cut is None else cut, Loader=_Loader):
            if isinstance(document, yaml.MappingNode):
                branches.append(_without_sops(reader.node(document)))  # type: ignore[arg-type]
            elif isinstance(document, yaml.ScalarNode) and reader.scalar(document) is None:
                branches.append(Branch())  # an empty document
            else:
                kind = "sequence" if isinstance(document, yaml.SequenceNode) else "single value"
                raise TreeError(f"a YAML document that is a {kind} (sops supports only mappings)")
    except yaml.YAMLError as exc:
        raise TreeError(_yaml_problem(exc)) from None
    except RecursionError:
        raise TreeError("the YAML document is nested too deeply") from None
    if cut is not None and not branches:
        branches.append(Branch())  # nothing but the sops entry: one empty document, as when it is read whole
    return branches


# --- JSON and binary (stores/json: every number a float64) ----------------------------------------


def _json_number(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise TreeError("a JSON number too large for a float64 (sops refuses it)")
    return number


def _no_constant(name: str) -> object:
    raise TreeError(f"{name} is not valid JSON")


def json_branch(data: bytes) -> Branch:
    try:
        document = json.loads(data, object_pairs_hook=Branch, parse_float=_json_number,
                              parse_int=_json_number, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:  # its message has line and column only
        raise TreeError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise TreeError("not valid JSON: " + ("nested too deeply" if isinstance(exc, RecursionError)
                                              else "not UTF-8")) from None
    if not isinstance(document, Branch):
        raise TreeError("the JSON document is not an object")
    return _without_sops(document)


# --- dotenv (stores/dotenv) --------------------------------------------------------------------


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # Go strings are bytes; keep them exactly


def dotenv_branch(data: bytes) -> Branch:
    branch = Branch()
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line:
            continue
        if line[:1] == b"#":
            branch.append((Comment(_text(line[1:])), None))
            continue
        key, sep, value = line.partition(b"=")
        if not sep:
            raise TreeError(f"line {number}: not KEY=VALUE (sops refuses the file)")
        name = _text(key)
        if not name.startswith(SOPS_KEY + "_"):
            branch.append((name, _text(value).replace("\\n", "\n")))
    return branch


# --- INI (stores/ini over go-ini v1.67 with AllowNonUniqueSections) -------------------------------

_GO_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
             "\u200a\u2028\u2029\u202f\u205f\u3000")  # Go unicode.IsSpace (Python's also strips \x1c-\x1f)


def _index_any(text: str, chars: str) -> int:
    return min((i for i in (text.find(c) for c in chars) if i >= 0), default=-1)


def _surrounded(line: str) -> str:
    """go-ini trims one pair of quotes when they are the only ones of their kind."""
    for quote in "'\"":
        if len(line) >= 2 and line[0] == line[-1] == quote and line.find(quote, 1) == len(line) - 1:
            return line[1:-1]
    return line


class _IniParser:
    """go-ini's parser as sops's load options set it: comments, sections, keys, quotes, continuations."""

    def __init__(self, data: bytes) -> None:
        for bom in (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe"):  # go-ini skips these
            if data.startswith(bom):
                data = data[len(bom):]
                break
        chunks = _text(data).split("\n")
        self.lines = [c + "\n" for c in chunks[:-1]] + [chunks[-1]]  # what bufio ReadBytes('\n') returns
        self.index, self.comment = 0, ""

    def more(self) -> bool:
        return self.index < len(self.lines)

    def next_line(self) -> str:
        self.index += 1
        return self.lines[self.index - 1]

    def key_name(self, line: str, number: int) -> tuple[str, int]:
        quote = '"""' if line.startswith('"""') and len(line) > 6 else line[0] if line[0] in '"`' else ""
        if quote:
            pos = line.find(quote, len(quote))
            found = _index_any(line[pos + len(quote):], "=:") if pos != -1 else -1
            if found < 0:
                raise TreeError(f"line {number}: a quoted key without its closing quote or '='")
            return line[len(quote):pos].strip(_GO_SPACE), pos + found + len(quote) + 1
        end = _index_any(line, "=:")
        if end <= 0:
            raise TreeError(f"line {number}: neither a section, a comment nor key = value")
        return line[:end].strip(_GO_SPACE), end + 1

    def value(self, raw: str, number: int) -> str:
        line = raw.lstrip(_GO_SPACE)
        quote = '"""' if len(line) > 3 and line.startswith('"""') else "`" if line[:1] == "`" else ""
        if quote:
            pos = line.rfind(quote, len(quote))
            if pos != -1:
                return line[len(quote):pos]
            value = line[len(quote):]
            while self.more():  # a quoted value over several lines
                following = self.next_line()
                pos = following.rfind(quote)
                if pos > -1:
                    inline = _index_any(following[pos:], "#;")
                    self.comment += following[pos + inline:].strip(_GO_SPACE) if inline >= 0 else ""
                    return value + following[:pos]
                value += following
            raise TreeError(f"line {number}: a quoted value that is never closed")
        line = line.strip(_GO_SPACE)
        if line.endswith("\\"):  # continuation lines (no inline comments then)
            value = line[:-1]
            while self.more() and (following := self.next_line().strip(_GO_SPACE)):
                value += following
                if not value.endswith("\\"):
                    break
                value = value[:-1]
            return value
        inline = _index_any(line, "#;")
        if inline > -1:
            self.comment, line = self.comment + line[inline:], line[:inline].strip(_GO_SPACE)
        return _surrounded(line)

    def sections(self) -> list[tuple[str, str, dict[str, list[str]]]]:
        """(name, comment, {key: [value, comment]}) in file order, starting with go-ini's DEFAULT."""
        found: list[tuple[str, str, dict[str, list[str]]]] = [("DEFAULT", "", {})]
        counter = 1
        while self.more():
            number = self.index + 1
            line = self.next_line().lstrip(_GO_SPACE)
            if not line:
                continue
            if line[0] in "#;":
                self.comment += line
            elif line[0] == "[":
                close = line.rfind("]")
                if close < 2:
                    raise TreeError(f"line {number}: an unclosed section header or an empty section name")
                inline = _index_any(line[close + 1:], "#;")
                self.comment += line[close + 1 + inline:] if inline >= 0 else ""
                found.append((line[1:close], self.comment.strip(_GO_SPACE), {}))
                self.comment, counter = "", 1
            else:
                name, offset = self.key_name(line, number)
                if name == "-":
                    name, counter = f"#{counter}", counter + 1
                value = self.value(line[offset:], number)
                if not name:
                    raise TreeError(f"line {number}: an empty key name")
                # A repeated key keeps its first position and takes the new value and comment.
                found[-1][2][name] = [value, self.comment.strip(_GO_SPACE)]
                self.comment = ""
        return found


def _strip_comment_char(comment: str) -> str:
    return comment.lstrip(comment[0] + " ") if comment[:1] in (";", "#") else comment


def ini_branch(data: bytes) -> Branch:
    top = Branch()
    for name, comment, keys in _IniParser(data).sections():
        if name == SOPS_KEY:
            continue
        items = Branch([(Comment(_strip_comment_char(comment)), None)] if comment else [])
        for key, (value, key_comment) in keys.items():
            items.append((key, value))
            if key_comment:  # sops puts a key's comment after the key
                items.append((Comment(_strip_comment_char(key_comment)), None))
        top.append((name, items))
    return top
