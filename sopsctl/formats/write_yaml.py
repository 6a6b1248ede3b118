"""YAML: rewrite the key entries of every `sops:` block in go-yaml v3's layout, every other line kept."""

from __future__ import annotations

import functools
import io
import itertools
import json
import re
from typing import NamedTuple

import yaml
from yaml.emitter import Emitter
from yaml.resolver import Resolver

from ..model import FileKey
from . import KEY_LISTS, MetadataError
from .keyplan import MANAGED, SORTED, Entry, Plan, detect_style, entry_id, make_plan, merge
from .yamlmeta import _BLOCK_END, sops_starts

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FIELD = re.compile(r"( *)([A-Za-z_][A-Za-z0-9_]*):(?:[ \t]+([^\r\n]*))?\r?\n?$")
_RESOLVER = Resolver()
_ANALYZER = Emitter(io.StringIO())
# go-yaml quotes YAML 1.1 booleans PyYAML's resolver does not know.
_GO_AMBIGUOUS = {"y", "Y", "n", "N"}
# (kind, recipient, enc, dash column) -> the entry's text: what an entry that stays is written as.
Pool = dict[tuple[str, str, object, int], str]


def replace_yaml(data: bytes, groups: tuple[tuple[FileKey, ...], ...], threshold: int | None) -> bytes:
    out = bytearray()
    pos = 0
    for start in sops_starts(data):
        begin = start.end()
        end_match = _BLOCK_END.search(data, begin - 1)
        end = end_match.start() + 1 if end_match else len(data)
        out += data[pos:begin]
        out += _rewrite_block(data[begin:end], groups, threshold).encode("utf-8")
        pos = end
    if not pos:
        raise MetadataError("no `sops:` block in block style at the start of a line")
    out += data[pos:]
    return bytes(out)


_LINE = re.compile(r"[^\n]*\n|[^\n]+$")


def _lines(text: str) -> list[str]:
    return _LINE.findall(text)  # not str.splitlines: it also splits at \x0c, \x85, \u2028…


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _rewrite_block(block: bytes, groups: tuple[tuple[FileKey, ...], ...], threshold: int | None) -> str:
    try:
        text = block.decode("utf-8")
        meta = yaml.load("sops:\n" + text, Loader=_Loader)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MetadataError(f"the sops entry is not valid YAML: {str(exc).splitlines()[0]}") from None
    meta = meta.get("sops") if isinstance(meta, dict) else None
    if not isinstance(meta, dict):
        raise MetadataError("the sops entry is not a mapping")
    plan = make_plan(meta, groups, threshold)
    nl = "\r\n" if text.split("\n", 1)[0].endswith("\r") else "\n"
    lines = _lines(text if text.endswith("\n") else text + nl)  # every line ends: entries can follow any
    tail: list[str] = []
    while lines and (not lines[-1].strip() or lines[-1].startswith("#")):  # after the block, not in it
        tail.insert(0, lines.pop())
    if not lines:
        raise MetadataError("the sops entry is empty")
    n = _indent(next(line for line in lines if _is_content(line)))
    fields = _split_fields(lines, n)
    old = {name: body for name, body in fields if name is not None}
    pool: Pool = {}
    writer = _Writer(plan, n, nl, pool)
    for kind in KEY_LISTS:
        if kind in old:
            _pool_list(old[kind], meta.get(kind), kind, pool)
    old_groups = _carve_groups(old.get("key_groups"), meta.get("key_groups"), writer.next(n), pool)
    new: dict[str, str] = {}
    if plan.flat is not None:
        for kind, entries in plan.flat:
            new[kind] = writer.list_field(kind, entries, n, writer.next(n), old.get(kind))
    else:
        new["key_groups"] = writer.groups_field(old.get("key_groups"), old_groups, meta.get("key_groups"))
    if plan.threshold is not None:
        same = meta.get("shamir_threshold") == plan.threshold and "shamir_threshold" in old
        new["shamir_threshold"] = old["shamir_threshold"] if same else f"{' ' * n}shamir_threshold: {plan.threshold}{nl}"
    merged = merge(fields, new, MANAGED.__contains__, plan.top_rank)
    out = "".join(merged) + "".join(tail)
    if not text.endswith("\n") and (tail or merged[-1] == fields[-1][1]):
        out = out.removesuffix(nl)  # the file ended without a line end and still ends as it did
    return out


