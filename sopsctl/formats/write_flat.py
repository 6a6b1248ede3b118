"""dotenv and INI: swap the flattened `sops_…` / `[sops]` key lines, every other line kept as it is."""

from __future__ import annotations

import re

from ..model import FileKey
from . import MetadataError
from .flat import unflatten
from .keyplan import MANAGED, Plan, make_plan, merge

_LINE = re.compile(r"[^\n]*\n|[^\n]+$")
_INI_KEY = re.compile(r"([^=;#\s][^=]*?)( *)=[ \t]?")  # go-ini writes `key<pad> = value`


def _lines(text: str) -> list[str]:
    return _LINE.findall(text)


def _body(line: str) -> str:
    return line.rstrip("\r\n")


def _managed(name: str) -> bool:
    return name.split("__", 1)[0] in MANAGED


def flatten(plan: Plan) -> dict[str, str]:
    """The key fields as sops's FlattenMetadata names them (`key_groups__list_0__map_age__list_1__map_enc`),
    values as stored: newlines as `\\n`, nulls and empty lists dropped, numbers and bools as strings."""
    tree: dict[str, object] = {}
    if plan.flat is not None:
        for kind, entries in plan.flat:
            tree[kind] = [e.mapping for e in entries]
    else:
        assert plan.groups is not None
        tree["key_groups"] = [{kind: [e.mapping for e in entries] for kind, entries in group}
                              for group in plan.groups]
    if plan.threshold is not None:
        tree["shamir_threshold"] = plan.threshold
    out: dict[str, str] = {}
    _flatten_into(out, "", tree)
    return out


