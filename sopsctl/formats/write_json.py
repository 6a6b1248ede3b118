"""JSON and binary: re-emit the `"sops"` object as Go's json.Indent would and splice it in place."""

from __future__ import annotations

import json
import re

from ..model import FileKey
from . import KEY_LISTS, MetadataError
from .keyplan import MANAGED, SORTED, Entry, entry_id, make_plan, merge

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE = re.compile("[<>&\u2028\u2029]")

# One member of an object or item of an array: (key or None, decoded value, text start, value start, end).
Span = tuple[str | None, object, int, int, int]


def go_string(value: str) -> str:
    """A string as Go's json.Marshal writes it (HTML characters and U+2028/9 escaped)."""
    return _GO_ESCAPE.sub(lambda m: _GO_ESCAPES[m.group()], json.dumps(value, ensure_ascii=False))


def go_json(value: object, depth: int, unit: str | None, nl: str) -> str:
    """`value` as json.Marshal + json.Indent(unit) write it, its first line at nesting `depth`."""
    if isinstance(value, str):
        return go_string(value)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    pairs = list(value.items()) if isinstance(value, dict) else list(enumerate(value))  # type: ignore[attr-defined]
    opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
    if not pairs:
        return opening + closing
    parts = [(f"{go_string(str(k))}:{' ' if unit is not None else ''}" if isinstance(value, dict) else "")
             + go_json(v, depth + 1, unit, nl) for k, v in pairs]
    return assemble(opening, parts, closing, depth, unit, nl)