def _split_fields(lines: list[str], indent: int) -> list[tuple[str | None, str]]:
    """A mapping's lines cut into fields: a key line at `indent` and everything under it."""
    fields: list[tuple[str | None, list[str]]] = []
    for line in lines:
        match = _FIELD.match(line) if _indent(line) == indent else None
        if match:
            fields.append((match.group(2), [line]))
        elif fields:
            fields[-1][1].append(line)
        elif _is_content(line):
            raise MetadataError("the sops entry is not laid out as a block mapping")
        else:
            fields.append((None, [line]))
    return [(name, "".join(body)) for name, body in fields]


class _Carved(NamedTuple):
    head: str  # the `key:` line and any comment lines before the first item
    col: int  # the dashes' column
    items: list[str]


def _carve_items(field: str | None, parsed: object = None) -> _Carved | None:
    """The list items under a field, when they are block items (and as many as libyaml read, if given)."""
    if field is None or (parsed is not None and not isinstance(parsed, list)):
        return None
    lines = _lines(field)
    match = _FIELD.match(lines[0])
    if match is None or (match.group(3) and not match.group(3).lstrip().startswith("#")):
        return None  # a flow list or an inline value: nothing to keep item by item
    col, head, items = -1, [lines[0]], []
    for line in lines[1:]:
        stripped = line.lstrip(" ")
        is_dash = stripped[:1] == "-" and stripped[1:2] in (" ", "\r", "\n", "")
        if col < 0 and is_dash:
            col = _indent(line)
        if col >= 0 and is_dash and _indent(line) == col:
            items.append([line])
        elif items:
            items[-1].append(line)
        elif _is_content(line):
            return None
        else:
            head.append(line)
    if isinstance(parsed, list) and len(items) != len(parsed):
        return None
    return _Carved("".join(head), col, ["".join(item) for item in items])


def _pool_list(field: str, parsed: object, kind: str, pool: Pool) -> None:
    carved = _carve_items(field, parsed)
    if carved is None:
        return
    col, items = carved.col, carved.items
    for text, entry in zip(items, parsed, strict=True):  # type: ignore[call-overload]
        ident = entry_id(kind, entry)
        if ident is not None:
            pool.setdefault((*ident, col), text)


def _carve_groups(field: str | None, parsed: object, col: int, pool: Pool) -> list[list[tuple[str | None, str]]] | None:
    """Each old group's fields (with its dash blanked), if the groups sit where go-yaml puts them."""
    carved = _carve_items(field, parsed)
    if carved is None or carved.col != col:
        return None
    out = []
    for text, group in zip(carved.items, parsed, strict=True):  # type: ignore[call-overload]
        lines = _lines(text)
        lines[0] = lines[0][:col] + " " + lines[0][col + 1:]
        try:
            fields = _split_fields(lines, _indent(lines[0]))
        except MetadataError:
            return None
        if not isinstance(group, dict):
            return None
        for name, body in fields:
            if name in KEY_LISTS:
                _pool_list(body, group.get(name), name, pool)
        out.append(fields)
    return out


