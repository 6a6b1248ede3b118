"""YAML metadata: a fast scanner for the `sops:` block as sops writes it, with libyaml as the exact fallback."""

from __future__ import annotations

import re
from collections.abc import Iterator

import yaml

from ..model import FileKey, SopsMetadata
from . import KEY_LISTS, MetadataError, build_metadata, metadata_from_mapping

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SOPS_START = re.compile(rb"^sops:[ \t]*\r?\n", re.M)
_BLOCK_END = re.compile(rb"\n(?=[^ \t\r\n#])")
# Structural lines only: armor lines are base64 and never hold `word:`. The possessive quantifiers
# matter: without them every armor line is retried once per leading space (7x slower).
_LINE = re.compile(rb"\n( *+)(- )?+([A-Za-z_]++):(?: ++([^\n]*))?")
_SIMPLE_FIELDS = {kind: field.encode() for kind, field in KEY_LISTS.items() if kind not in ("azure_kv", "hc_vault")}
_EMPTY = (b"[]", b"null", b"~")


class _Unusual(Exception):
    """The block is not laid out the way sops writes it: let libyaml read it."""


def _scalar(value: bytes) -> str:
    text = value.decode("utf-8").rstrip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        if "\\" in text:
            raise _Unusual
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text[:1] in ("|", ">", "&", "*", "!", "{", "[", "'", '"'):
        raise _Unusual
    return text


_ENC = re.compile(rb"\n( *+)(- )?+enc:(?: ++([^\n]*))?")


def _enc_blobs(block: bytes) -> list[str]:
    """Every entry's `enc` value in file order, block scalars (`|`, `|-`) read as YAML reads them."""
    blobs = []
    for match in _ENC.finditer(b"\n" + block):
        value = (match.group(3) or b"").rstrip()
        if value not in (b"|", b"|-"):
            blobs.append(_scalar(value))
            continue
        key_column = len(match.group(1)) + (2 if match.group(2) else 0)
        lines = []
        rest = block[match.end() - 1:]  # match offsets are into b"\n" + block; rest starts at the newline
        for line in rest.split(b"\n")[1:]:
            stripped = line.lstrip(b" ")
            if not stripped.strip() or len(line) - len(stripped) <= key_column:
                break
            lines.append(stripped.rstrip(b"\r").decode("ascii"))
        if not lines:
            raise _Unusual
        blobs.append("\n".join(lines) + ("\n" if value == b"|" else ""))
    return blobs


def _scan(block: bytes, with_enc: bool = False) -> SopsMetadata:
    """The metadata of a block written by sops (3.11 order or 3.13 sorted); enc blobs only if asked.

    Builds FileKeys as it goes (no intermediate mappings): this runs once per file of a tree.
    """
    lines = _LINE.findall(b"\n" + block)
    if not lines:
        raise _Unusual
    top = len(lines[0][0])
    scalars: dict[str, str] = {}
    flat: list[FileKey] = []
    groups: list[list[FileKey]] | None = None
    in_groups = False
    group_indent = -1
    kind: str | None = None
    field = b""
    keys: list[FileKey] = flat  # where entries of the current list go
    open_entry = False  # an entry started (dash) whose identifying field we have not seen yet
    for indent_bytes, dash, key_bytes, raw_value in lines:
        indent = len(indent_bytes)
        value = raw_value.rstrip()
        if indent == top and not dash:
            if open_entry:
                raise MetadataError(f"a {kind} entry has no {KEY_LISTS[kind or 'age']}")
            kind = None
            key = key_bytes.decode()
            if key == "key_groups":
                if value and value not in _EMPTY:
                    raise _Unusual
                in_groups, groups, group_indent = True, [], -1
            elif key in KEY_LISTS:
                if value and value not in _EMPTY:
                    raise _Unusual
                in_groups, kind, keys = False, key, flat
                field = _SIMPLE_FIELDS.get(key, b"")
            elif value:
                in_groups = False
                if key in scalars:  # sops (yaml.v3) refuses the file: "mapping key already defined"
                    raise MetadataError(f"the sops entry has {key} twice")
                scalars[key] = _scalar(value)
            else:
                raise _Unusual  # a nested mapping we do not know
            continue
        if indent <= top or (kind is None and not in_groups):
            raise _Unusual
        if in_groups and groups is not None and (
                (dash and (group_indent < 0 or indent == group_indent)) or (not dash and indent == group_indent + 2)):
            if open_entry:
                raise MetadataError(f"a {kind} entry has no {KEY_LISTS[kind or 'age']}")
            key = key_bytes.decode()
            if key not in KEY_LISTS or (value and value not in _EMPTY):
                raise _Unusual
            if dash:
                group_indent = indent  # the first item under key_groups fixes where groups start
                groups.append([])
            kind, keys, field = key, groups[-1], _SIMPLE_FIELDS.get(key, b"")
            continue
        if not field:
            raise _Unusual  # azure_kv / hc_vault entries: several fields make one key
        if dash:
            if open_entry:
                raise MetadataError(f"a {kind} entry has no {KEY_LISTS[kind or 'age']}")
            open_entry = True
        if key_bytes == field:
            if not open_entry:
                raise _Unusual
            recipient = value.decode("utf-8") if value[:1] not in (b"'", b'"') else _scalar(value)
            keys.append(FileKey(kind or "age", recipient.strip()))
            open_entry = False
    if open_entry:
        raise MetadataError(f"a {kind} entry has no {KEY_LISTS[kind or 'age']}")
    if with_enc:
        flat, groups = _with_blobs(block, flat, groups)
    return build_metadata(scalars, flat, groups)


def _with_blobs(block: bytes, flat: list[FileKey], groups: list[list[FileKey]] | None):  # type: ignore[no-untyped-def]
    """Attach enc blobs: each entry has exactly one, in the same file order as the entries."""
    found = _enc_blobs(block)
    lists = [flat, *(groups or [])]
    if sum(len(keys) for keys in lists) != len(found):
        raise _Unusual
    blobs = iter(found)
    filled = [[key._replace(enc=next(blobs)) for key in keys] for keys in lists]
    return filled[0], (filled[1:] if groups is not None else None)


def sops_starts(data: bytes) -> Iterator[re.Match[bytes]]:
    """_SOPS_START.finditer(data), found by looking only where `sops:` is (a multi-line `^` search
    tries every byte of the file: 7-12 µs a call on a small secrets file, and each file takes several)."""
    at = data.find(b"sops:")
    while at >= 0:
        if at == 0 or data[at - 1] == 0x0A:  # at a line start, where `^` can match
            match = _SOPS_START.match(data, at)
            if match is not None:
                yield match
        at = data.find(b"sops:", at + 1)


def _sops_block(data: bytes) -> bytes | None:
    match = next(sops_starts(data), None)
    if match is None:
        return None
    end = _BLOCK_END.search(data, match.end() - 1)
    return data[match.end() - 1: end.start() + 1 if end else len(data)]


def read_yaml_metadata(data: bytes, full: bool = False) -> SopsMetadata | None:
    """The metadata of the first `sops:` block; with `full`, enc blobs too (libyaml when the layout is odd)."""
    block = _sops_block(data)
    if block is not None:
        try:
            return _scan(block, with_enc=full)
        except (_Unusual, UnicodeDecodeError):  # odd layout or bytes: libyaml decides
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

