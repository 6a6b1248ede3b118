"""The plan of a sops block's key entries, whatever the format (pure): order, styles, entries kept or made."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import SopsctlError
from ..model import FileKey, SopsMetadata
from . import KEY_LISTS, MetadataError, _entry_key

# Go struct order of sops 3.11 (stores/stores.go); sops >= 3.13 writes every mapping byte-sorted instead.
TOP_ORDER_311 = ("shamir_threshold", "key_groups", "kms", "gcp_kms", "hckms", "azure_kv", "hc_vault", "age",
                 "lastmodified", "mac", "pgp", "unencrypted_suffix", "encrypted_suffix", "unencrypted_regex",
                 "encrypted_regex", "unencrypted_comment_regex", "encrypted_comment_regex",
                 "mac_only_encrypted", "version")
GROUP_ORDER_311 = ("pgp", "kms", "gcp_kms", "hckms", "azure_kv", "hc_vault", "age")
ENTRY_ORDER_311 = {
    "age": ("recipient", "enc"),
    "pgp": ("created_at", "enc", "fp"),
    "kms": ("arn", "role", "context", "created_at", "enc", "aws_profile"),
    "gcp_kms": ("resource_id", "created_at", "enc"),
    "hckms": ("key_id", "created_at", "enc"),
    "azure_kv": ("vault_url", "name", "version", "created_at", "enc"),
    "hc_vault": ("vault_address", "engine_path", "key_name", "created_at", "enc"),
}
ALWAYS_IN_GROUP = ("hc_vault", "age")  # no omitempty on these two in a key group: sops writes them empty
MANAGED = frozenset(KEY_LISTS) | {"key_groups", "shamir_threshold"}
SORTED, GO_311 = "sorted", "3.11"

T = TypeVar("T")


class NotNativeError(SopsctlError, ValueError):
    """A key sopsctl cannot write itself (a new pgp, kms… entry): the user runs sops for that file."""


@dataclass(frozen=True)
class Entry:
    """One key entry to write: its identity and the mapping sops would store for it."""

    key: FileKey
    mapping: dict


@dataclass(frozen=True)
class Plan:
    """What the new key entries are, in the order and style the file's writer used."""

    style: str  # SORTED or GO_311
    threshold: int | None  # shamir_threshold to write; None: none
    flat: tuple[tuple[str, tuple[Entry, ...]], ...] | None  # one group: key kind -> entries
    groups: tuple[tuple[tuple[str, tuple[Entry, ...]], ...], ...] | None  # several: per group, kind -> entries

    def top_rank(self, name: str) -> Hashable | None:
        return _rank(name, self.style, TOP_ORDER_311)

    def group_rank(self, name: str) -> Hashable | None:
        return _rank(name, self.style, GROUP_ORDER_311)


def _rank(name: str, style: str, order: tuple[str, ...]) -> Hashable | None:
    if style == SORTED:
        return name
    return order.index(name) if name in order else None


def list_change(old: SopsMetadata, groups: tuple[tuple[FileKey, ...], ...], threshold: int | None,
                ) -> tuple[tuple[FileKey, ...], list[tuple[int, FileKey]], list[FileKey]] | None:
    """The change as one age list: (old entries, [(old index, entry) kept or re-wrapped, in file order],
    appended entries); None when it is anything else (several groups, other kinds, a threshold…)."""
    if (threshold or len(groups) != 1 or old.layout != "flat" or len(old.groups) != 1
            or old.threshold is not None):
        return None
    before = old.groups[0]
    index = {}
    for position, entry in enumerate(before):
        if entry.kind != "age" or not entry.enc or entry.recipient in index:
            return None
        index[entry.recipient] = position
    staying: list[tuple[int, FileKey]] = []
    added: list[FileKey] = []
    last = -1
    for entry in groups[0]:
        if entry.kind != "age":
            return None
        position = index.get(entry.recipient)
        if position is None:
            if entry.recipient in {e.recipient for e in added}:
                return None
            added.append(entry)
        elif added or position <= last:
            return None  # not (file order, then new ones): the general writer decides
        else:
            staying.append((position, entry))
            last = position
    return before, staying, added


def _check(groups: Sequence[Sequence[FileKey]], threshold: int | None) -> tuple[tuple[FileKey, ...], ...]:
    if not groups or any(not g for g in groups):
        raise ValueError("every key group needs at least one key")
    if len(groups) > 255:
        raise ValueError("sops supports at most 255 key groups")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0):
        raise ValueError(f"bad shamir threshold {threshold!r}")
    out = []
    for group in groups:
        keys = []
        for key in group:
            if key.kind not in KEY_LISTS:
                raise ValueError(f"unknown key kind {key.kind!r}")
            if not isinstance(key.enc, str) or not key.enc:
                raise ValueError(f"the {key.kind} entry for {key.recipient} has no wrapped data key")
            if not key.recipient or "\n" in key.recipient:
                raise ValueError(f"bad {key.kind} recipient {key.recipient!r}")
            keys.append(FileKey(key.kind, key.recipient.strip(), key.enc))  # sops stores recipients trimmed
        out.append(tuple(keys))
    if len(out) > 1 and threshold and not 2 <= threshold <= len(out):
        raise ValueError(f"shamir threshold {threshold} needs 2 to {len(out)} for {len(out)} groups")
    return tuple(out)