class _Writer:
    """Emits key fields in go-yaml v3's layout for indent n (emitterc.go increase_indent): a mapping
    inside a list item is indented 2 past its dash; anything else nested under a mapping at column m
    (a list's dashes, a block scalar's lines, a child mapping) at the next multiple of n after m."""

    def __init__(self, plan: Plan, n: int, nl: str, pool: Pool) -> None:
        self.plan, self.n, self.nl, self.pool = plan, n, nl, pool

    def next(self, column: int) -> int:
        return self.n * ((column + self.n) // self.n)

    def list_field(self, kind: str, entries: tuple[Entry, ...], key_col: int, dash: int, old: str | None) -> str:
        items = [self.pool.get((e.key.kind, e.key.recipient, e.key.enc, dash)) or self.entry(e.mapping, dash)
                 for e in entries]
        if not items:
            return f"{' ' * key_col}{kind}: []{self.nl}"
        return self.assemble(kind, key_col, dash, items, old)

    def assemble(self, name: str, key_col: int, dash: int, items: list[str], old: str | None) -> str:
        """`name:` and its items; the old field's own text when nothing in it changed, and its
        header (with any comment under it) when the items sit where they sat."""
        carved = _carve_items(old)
        if carved is not None and carved.col == dash:
            return old if carved.items == items else carved.head + "".join(items)  # type: ignore[return-value]
        return f"{' ' * key_col}{name}:{self.nl}" + "".join(items)

    def groups_field(self, old: str | None, old_groups: list | None, parsed: object) -> str:
        n, d = self.n, self.next(self.n)
        assert self.plan.groups is not None
        items = []
        for index, group in enumerate(self.plan.groups):
            fields = old_groups[index] if old_groups is not None and index < len(old_groups) else []
            old_meta = parsed[index] if fields and isinstance(parsed, list) else {}
            by_name = {name: body for name, body in fields if name is not None}
            new = {}
            for kind, entries in group:
                if not entries and kind in by_name and old_meta.get(kind) in (None, []):
                    new[kind] = by_name[kind]  # the file's own placeholder (`[]`, `null`…)
                else:
                    new[kind] = self.list_field(kind, entries, d + 2, self.next(d + 2), by_name.get(kind))
            text = "".join(merge(fields, new, KEY_LISTS.__contains__, self.plan.group_rank))
            items.append(text[:d] + "-" + text[d + 1:])
        return self.assemble("key_groups", n, d, items, old)

    def entry(self, mapping: dict, dash: int) -> str:
        return self.mapping(mapping, dash + 2, f"{' ' * dash}- ")

    def mapping(self, mapping: dict, column: int, first: str) -> str:
        out = []
        for index, (key, value) in enumerate(mapping.items()):
            head = first if index == 0 else " " * column
            if isinstance(value, dict) and value:  # a kms `context`
                out.append(f"{head}{_scalar(str(key))}:{self.nl}"
                           + self.mapping(value, self.next(column), " " * self.next(column)))
            else:
                out.append(head + _scalar(str(key)) + ":" + _value(value, self.next(column), self.nl))
        return "".join(out)


def _value(value: object, block_col: int, nl: str) -> str:
    """` value` plus line end(s) as go-yaml writes a mapping value: literal blocks for multi-line strings."""
    if isinstance(value, str) and "\n" in value and _literal_ok(value):
        if value.endswith("\n\n"):
            chomp, body = "+", value[:-1]
        elif value.endswith("\n"):
            chomp, body = "", value[:-1]
        else:
            chomp, body = "-", value
        lines = "".join((" " * block_col + line if line else "") + nl for line in body.split("\n"))
        return f" |{chomp}{nl}{lines}"
    if isinstance(value, bool):
        return f" {'true' if value else 'false'}{nl}"
    if value is None:
        return f" null{nl}"
    if isinstance(value, int | float):
        return f" {value}{nl}"
    if isinstance(value, str):
        return f" {_scalar(value)}{nl}"
    if value in ({}, []):
        return f" {json.dumps(value)}{nl}"
    # a list inside an entry: sops writes none; flow style is valid YAML (go-yaml would use block style)
    return f" {json.dumps(value, ensure_ascii=False)}{nl}"


def _literal_ok(value: str) -> bool:
    # what libyaml's analysis allows in a literal block without an indentation indicator
    return (not value.startswith((" ", "\n")) and " \n" not in value and not value.endswith(" ")
            and value.replace("\n", "").isprintable())


@functools.lru_cache(maxsize=4096)  # recipients recur in every file of a batch; the analysis is slow
def _scalar(value: str) -> str:
    """A string as go-yaml writes it: plain when safe, double-quoted when it would read as another
    type or needs escapes, single-quoted when only YAML syntax is in the way."""
    if value == "":
        return '""'
    analysis = _ANALYZER.analyze_scalar(value)
    resolved = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
    if resolved != "tag:yaml.org,2002:str" or value in _GO_AMBIGUOUS or not value.isprintable():
        return json.dumps(value, ensure_ascii=False)
    if analysis.allow_block_plain and not analysis.multiline:
        return value
    if analysis.allow_single_quoted and not analysis.multiline:
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value, ensure_ascii=False)


# --- the common re-key, spliced: one age list keeps, re-wraps, drops and appends entries -----------------

_TOP_FIELD = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*):(?:[ \t]+([^\r\n]*))?")
_ITEM_FIELD = re.compile(rb"(?:- )?([A-Za-z_][A-Za-z0-9_]*):")


