"""dotenv and INI files keep sops metadata flattened (`age__list_0__map_recipient`); read it back into a mapping."""

from __future__ import annotations

import re

from ..model import SopsMetadata
from . import MetadataError, metadata_from_mapping

_TOKEN = re.compile(r"__(list|map)_")


def unflatten(flat: dict[str, str]) -> dict:
    """Invert sops's FlattenMetadata: `a__list_0__map_b` -> {"a": [{"b": …}]}."""
    root: dict = {}
    for name, value in flat.items():
        parts = _TOKEN.split(name)
        # parts: [key, kind, rest, kind, rest, ...]; kind says what the *previous* container holds
        path: list[object] = [parts[0]]
        for kind, rest in zip(parts[1::2], parts[2::2], strict=True):
            if kind == "list":
                if not (rest.isascii() and rest.isdigit()):
                    raise MetadataError(f"bad list index in {name}")
                if int(rest) >= len(flat):  # sops numbers entries from 0: a bigger index is a hole (or a bomb)
                    raise MetadataError(f"list index {rest} in {name} is beyond the {len(flat)} metadata entries")
                path.append(int(rest))
            else:
                path.append(rest)
        node: object = root
        for step, following in zip(path, path[1:], strict=False):
            container = [] if isinstance(following, int) else {}
            if isinstance(node, dict):
                node = node.setdefault(step, container)
            else:
                assert isinstance(node, list) and isinstance(step, int)
                while len(node) <= step:
                    node.append(None)
                if node[step] is None:
                    node[step] = container
                node = node[step]
            if not isinstance(node, list if isinstance(following, int) else dict):  # e.g. a value, then a__map_b
                raise MetadataError(f"inconsistent metadata key {name}")
        last = path[-1]
        if isinstance(node, dict):
            node[last] = value
        else:
            while len(node) <= last:  # type: ignore[operator]
                node.append(None)
            node[last] = value  # type: ignore[index]
    return root


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n")


def read_flat_metadata(data: bytes, fmt: str) -> SopsMetadata | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    flat: dict[str, str] = {}
    if fmt == "dotenv":
        for line in text.splitlines():
            if line.startswith("sops_") and "=" in line:
                key, _, value = line.partition("=")
                flat[key[len("sops_"):]] = _unescape(value)
    else:
        section = None
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
            elif section == "sops" and "=" in line and not line.startswith((";", "#")):
                key, _, value = line.partition("=")
                flat[key.strip()] = _unescape(value.strip())
    if not flat:
        return None
    return metadata_from_mapping(unflatten(flat))