def make_plan(meta: Mapping, groups: tuple[tuple[FileKey, ...], ...], threshold: int | None) -> Plan:
    """Resolve every new key against the file's own entries (`meta` is its decoded sops mapping)."""
    style = detect_style(meta)
    old = _old_entries(meta)
    if len(groups) == 1:
        return Plan(style, _threshold(threshold, 1, "shamir_threshold" in meta), _kinds(groups[0], old, style, False),
                    None)
    return Plan(style, _threshold(threshold, len(groups), "shamir_threshold" in meta), None,
                tuple(_kinds(g, old, style, True) for g in groups))


def _threshold(threshold: int | None, count: int, had: bool) -> int | None:
    """What sops would write: the given threshold; absent stays absent when it means the default."""
    if not threshold:  # None or 0 mean "the default": every group (sops reads a missing value so)
        return (count if count > 1 else 1) if had else None
    if count == 1 and threshold == 1 and not had:
        return None
    return threshold


def _kinds(group: tuple[FileKey, ...], old: dict, style: str, in_groups: bool) -> tuple[tuple[str, tuple[Entry, ...]], ...]:
    order = sorted(GROUP_ORDER_311) if style == SORTED else GROUP_ORDER_311
    by_kind: dict[str, list[Entry]] = {}
    for key in group:  # keys of one kind keep their given order; kinds follow the struct order
        by_kind.setdefault(key.kind, []).append(Entry(key, _resolve(key, old, style)))
    return tuple((kind, tuple(by_kind.get(kind, ()))) for kind in order
                 if by_kind.get(kind) or (in_groups and kind in ALWAYS_IN_GROUP))


def _resolve(key: FileKey, old: dict, style: str) -> dict:
    candidates = old.get((key.kind, key.recipient), [])
    for mapping in candidates:
        if mapping.get("enc") == key.enc:
            return dict(mapping)
    if candidates:  # the same key re-wrapped (a new Shamir share): keep its other fields (pgp created_at…)
        return {k: (key.enc if k == "enc" else v) for k, v in candidates[0].items()}
    if key.kind != "age":
        raise NotNativeError(f"a new {key.kind} entry cannot be written natively ({key.recipient}); "
                         "run `sops updatekeys` for this file")
    if style == SORTED:
        return {"enc": key.enc, "recipient": key.recipient}
    return {"recipient": key.recipient, "enc": key.enc}


def _old_entries(meta: Mapping) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for mapping in [meta, *[g for g in _list(meta.get("key_groups")) if isinstance(g, dict)]]:
        for kind in KEY_LISTS:
            for entry in _list(mapping.get(kind)):
                if isinstance(entry, dict):
                    try:
                        out.setdefault((kind, _entry_key(kind, entry).strip()), []).append(entry)
                    except MetadataError:
                        continue  # an entry sops could not use either: nothing to keep from it
    return out


def entry_id(kind: str, entry: object) -> tuple[str, str, object] | None:
    """(kind, recipient, enc) of a decoded entry: what decides whether its text can be kept."""
    if not isinstance(entry, dict):
        return None
    try:
        return kind, _entry_key(kind, entry).strip(), entry.get("enc")
    except MetadataError:
        return None


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def detect_style(meta: Mapping) -> str:
    """SORTED when the block was last written by sops >= 3.13 (every mapping byte-sorted), else GO_311."""
    decisive = False
    for mapping, order in _mappings(meta):
        keys = list(mapping)
        if keys != sorted(keys):
            return GO_311
        if keys != sorted(keys, key=lambda k: order.index(k) if k in order else len(order)):
            decisive = True
    if decisive:
        return SORTED
    version = str(meta.get("version", ""))
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return GO_311
    return SORTED if (major, minor) >= (3, 13) else GO_311


def _mappings(meta: Mapping):
    yield meta, TOP_ORDER_311
    groups = [g for g in _list(meta.get("key_groups")) if isinstance(g, dict)]
    for group in groups:
        yield group, GROUP_ORDER_311
    for mapping in [meta, *groups]:
        for kind, order in ENTRY_ORDER_311.items():
            for entry in _list(mapping.get(kind)):
                if isinstance(entry, dict):
                    yield entry, order


def merge(old: Sequence[tuple[str | None, T]], new: Mapping[str, T], managed: Callable[[str], bool],
          rank: Callable[[str], Hashable | None]) -> list[T]:
    """Fields of a mapping after replacement: unmanaged ones stay where they are, a managed one that
    stays is replaced in place, dropped ones go, and new ones are inserted before the first field
    that ranks after them (sops's own field order), so a file sops wrote keeps sops's order."""
    present = {name for name, _ in old if name is not None}
    pending = [n for n in new if n not in present]
    if all(rank(n) is not None for n in pending):
        pending.sort(key=rank)  # type: ignore[arg-type]
    out: list[T] = []
    done: set[str] = set()

    def flush(limit: Hashable | None) -> None:
        while pending and (limit is None or (rank(pending[0]) is not None and rank(pending[0]) < limit)):  # type: ignore[operator]
            out.append(new[pending.pop(0)])

    for name, item in old:
        if name is not None and managed(name):
            if name not in new or name in done:
                continue
            done.add(name)
            item = new[name]
        limit = rank(name) if name is not None else None
        if limit is not None:
            flush(limit)
        out.append(item)
    flush(None)
    return out