def splice_yaml(data: bytes, before: tuple[FileKey, ...], staying: list[tuple[int, FileKey]],
                added: list[FileKey]) -> bytes | None:
    """What replace_yaml gives for this change, without re-parsing the block; None when the block is
    not exactly as go-yaml writes it (comments, CRLF, other key kinds, several blocks…)."""
    starts = list(itertools.islice(sops_starts(data), 2))
    if len(starts) != 1:
        return None
    match = starts[0]
    begin = match.end()
    end_match = _BLOCK_END.search(data, begin - 1)
    end = end_match.start() + 1 if end_match else len(data)
    block = data[begin:end]
    if not block.endswith(b"\n") or b"\r" in block or b"#" in block or b"\t" in block:
        return None
    lines = block[:-1].split(b"\n")
    n = len(lines[0]) - len(lines[0].lstrip(b" "))
    if n == 0:
        return None
    top: list[tuple[str, int]] = []  # (name, line index) of each top-level field
    for number, line in enumerate(lines):
        indent = len(line) - len(line.lstrip(b" "))
        if indent < n or not line.strip():
            return None
        if indent == n:
            field = _TOP_FIELD.fullmatch(line, n)
            if field is None or line[n:n + 2] == b"- ":
                return None
            top.append((field.group(1).decode("ascii"), number))
    names = [name for name, _ in top]
    if "age" not in names or len(set(names)) != len(names) or any(
            name in MANAGED and name != "age" for name in names):
        return None
    at = names.index("age")
    first, stop = top[at][1], (top[at + 1][1] if at + 1 < len(top) else len(lines))
    if lines[first].strip() != b"age:":
        return None
    dash = n * 2  # go-yaml: a list under a mapping at column n starts at the next multiple of n
    items: list[list[bytes]] = []
    fields: list[list[str]] = []
    recipients: list[bytes] = []
    for line in lines[first + 1:stop]:
        indent = len(line) - len(line.lstrip(b" "))
        if indent < dash:
            return None
        if indent == dash:
            if line[dash:dash + 2] != b"- ":
                return None
            items.append([line])
            fields.append([])
        elif not items:
            return None
        else:
            items[-1].append(line)
        if indent in (dash, dash + 2):
            key = _ITEM_FIELD.match(line, dash if indent == dash else dash + 2)
            if key is None or (indent == dash + 2 and line[dash + 2:dash + 4] == b"- "):
                return None
            fields[-1].append(key.group(1).decode("ascii"))
            if key.group(1) == b"recipient":
                recipients.append(line[key.end():].strip())
    if len(items) != len(before) or any(sorted(f) != ["enc", "recipient"] for f in fields):
        return None
    if recipients != [_scalar(entry.recipient).encode("utf-8") for entry in before]:
        return None  # the scanner and this cut disagree on which item is which: let libyaml decide
    meta: dict = dict.fromkeys(names)
    meta["age"] = [dict.fromkeys(f) for f in fields]
    version = next((line.split(b":", 1)[1].strip() for name, number in top if name == "version"
                    for line in (lines[number],)), b"")
    meta["version"] = version.decode("utf-8", "replace").strip("\"'")
    style = detect_style(meta)  # on the same key orders libyaml would give the general writer
    writer = _Writer(None, n, "\n", {})  # type: ignore[arg-type]
    out = []
    for position, entry in staying:
        old = before[position]
        if entry.enc == old.enc:
            out.append(b"\n".join(items[position]) + b"\n")
        else:  # re-wrapped: the entry's own field order, a new enc
            mapping = {name: (entry.enc if name == "enc" else entry.recipient) for name in fields[position]}
            out.append(writer.entry(mapping, dash).encode("utf-8"))
    for entry in added:
        mapping = ({"enc": entry.enc, "recipient": entry.recipient} if style == SORTED
                   else {"recipient": entry.recipient, "enc": entry.enc})
        out.append(writer.entry(mapping, dash).encode("utf-8"))
    if not out:
        return None
    head = b"\n".join(lines[:first + 1]) + b"\n"
    tail = b"\n".join(lines[stop:]) + b"\n" if stop < len(lines) else b""
    return data[:begin] + head + b"".join(out) + tail + data[end:]
