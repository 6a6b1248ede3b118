"""Replace the key entries of a file's `sops` metadata, keeping every other byte (the writers `rekey` needs)."""

from __future__ import annotations

from collections.abc import Sequence

from ..model import FileKey, SopsMetadata
from .keyplan import NotNativeError, _check, list_change

__all__ = ["NotNativeError", "list_change", "replace_key_groups"]


def replace_key_groups(data: bytes, fmt: str, groups: Sequence[Sequence[FileKey]], threshold: int | None,
                       old: SopsMetadata | None = None) -> bytes:
    """The file with only its sops key entries (and shamir_threshold) replaced; every other byte kept.

    One group is written in the flat layout, several as `key_groups`, as sops would write them.
    Entries whose (kind, recipient, enc) the file already holds keep their exact text.
    Raises MetadataError when the file's metadata cannot be read or is not laid out as a block
    (YAML flow style), NotNativeError for a new non-age key, ValueError for impossible groups.
    `old`, the file's metadata as read (with its enc blobs), lets the common change (one age list
    keeps, re-wraps, drops and appends entries) be spliced into the bytes without re-parsing them;
    the result is the same as the general writer's.
    """
    checked = _check(groups, threshold)
    if fmt == "yaml":
        from .write_yaml import replace_yaml, splice_yaml

        change = list_change(old, checked, threshold) if old is not None else None
        if change is not None:
            spliced = splice_yaml(data, *change)
            if spliced is not None:
                return spliced
        return replace_yaml(data, checked, threshold)
    if fmt in ("json", "binary"):
        from .write_json import replace_json

        return replace_json(data, checked, threshold)
    if fmt in ("dotenv", "ini"):
        from .write_flat import replace_flat

        appended = fmt == "dotenv" and old is not None and list_change(old, checked, threshold) is not None
        return replace_flat(data, fmt, checked, threshold, appended)
    raise ValueError(f"unknown format {fmt!r}")