def _flatten_into(out: dict[str, str], prefix: str, value: object) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten_into(out, f"{prefix}__map_{key}" if prefix else str(key), item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten_into(out, f"{prefix}__list_{index}", item)
    elif value is not None:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out[prefix] = text.replace("\n", "\\n")


def replace_flat(data: bytes, fmt: str, groups: tuple[tuple[FileKey, ...], ...], threshold: int | None,
                 appended: bool = False) -> bytes:
    """`appended`: the change is one age list keeping, re-wrapping or dropping entries in file order and
    appending new ones (keyplan.list_change), so the new fields can be named without decoding the old."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MetadataError(f"the {fmt} file is not UTF-8") from None
    lines = _lines(text)
    nl = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    out = (_dotenv(lines, groups, threshold, nl, appended) if fmt == "dotenv"
           else _ini(lines, groups, threshold, nl))
    if not text.endswith("\n") and out.endswith("\n"):  # a file without a final line end stays so
        out = out.removesuffix(nl)
    return out.encode("utf-8")


def _plan(values: dict[str, str], groups: tuple[tuple[FileKey, ...], ...], threshold: int | None) -> Plan:
    if not values:
        raise MetadataError("the file has no sops metadata")
    return make_plan(unflatten({k: v.replace("\\n", "\n") for k, v in values.items()}), groups, threshold)


_AGE_FIELD = re.compile(r"age__list_(\d+)__map_(recipient|enc)")


def _age_list(values: dict[str, str], groups: tuple[tuple[FileKey, ...], ...]) -> dict[str, str] | None:
    """The flattened fields of one age list, when the old metadata holds nothing else that is managed
    and every old entry has just `recipient` and `enc` (what flatten(_plan(…)) gives then)."""
    count = 0
    for name in values:
        if _managed(name):
            field = _AGE_FIELD.fullmatch(name)
            if field is None:
                return None
            count += 1
    if count % 2:
        return None
    out = {}
    for index, key in enumerate(groups[0]):
        out[f"age__list_{index}__map_recipient"] = key.recipient.replace("\n", "\\n")
        out[f"age__list_{index}__map_enc"] = (key.enc or "").replace("\n", "\\n")
    return out


def _dotenv(lines: list[str], groups: tuple[tuple[FileKey, ...], ...], threshold: int | None, nl: str,
            appended: bool = False) -> str:
    fields: list[tuple[str | None, str]] = []
    values: dict[str, str] = {}
    for line in lines:
        if line.startswith("sops_") and "=" in line:
            key, _, value = _body(line).partition("=")
            fields.append((key[len("sops_"):], line))
            values[key[len("sops_"):]] = value
        else:
            fields.append((None, line))
    old_lines = {key: line for key, line in fields if key is not None}
    flat = _age_list(values, groups) if appended else None
    if flat is None:
        flat = flatten(_plan(values, groups, threshold))
    new = {name: old_lines[name] if values.get(name) == value else f"sops_{name}={value}{nl}"
           for name, value in flat.items()}
    # sops writes the metadata lines sorted by key (sort.Strings): keep that order for new lines
    return _join(merge(fields, new, _managed, lambda name: name), nl)


def _join(lines: list[str], nl: str) -> str:
    """The lines as one text; a last line without its line end gets one only if lines now follow it."""
    return "".join(line if line.endswith("\n") or index == len(lines) - 1 else line + nl
                   for index, line in enumerate(lines))


def _ini(lines: list[str], groups: tuple[tuple[FileKey, ...], ...], threshold: int | None, nl: str) -> str:
    start = next((i for i, line in enumerate(lines) if line.strip() == "[sops]"), None)
    if start is None:
        raise MetadataError("the INI file has no [sops] section")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("[")), len(lines))
    body = lines[start + 1:end]
    trailing: list[str] = []
    while body and not body[-1].strip():
        trailing.insert(0, body.pop())
    fields: list[tuple[str | None, str]] = []
    values: dict[str, str] = {}
    raw: dict[str, str] = {}  # the value as written (quotes and all), for re-padding
    widths = []
    for line in body:
        match = _INI_KEY.match(line) if not line.lstrip().startswith((";", "#")) else None
        if match is None:
            fields.append((None, line))
            continue
        key = match.group(1).strip()
        fields.append((key, line))
        raw[key] = _body(line)[match.end():]
        values[key] = raw[key].strip()  # as the reader (formats/flat.py) takes it
        widths.append(len(match.group(1)) + len(match.group(2)) - 1 if match.group(2) else len(key))
    width = max(widths, default=0)
    keys = [k for k, _ in fields if k is not None]
    is_sorted = len(keys) > 1 and keys == sorted(keys)  # sops >= 3.13; 3.11 writes Go map order
    flat = flatten(_plan(values, groups, threshold))
    needed = max([_key_width(k) for k in flat] + [_key_width(k) for k in keys if not _managed(k)], default=0)
    if needed > width:  # go-ini aligns `=` on the longest key: only a longer new key forces re-padding
        width = needed
        fields = [(k, line if k is None else _ini_line(k, raw[k], width, _ending(line, nl))) for k, line in fields]
    old_lines = {key: line for key, line in fields if key is not None}
    new = {name: old_lines[name] if values.get(name) == value else _ini_line(name, _ini_value(value), width, nl)
           for name, value in flat.items()}
    merged = merge(fields, new, _managed, (lambda name: name) if is_sorted else (lambda name: None))
    return _join(lines[:start + 1] + merged + trailing + lines[end:], nl)


def _ending(line: str, nl: str) -> str:
    return line[len(line.rstrip("\r\n")):] or nl


def _key_width(key: str) -> int:
    if '"' in key or "=" in key or ":" in key:
        return len(key) + 2
    return len(key) + 6 if "`" in key else len(key)


def _ini_line(key: str, value: str, width: int, nl: str) -> str:
    return f"{key}{' ' * (width - len(key))} = {value}{nl}"


def _ini_value(value: str) -> str:
    """go-ini's quoting of a value it writes (file.go writeToBuffer)."""
    if "\n" in value or "`" in value:
        return f'"""{value}"""'
    if "#" in value or ";" in value:
        return f"`{value}`"
    if value.strip() != value:
        return f'"{value}"'
    return value
