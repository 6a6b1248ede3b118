"""Read the `sops` metadata of an encrypted file in any format sops writes (YAML, JSON, dotenv, INI, binary)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..model import FileKey, SopsMetadata

FORMATS = ("yaml", "json", "dotenv", "ini", "binary")
OPTION_FIELDS = (
    "unencrypted_suffix", "encrypted_suffix", "unencrypted_regex", "encrypted_regex",
    "unencrypted_comment_regex", "encrypted_comment_regex", "mac_only_encrypted",
)
# Master key lists sops writes, and the field that names each entry's key.
KEY_LISTS = {"age": "recipient", "pgp": "fp", "kms": "arn", "gcp_kms": "resource_id", "azure_kv": "vault_url",
             "hc_vault": "vault_address", "hckms": "key_id"}


class MetadataError(ValueError):
    """The file claims to be SOPS-encrypted but its metadata is malformed."""


class MissingMacError(MetadataError):
    """The metadata has no `mac`: sops reports that as a MAC failure, so verify does too."""


def detect_format(path: str) -> str:
    """The store sops picks by file name (cmd/sops/formats FormatForPath)."""
    name = path.rsplit("/", 1)[-1]
    if name.endswith((".yaml", ".yml")):
        return "yaml"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".env"):
        return "dotenv"
    if name.endswith(".ini"):
        return "ini"
    return "binary"


def read_metadata(data: bytes, fmt: str, full: bool = False) -> SopsMetadata | None:
    """The file's metadata; None when it is not SOPS-encrypted; MetadataError when it claims to be but is broken.

    With `full`, every FileKey carries its `enc` blob (re-keying needs them; audit does not, and the
    fast YAML scanner skips them). The other formats always keep them.
    """
    if fmt == "yaml":
        from .yamlmeta import read_yaml_metadata

        return read_yaml_metadata(data, full)
    if fmt in ("json", "binary"):
        return _read_json(data, fmt)
    from .flat import read_flat_metadata

    return read_flat_metadata(data, fmt)


def _read_json(data: bytes, fmt: str) -> SopsMetadata | None:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        if data.lstrip()[:1] == b"{" and b'"sops"' in data:  # a JSON document that lost its end
            raise MetadataError("not valid JSON, though it has a sops entry") from None
        return None  # a plain file: binary secrets that were never encrypted look like this
    if not isinstance(document, dict) or "sops" not in document:
        return None
    return metadata_from_mapping(document["sops"])


def _entry_key(kind: str, entry: Mapping) -> str:
    field = KEY_LISTS[kind]
    value = entry.get(field)
    if kind == "azure_kv" and value:
        return f"{value}/keys/{entry.get('name', '')}"
    if kind == "hc_vault" and value:
        return f"{value}/v1/{entry.get('engine_path', '')}/keys/{entry.get('key_name', '')}"
    if not isinstance(value, str) or not value:
        raise MetadataError(f"a {kind} entry has no {field}")
    return value


def _group(mapping: Mapping, where: str) -> tuple[FileKey, ...]:
    keys: list[FileKey] = []
    for kind in KEY_LISTS:
        entries = mapping.get(kind)
        if entries in (None, "", []):
            continue
        if not isinstance(entries, list):
            raise MetadataError(f"{where}{kind} must be a list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise MetadataError(f"{where}{kind} entries must be mappings")
            enc = entry.get("enc")
            keys.append(FileKey(kind, _entry_key(kind, entry).strip(), enc if isinstance(enc, str) else None))
    return tuple(keys)


def metadata_from_mapping(meta: object) -> SopsMetadata:
    """Validate a decoded `sops` mapping the way sops reads it (stores.Metadata.ToInternal)."""
    if not isinstance(meta, dict):
        raise MetadataError("the sops entry is not a mapping")
    flat = _group(meta, "")
    raw_groups = meta.get("key_groups")
    groups = None
    if not flat and isinstance(raw_groups, list) and raw_groups:
        groups = [_group(g, f"key_groups[{i}].") if isinstance(g, dict) else _bad_group(i)
                  for i, g in enumerate(raw_groups)]
    elif not flat and raw_groups not in (None, "", []):
        raise MetadataError("key_groups must be a list")
    return build_metadata(meta, flat, groups)


def build_metadata(scalars: dict, flat: tuple[FileKey, ...] | list[FileKey],
                   groups: list[tuple[FileKey, ...]] | list[list[FileKey]] | None) -> SopsMetadata:
    """The checks every reader shares: mac and version present, some keys, a numeric threshold."""
    for field in ("mac", "version"):
        if not isinstance(scalars.get(field), str) or not scalars.get(field):
            raise (MissingMacError if field == "mac" else MetadataError)(f"the sops entry has no {field}")
    if flat:  # sops reads the flat lists first and ignores key_groups then
        layout, final = "flat", (tuple(flat),)
    elif groups:
        layout, final = "groups", tuple(tuple(g) for g in groups)
        if any(not g for g in final):
            raise MetadataError("a key group is empty")
    else:
        raise MetadataError("no keys found in the sops entry")
    threshold = scalars.get("shamir_threshold")
    if threshold in (None, ""):
        threshold = None
    else:
        try:
            threshold = int(threshold)  # dotenv, INI and the YAML scanner give it as a string
        except (TypeError, ValueError, OverflowError):  # OverflowError: .inf or 1e999
            raise MetadataError(f"shamir_threshold is not a number: {threshold!r}") from None
    # dotenv, INI and the YAML scanner give strings; the mapping form has real types: agree on one.
    options = tuple((k, True if k == "mac_only_encrypted" else str(scalars[k])) for k in OPTION_FIELDS
                    if scalars.get(k) not in (None, "", False, "false", "False"))
    lastmodified = scalars.get("lastmodified")
    return SopsMetadata(final, threshold or None, layout, str(lastmodified) if lastmodified else None,
                        scalars["mac"], scalars["version"], options)


def _bad_group(index: int) -> tuple[FileKey, ...]:
    raise MetadataError(f"key_groups[{index}] is not a mapping")
