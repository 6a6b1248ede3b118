"""YAML metadata: a fast scanner for the `sops:` block as sops writes it, with libyaml as the exact fallback."""

from __future__ import annotations

import re

import yaml

from ..model import SopsMetadata
from . import KEY_LISTS, MetadataError, metadata_from_mapping

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SOPS_START = re.compile(rb"^sops:[ \t]*\r?\n", re.M)
_BLOCK_END = re.compile(rb"\n(?=[^ \t\r\n#])")
# Structural lines only: armor lines are base64 and never hold `word:`, so they are skipped cheaply.
_LINE = re.compile(rb"\n( *)(- )?([A-Za-z_]+):(?: +([^\n]*?))?[ \t]*\r?(?=\n|$)")
_SIMPLE_FIELDS = {kind: field.encode() for kind, field in KEY_LISTS.items() if kind not in ("azure_kv", "hc_vault")}
_EMPTY = (b"[]", b"null", b"~")


class _Unusual(Exception):
    """The block is not laid out the way sops writes it: let libyaml read it."""


def _scalar(value: bytes) -> str:
    text = value.decode("utf-8")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        if "\\" in text:
            raise _Unusual
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text[:1] in ("|", ">", "&", "*", "!", "{", "[", "'", '"'):
        raise _Unusual
    return text


def _scan(block: bytes) -> dict:
    """The sops mapping from a block written by sops (3.11 order or 3.13 sorted), without enc blobs."""
    meta: dict = {}
    lines = _LINE.findall(b"\n" + block)
    if not lines:
        raise _Unusual
    top = len(lines[0][0])
    groups: list[dict] | None = None
    group_indent = -1
    target: dict = meta  # where key lists go: the sops mapping, or the current group
    kind: str | None = None
    entries: list[dict] = []
    for indent_bytes, dash, key_bytes, value in lines:
        indent, key = len(indent_bytes), key_bytes.decode()
        if indent == top and not dash:
            kind = None
            if key == "key_groups":
                if value and value not in _EMPTY:
                    raise _Unusual
                groups, group_indent, target = [], -1, meta
                meta["key_groups"] = groups
                continue
            groups, target = None, meta
            if key in KEY_LISTS:
                if value and value not in _EMPTY:
                    raise _Unusual
                kind, entries = key, []
                meta[key] = entries
            elif value:
                meta[key] = _scalar(value)
            else:
                raise _Unusual  # a nested mapping we do not know
            continue
        if indent <= top:
            raise _Unusual
        if groups is not None and dash and (group_indent < 0 or indent == group_indent):
            group_indent = indent  # the first item under key_groups fixes where groups start
            target = {}
            groups.append(target)
            kind = None
            if key not in KEY_LISTS or (value and value not in _EMPTY):
                raise _Unusual
            kind, entries = key, []
            target[key] = entries
            continue
        if groups is not None and not dash and indent == group_indent + 2:
            if key not in KEY_LISTS or (value and value not in _EMPTY):
                raise _Unusual
            kind, entries = key, []
            target[key] = entries
            continue
        if kind is None or kind not in _SIMPLE_FIELDS:
            raise _Unusual
        if dash:
            entries.append({})
        if not entries:
            raise _Unusual
        if key_bytes == _SIMPLE_FIELDS[kind]:
            entries[-1][key] = _scalar(value)
        elif key == "enc":
            if value not in (b"|", b"|-"):
                entries[-1][key] = _scalar(value)
        else:
            entries[-1][key] = _scalar(value) if value else ""
    return meta


def _sops_block(data: bytes) -> bytes | None:
    match = _SOPS_START.search(data)
    if match is None:
        return None
    end = _BLOCK_END.search(data, match.end() - 1)
    return data[match.end() - 1: end.start() + 1 if end else len(data)]


def read_yaml_metadata(data: bytes) -> SopsMetadata | None:
    block = _sops_block(data)
    if block is not None:
        try:
            return metadata_from_mapping(_scan(block))
        except _Unusual:
            pass
        try:
            document = yaml.load(b"sops:" + block, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise MetadataError(f"the sops entry is not valid YAML: {str(exc).splitlines()[0]}") from None
        return metadata_from_mapping(document.get("sops") if isinstance(document, dict) else None)
    if b"sops" not in data:
        return None  # no sops entry anywhere: a plain file
    return _full_parse(data)


def _full_parse(data: bytes) -> SopsMetadata | None:
    """The slow, exact path for layouts the scanner does not know (flow style, odd indentation)."""
    try:
        for document in yaml.load_all(data, Loader=_Loader):
            if isinstance(document, dict) and "sops" in document:
                return metadata_from_mapping(document["sops"])
            return None  # sops reads metadata from the first document only
    except yaml.YAMLError:
        return None  # not YAML at all: not a sops file either
    return None

