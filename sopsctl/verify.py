"""Verify encrypted files natively: unwrap the data key, decrypt every value with its path, check the MAC."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tree
from . import values as v
from .datakey import DataKeyError, go_rfc3339, recover, shown_recipient
from .formats import MetadataError, MissingMacError, read_metadata
from .model import SopsMetadata

STATUSES = ("ok", "cannot-unwrap", "mac-mismatch", "corrupt-value", "not-encrypted", "unreadable")
FAILED = frozenset({"cannot-unwrap", "mac-mismatch", "corrupt-value", "not-encrypted"})  # exit 1
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class VerifyResult:
    """One file's verdict. `message` names paths, recipients and identity sources, never a value or key."""

    status: str
    message: str
    recipients_tried: tuple[str, ...] = field(default=())
    # For rotate, which re-uses a successful check instead of repeating it; never printed or compared.
    data_key: bytes | None = field(default=None, repr=False, compare=False)
    leaves: tuple = field(default=(), repr=False, compare=False)
    metadata: SopsMetadata | None = field(default=None, repr=False, compare=False)
    plaintexts: dict = field(default_factory=dict, repr=False, compare=False)  # token -> (EncValue, plaintext)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _recipients(metadata: SopsMetadata) -> tuple[str, ...]:
    return tuple(shown_recipient(entry.recipient) for group in metadata.groups for entry in group
                 if entry.kind == "age")


@dataclass
class _Tally:
    """What walking the values found: the hash input, how many decrypted, the first failure."""

    hashed: list[bytes] = field(default_factory=list)
    plaintexts: dict[str, tuple] = field(default_factory=dict)  # token -> (parts, plaintext), for rotate (never shown)
    decrypted: int = 0
    attempted: int = 0
    failure: tuple[str, str] | None = None  # (path, what is wrong), never the value
    failures: int = 0

    def fail(self, path: str, problem: str) -> None:
        self.failures += 1
        if self.failure is None:
            self.failure = (path, problem)


def _check_values(key: bytes, leaves: Sequence[tree.Leaf], mac_only_encrypted: bool) -> _Tally:
    """sops's Tree.Decrypt over the leaves: each encrypted value decrypted with its path as AAD."""
    tally = _Tally()
    for leaf in leaves:
        if not leaf.encrypted:
            if not mac_only_encrypted:
                try:
                    tally.hashed.append(v.to_bytes(leaf.value))
                except ValueError as exc:  # a time Go cannot format: sops fails on it too
                    tally.fail(leaf.path, f"cannot be hashed as sops hashes it: {exc}")
            continue
        if leaf.value == "":
            continue  # sops never encrypts an empty string; it adds no bytes to the MAC
        match = v.match_enc(leaf.value) if isinstance(leaf.value, str) else None  # v.is_enc, kept
        if match is None:
            tally.fail(leaf.path, "is in clear although the file's rules say it is encrypted")
            continue
        tally.attempted += 1
        try:
            enc = v.parse_enc(leaf.value, match)  # type: ignore[arg-type]
            plaintext = v.decrypt_value(key, enc, leaf.aad)
        except v.DecryptError:
            tally.fail(leaf.path, "does not decrypt with the data key and its path: its ciphertext was "
                                  "altered or it was moved from another key")
            continue
        except ValueError as exc:
            tally.fail(leaf.path, f"is malformed: {exc}")
            continue
        tally.decrypted += 1
        tally.plaintexts[leaf.value] = (enc, plaintext)  # type: ignore[index]
        try:
            canonical = v.canonical_bytes(plaintext, enc.type)
        except ValueError:
            tally.fail(leaf.path, f"decrypts to something that is not a valid {enc.type}")
            continue
        if canonical is not None:  # comments (list items in YAML) are never hashed
            tally.hashed.append(canonical)
    return tally


def _mac_plaintext(key: bytes, metadata: SopsMetadata) -> bytes | None:
    """The decrypted `mac` (the hex digest), or None when it does not decrypt with lastmodified as AAD."""
    stamp = go_rfc3339(str(metadata.lastmodified or ""))
    try:
        enc = v.parse_enc(metadata.mac or "")
    except ValueError:
        return None
    if stamp is None or enc.type != "str":  # sops compares the MAC as a string
        return None
    try:
        return v.decrypt_value(key, enc, stamp)
    except v.DecryptError:
        return None