def assemble(opening: str, parts: list[str], closing: str, depth: int, unit: str | None, nl: str) -> str:
    if not parts:
        return opening + closing
    if unit is None:
        return opening + ",".join(parts) + closing
    inner = unit * (depth + 1)
    return opening + nl + ("," + nl).join(inner + p for p in parts) + nl + unit * depth + closing


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def _decode(text: str, pos: int) -> tuple[object, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except (ValueError, RecursionError):
        raise MetadataError("not valid JSON") from None


def members(text: str, pos: int) -> list[Span]:
    """The members of the object at text[pos] == "{", with their exact spans."""
    return _children(text, pos, "{", "}")


def _children(text: str, pos: int, opening: str, closing: str) -> list[Span]:
    if text[pos:pos + 1] != opening:
        raise MetadataError(f"expected {opening!r} in the JSON document")
    out: list[Span] = []
    pos = _skip(text, pos + 1)
    if text[pos:pos + 1] == closing:
        return out
    while True:
        start = pos
        key = None
        if opening == "{":
            key, pos = _decode(text, pos)
            if not isinstance(key, str):
                raise MetadataError("a JSON object key is not a string")
            pos = _skip(text, pos)
            if text[pos:pos + 1] != ":":
                raise MetadataError("expected ':' in the JSON document")
            pos = _skip(text, pos + 1)
        value_start = pos
        value, pos = _decode(text, pos)
        out.append((key, value, start, value_start, pos))
        pos = _skip(text, pos)
        if text[pos:pos + 1] == ",":
            pos = _skip(text, pos + 1)
        elif text[pos:pos + 1] == closing:
            return out
        else:
            raise MetadataError("expected ',' or a closing bracket in the JSON document")


def replace_json(data: bytes, groups: tuple[tuple[FileKey, ...], ...], threshold: int | None) -> bytes:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MetadataError("the JSON document is not UTF-8") from None
    top = members(text, _skip(text, 0))
    found = [m for m in top if m[0] == "sops"]
    if not found or not isinstance(found[-1][1], dict):
        raise MetadataError("the document has no sops object")
    _, meta, key_start, start, end = found[-1]  # Go and Python both keep the last of duplicate keys
    line_start = text.rfind("\n", 0, key_start) + 1
    lead = text[line_start:key_start]
    # The file's own indentation unit (sops: a tab, or `stores.json.indent` spaces); compact files stay compact.
    unit = lead if line_start and not lead.strip() else None
    nl = "\r\n" if text[max(line_start - 2, 0):line_start] == "\r\n" else "\n"
    new_object = _Writer(meta, groups, threshold, unit, nl).sops_object(text, start)
    if new_object is None:
        return data
    return (text[:start] + new_object + text[end:]).encode("utf-8")


class _Writer:
    def __init__(self, meta: dict, groups: tuple[tuple[FileKey, ...], ...], threshold: int | None,
                 unit: str | None, nl: str) -> None:
        self.plan = make_plan(meta, groups, threshold)
        self.unit, self.nl = unit, nl
        self.pool: dict[tuple[str, str, object, str], str] = {}  # (kind, recipient, enc, where) -> text
        self._items: dict[int, list[Span]] = {}  # the items of the array at a position, parsed once

    def _array(self, text: str, pos: int) -> list[Span]:
        items = self._items.get(pos)
        if items is None:
            items = self._items[pos] = _children(text, pos, "[", "]")
        return items

    def _text(self, text: str, span: Span) -> str:
        return text[span[2]:span[4]]

    def _member(self, key: str, value_text: str) -> str:
        return f"{go_string(key)}:{' ' if self.unit is not None else ''}{value_text}"

    def sops_object(self, text: str, start: int) -> str | None:
        """The new sops object's text; None when it would not change."""
        old = members(text, start)
        old_by_name = {m[0]: m for m in old if m[0] is not None}
        for kind in KEY_LISTS:
            if kind in old_by_name:
                self._pool(text, old_by_name[kind], kind, "flat")
        old_groups: list[tuple[Span, list[Span]]] = []
        if "key_groups" in old_by_name and isinstance(old_by_name["key_groups"][1], list):
            for item in _children(text, old_by_name["key_groups"][3], "[", "]"):
                group = members(text, item[3]) if isinstance(item[1], dict) else []
                old_groups.append((item, group))
                for member in group:
                    if member[0] in KEY_LISTS:
                        self._pool(text, member, member[0], "group")  # type: ignore[arg-type]
        plan = self.plan
        new: dict[str, str] = {}
        if plan.flat is not None:
            for kind, entries in plan.flat:
                new[kind] = self._list_member(text, kind, entries, 2, "flat", old_by_name.get(kind))
        else:
            new["key_groups"] = self._groups_member(text, old_by_name.get("key_groups"), old_groups)
        if plan.threshold is not None:
            same = "shamir_threshold" in old_by_name and old_by_name["shamir_threshold"][1] == plan.threshold
            new["shamir_threshold"] = (self._text(text, old_by_name["shamir_threshold"]) if same
                                       else self._member("shamir_threshold", str(plan.threshold)))
        fields = [(m[0], self._text(text, m)) for m in old]
        parts = merge(fields, new, MANAGED.__contains__, plan.top_rank)
        if parts == [f[1] for f in fields]:
            return None
        return assemble("{", parts, "}", 1, self.unit, self.nl)

    def _pool(self, text: str, member: Span, kind: str, where: str) -> None:
        if not isinstance(member[1], list):
            return
        for item in self._array(text, member[3]):
            ident = entry_id(kind, item[1])
            if ident is not None:
                self.pool.setdefault((*ident, where), self._text(text, item))

    def _list_member(self, text: str, kind: str, entries: tuple[Entry, ...], depth: int, where: str,
                     old: Span | None) -> str:
        items = [self.pool.get((e.key.kind, e.key.recipient, e.key.enc, where))
                 or go_json(e.mapping, depth + 1, self.unit, self.nl) for e in entries]
        if old is not None and isinstance(old[1], list) and [
                self._text(text, i) for i in self._array(text, old[3])] == items:
            return self._text(text, old)
        return self._member(kind, assemble("[", items, "]", depth, self.unit, self.nl))

    def _groups_member(self, text: str, old: Span | None, old_groups: list[tuple[Span, list[Span]]]) -> str:
        assert self.plan.groups is not None
        items = []
        for index, group in enumerate(self.plan.groups):
            old_item, fields = old_groups[index] if index < len(old_groups) else (None, [])
            by_name = {m[0]: m for m in fields if m[0] is not None}
            new = {}
            for kind, entries in group:
                if not entries and kind in by_name and by_name[kind][1] in (None, []):
                    new[kind] = self._text(text, by_name[kind])  # the file's own `null` / `[]`
                elif not entries:
                    # 3.11 marshals the nil slice as null; 3.13 (sorted) goes through []interface{}: []
                    new[kind] = self._member(kind, "[]" if self.plan.style == SORTED else "null")
                else:
                    new[kind] = self._list_member(text, kind, entries, 4, "group", by_name.get(kind))
            old_parts = [(m[0], self._text(text, m)) for m in fields]
            parts = merge(old_parts, new, KEY_LISTS.__contains__, self.plan.group_rank)
            if old_item is not None and fields and parts == [p[1] for p in old_parts]:
                items.append(self._text(text, old_item))  # unchanged: keep its exact text
            else:
                items.append(assemble("{", parts, "}", 3, self.unit, self.nl))
        if old is not None and isinstance(old[1], list):
            old_items = [self._text(text, i) for i in _children(text, old[3], "[", "]")]
            if old_items == items:
                return self._text(text, old)
        return self._member("key_groups", assemble("[", items, "]", 2, self.unit, self.nl))