def verify_file(data: bytes, fmt: str, identities: Any, metadata: SopsMetadata | None = None) -> VerifyResult:
    """Check one file as `sops decrypt` would, without writing or printing any plaintext.

    `identities` is an IdentitySet or a sequence of pyrage identities. Checks run in sops's order:
    metadata, document, data key, every value (with its path as AAD), then the MAC. `metadata`, when
    the caller has just read it from these same bytes (with the enc blobs), is not read again.
    """
    try:
        if metadata is None:
            metadata = read_metadata(data, fmt, full=True)
    except MetadataError as exc:
        if isinstance(exc, MissingMacError):  # sops: "MAC mismatch. File has no MAC" (exit 51)
            return VerifyResult("mac-mismatch", "the file has no MAC: its mac entry was removed or emptied")
        return VerifyResult("unreadable", f"its sops metadata is malformed: {exc}")
    if metadata is None:
        return VerifyResult("not-encrypted", "not SOPS-encrypted: it has no sops metadata")
    tried = _recipients(metadata)
    if go_rfc3339(str(metadata.lastmodified or "")) is None:
        return VerifyResult("unreadable", "its sops metadata has no valid lastmodified (RFC 3339)", tried)
    try:
        rules = tree.Rules.from_options(metadata.options)
        leaves = tree.leaves(data, fmt, rules)
    except tree.TreeError as exc:
        return VerifyResult("unreadable", str(exc), tried)
    try:
        recovered = recover(metadata, identities, check_mac=False)
    except DataKeyError as exc:
        return VerifyResult("cannot-unwrap", "; ".join(exc.lines()), tried)
    key = recovered.key
    opener = ", ".join(shown_recipient(r) for r in recovered.opened.values())
    tally = _check_values(key, leaves, rules.mac_only_encrypted)
    stored = _mac_plaintext(key, metadata)
    if tally.failure is not None:
        if stored is None and tally.decrypted == 0 and tally.attempted:
            return VerifyResult("cannot-unwrap", f"the data key opened by {opener} is not this file's: it "
                                "decrypts neither the MAC nor any value (a key entry was replaced or "
                                "corrupted)", tried)
        path, problem = tally.failure
        more = f" ({tally.failures - 1} more value(s) fail too)" if tally.failures > 1 else ""
        return VerifyResult("corrupt-value", f"the value at {path} {problem}{more}", tried)
    if stored is None:
        return VerifyResult("mac-mismatch", "the MAC does not decrypt with the data key and lastmodified: "
                            "lastmodified or the mac was changed" + (
                                "" if tally.attempted else ", or a key entry was replaced"), tried)
    computed = v.mac_hex(tally.hashed, rules.mac_only_encrypted).encode("ascii")
    if not hmac.compare_digest(stored, computed):
        return VerifyResult("mac-mismatch", "the MAC does not match the values: a value, an unencrypted value "
                            "or the order of entries was changed", tried)
    count = sum(1 for leaf in leaves if leaf.encrypted and leaf.value != "")
    return VerifyResult("ok", f"{count} encrypted value(s) and the MAC verified (key opened by {opener})", tried,
                        key, tuple(leaves), metadata, tally.plaintexts)


def verify_path(path: Path, fmt: str, identities: Any) -> VerifyResult:
    """Read one file (bounded size) and verify it; an unreadable file is a result, not an exception."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return VerifyResult("unreadable", f"cannot read it: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        return VerifyResult("unreadable", f"over the {MAX_FILE_BYTES}-byte limit")
    return verify_file(data, fmt, identities)


def verify_paths(files: Iterable[tuple[str, Path]], identities: Any) -> list[tuple[str, VerifyResult]]:
    """(display path, result) for each (display path, file), in order; the format comes from the name, as in
    sops. Files are verified on every core (workers.fork_map): decrypting every value is CPU work."""
    from .formats import detect_format
    from .identities import batch_processes
    from .workers import fork_map

    items = list(files)

    def one(item: tuple[str, Path]) -> VerifyResult:
        shown, path = item
        result = verify_path(path, detect_format(shown), identities)
        # The verdict only: the data key and the plaintexts never leave the process that found them.
        return VerifyResult(result.status, result.message, result.recipients_tried)

    results: list[VerifyResult | None] = [None] * len(items)
    for index, result in fork_map(one, items, workers=batch_processes(identities)):
        results[index] = result
    return [(shown, result) for (shown, _), result in zip(items, results, strict=True)]  # type: ignore[misc]
