"""A file's data key: recover it from its key groups, prove it against the MAC, and re-wrap it for new groups."""

from __future__ import annotations

import binascii
import functools
import hmac
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .crypto import agewrap, shamir
from .errors import SopsctlError
from .model import FileKey, SopsMetadata

DATA_KEY_BYTES = 32
SHARE_BYTES = DATA_KEY_BYTES + 1  # y values and the x byte
_ENC_VALUE = re.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]$", re.S)
# Go's time.RFC3339 parse layout (fractions allowed); sops re-formats it before using it as AAD.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_SHOWN_SSH = 12
_MAX_COALITIONS = 1000  # subsets of groups tried by check_rewrapped: C(12, 6) is 924


class DataKeyError(SopsctlError):
    """The data key cannot be recovered, re-wrapped, or checked; one line per group or problem."""


class NativeWrapError(DataKeyError):
    """A key sopsctl cannot wrap for (pgp, kms, …): only `sops updatekeys` can."""


@dataclass(frozen=True, repr=False)
class Recovered:
    """A recovered data key, the share each opened group gave (Shamir files), and who opened each group."""

    key: bytes
    shares: dict[int, bytes] = field(default_factory=dict)
    opened: dict[int, str] = field(default_factory=dict)
    encs: dict[int, str] = field(default_factory=dict, repr=False)  # the `enc` that opened each group

    def __repr__(self) -> str:  # never the key or a share, whatever prints this
        return f"Recovered(key=<{len(self.key)} bytes>, opened={self.opened!r})"


def shown_recipient(recipient: str) -> str:
    """A recipient short enough for a one-line message; age1… keys are kept whole so they can be grepped."""
    fields = recipient.split(None, 2)
    if fields and fields[0].startswith("ssh-") and len(fields) >= 2 and len(fields[1]) > 2 * _SHOWN_SSH:
        fields[1] = f"{fields[1][:_SHOWN_SSH]}…{fields[1][-8:]}"
        return " ".join(fields)
    return recipient


# --- recovering ----------------------------------------------------------------------------------


def _try_order(group: Sequence[FileKey], held: frozenset[str] = frozenset()) -> list[FileKey]:
    """sops's default decryption order: age entries first (file order), then pgp, then the rest.

    Entries of the X25519 recipients in `held` (the identities at hand) go first: trying an entry
    no identity opens still costs an X25519 exchange per identity, so a file whose opener is its
    sixth entry would pay six instead of one.
    """
    rank = {"age": 0, "pgp": 1}
    return sorted(group, key=lambda entry: (entry.recipient.strip() not in held, rank.get(entry.kind, 2)))


def _held(identities: Any) -> frozenset[str]:
    """The age1… recipients of the identities at hand, when they say (an IdentitySet does)."""
    recipients = getattr(identities, "x25519_recipients", None)
    return frozenset(recipients) if recipients else frozenset()


def _open_group(group: Sequence[FileKey], identities: Any, expected: int,
                held: frozenset[str] = frozenset()) -> tuple[str, bytes, str] | str:
    """(recipient, payload, enc) from the first entry an identity opens, or a report of what was tried."""
    tried: list[str] = []
    skipped: list[str] = []
    problems: list[str] = []
    for entry in _try_order(group, held):
        if entry.kind != "age":
            skipped.append(f"{entry.kind} {shown_recipient(entry.recipient)}")
            continue
        shown = shown_recipient(entry.recipient)
        if not entry.enc:
            problems.append(f"{shown} has no enc")
            continue
        tried.append(shown)
        try:
            payload = agewrap.unwrap(entry.enc, identities)
        except (agewrap.ArmorError, agewrap.UnwrapError) as exc:
            problems.append(f"{shown}: {exc}")
            continue
        except SopsctlError as exc:  # a plugin that failed for this entry only
            problems.append(f"{shown}: {exc}")
            continue
        if payload is None:
            continue
        if len(payload) != expected:
            problems.append(f"{shown} wraps {len(payload)} bytes, expected {expected}")
            continue
        return entry.recipient, payload, entry.enc
    parts = []
    if tried:
        parts.append("no identity opens " + ", ".join(tried))
    if skipped:
        parts.append("skipped " + ", ".join(skipped) + " (sopsctl opens only age entries)")
    parts.extend(problems)
    return "; ".join(parts) or "no entries"


def recover(metadata: SopsMetadata, identities: Any, *, check_mac: bool = True) -> Recovered:
    """The file's data key, as sops recovers it (§3.7); DataKeyError with a per-group report if it cannot.

    One group: any entry that opens gives the key. Several: every group is tried and at least the
    threshold of distinct groups must open (two keys of one group give one share); all the shares
    opened are combined. With `check_mac` (and a `mac` and `lastmodified` in the metadata) the key
    must also decrypt the MAC, so a wrong key never leaves this function.
    """
    groups = metadata.groups
    if not groups or any(not group for group in groups):
        raise DataKeyError("the file's metadata has an empty key group, so no data key can be recovered")
    several = len(groups) > 1
    # sops cannot combine a single share even with shamir_threshold: 1, so two are the floor.
    needed = max(metadata.effective_threshold, 2) if several else 1
    expected = SHARE_BYTES if several else DATA_KEY_BYTES
    opened: dict[int, str] = {}
    payloads: dict[int, bytes] = {}
    encs: dict[int, str] = {}
    reports: dict[int, str] = {}
    held = _held(identities)
    for index, group in enumerate(groups):
        result = _open_group(group, identities, expected, held)
        if isinstance(result, str):
            reports[index] = result
        else:
            opened[index], payloads[index], encs[index] = result
    if len(opened) < needed:
        raise DataKeyError(_failure(groups, needed, opened, reports, identities))
    if several:
        try:
            key = shamir.combine([payloads[index] for index in sorted(payloads)])
        except ValueError as exc:
            raise DataKeyError(f"cannot combine the key shares of groups "
                               f"{', '.join(str(i + 1) for i in sorted(payloads))}: {exc}") from None
        recovered = Recovered(key, dict(payloads), opened, encs)
    else:
        recovered = Recovered(payloads[0], {}, opened, encs)
    if check_mac and metadata.mac and metadata.lastmodified and not verify_key(recovered.key, metadata):
        raise DataKeyError(
            "the data key recovered from the key groups does not decrypt the file's MAC: its key entries "
            "disagree with each other or lastmodified was edited; nothing was changed"
        )
    return recovered


def _failure(groups: Sequence[Sequence[FileKey]], needed: int, opened: Mapping[int, str],
             reports: Mapping[int, str], identities: Any) -> str:
    describe = getattr(identities, "describe", None)
    where = describe() if callable(describe) else f"{len(list(getattr(identities, 'identities', identities)))} identities"
    if len(groups) == 1:
        head = f"cannot recover the data key: none of its entries opens ({where})"
    else:
        head = (f"cannot recover the data key: {len(opened)} of the {needed} key groups needed opened "
                f"({where})")
    lines = [head]
    for index in range(len(groups)):
        label = f"group {index + 1} of {len(groups)}"
        if index in opened:
            lines.append(f"{label}: opened by {shown_recipient(opened[index])}")
        else:
            lines.append(f"{label}: {reports[index]}")
    lines.extend(f"identity source {error}" for error in getattr(identities, "errors", ()))
    return "\n".join(lines)


# --- proving a key against the MAC ---------------------------------------------------------------


@functools.lru_cache(maxsize=256)  # a file's stamp is parsed several times (verify, rotate, the check)
def go_rfc3339(stamp: str) -> str | None:
    """`lastmodified` as Go's RFC 3339 Format writes it after parsing: whole seconds, Z for a zero offset."""
    match = _RFC3339.match(stamp.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0) if zulu else timedelta(hours=int(off_h), minutes=int(off_m))
        if sign == "-":
            offset = -offset
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          tzinfo=timezone(offset))
    except ValueError:
        return None
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if not offset:
        return text + "Z"
    total = int(offset.total_seconds()) // 60
    sign_char = "-" if total < 0 else "+"
    return f"{text}{sign_char}{abs(total) // 60:02d}:{abs(total) % 60:02d}"


def _b64(text: str) -> bytes:
    return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)


def verify_key(key: bytes, metadata: SopsMetadata) -> bool:
    """True when `key` decrypts the file's `mac` (AES-256-GCM, AAD = lastmodified as Go writes it).

    Proves the key without touching any value; the MAC's content itself is not compared.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(key) != DATA_KEY_BYTES or not metadata.mac or not metadata.lastmodified:
        return False
    match = _ENC_VALUE.match(metadata.mac.strip())
    aad = go_rfc3339(str(metadata.lastmodified))
    if match is None or aad is None:
        return False
    try:
        data, iv, tag = (_b64(part) for part in match.groups()[:3])
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    if len(tag) != 16 or not iv:
        return False
    try:
        AESGCM(key).decrypt(iv, data + tag, aad.encode("ascii"))
    except (InvalidTag, ValueError):
        return False
    return True


# --- re-wrapping ---------------------------------------------------------------------------------


def _identity(entry: FileKey) -> tuple[str, str]:
    return entry.kind, entry.recipient.strip()


def _old_encs(old: SopsMetadata, index: int) -> dict[tuple[str, str], str]:
    if index >= len(old.groups):
        return {}
    encs: dict[tuple[str, str], str] = {}
    for entry in old.groups[index]:
        if entry.enc:
            encs.setdefault(_identity(entry), entry.enc)
    return encs


def _new_threshold(groups: Sequence[Sequence[FileKey]], threshold: int | None) -> int:
    if len(groups) == 1:
        return 1
    effective = threshold or len(groups)
    if not 2 <= effective <= len(groups):
        raise DataKeyError(f"Shamir threshold {effective} does not fit {len(groups)} key groups "
                           f"(it must be from 2 to {len(groups)})")
    return effective


def rewrap(recovered: Recovered, old: SopsMetadata, new_groups: Sequence[Sequence[FileKey]],
           threshold: int | None) -> tuple[tuple[FileKey, ...], ...]:
    """`new_groups` with every `enc` filled in for the same data key; any `enc` given is ignored.

    Minimal diffs: an entry whose (kind, recipient) stays in the same group keeps its old `enc`
    verbatim when that still holds — always when one group stays one group; for Shamir files only
    when the number of groups and the threshold are unchanged and every group that needs a new
    wrap had its share opened (its new entries then wrap that share). Otherwise the key is split
    afresh and every entry re-wrapped. A pgp/kms/… entry that needs a wrap raises NativeWrapError.
    """
    groups = [tuple(group) for group in new_groups]
    if not groups or any(not group for group in groups):
        raise DataKeyError("every new key group needs at least one key")
    if len(recovered.key) != DATA_KEY_BYTES:
        raise DataKeyError(f"the recovered data key has {len(recovered.key)} bytes, expected {DATA_KEY_BYTES}")
    effective = _new_threshold(groups, threshold)
    same_shape = len(groups) == len(old.groups)
    kept = [_old_encs(old, index) if same_shape else {} for index in range(len(groups))]
    needs_wrap = [[_identity(e) not in kept[i] for e in group] for i, group in enumerate(groups)]

    payloads: dict[int, bytes]
    if len(groups) == 1:
        payloads = {0: recovered.key}
    else:
        reuse = (same_shape and effective == old.effective_threshold and all(
            index in recovered.shares for index, flags in enumerate(needs_wrap) if any(flags)))
        if reuse:
            payloads = dict(recovered.shares)
        else:
            kept = [{} for _ in groups]
            needs_wrap = [[True] * len(group) for group in groups]
            payloads = dict(enumerate(shamir.split(recovered.key, len(groups), effective)))

    # Refuse before wrapping anything: a plugin may prompt, and a half-done result is useless.
    for index, group in enumerate(groups):
        for entry, wrap_it in zip(group, needs_wrap[index], strict=True):
            if wrap_it and entry.kind != "age":
                raise NativeWrapError(
                    f"group {index + 1}: the {entry.kind} key {shown_recipient(entry.recipient)} needs the "
                    f"data key wrapped for it, which sopsctl cannot do natively; run `sops updatekeys` "
                    f"for this file"
                )
    result = []
    for index, group in enumerate(groups):
        entries = []
        for entry, wrap_it in zip(group, needs_wrap[index], strict=True):
            if wrap_it:
                enc = agewrap.wrap(payloads[index], entry.recipient)
            else:
                enc = kept[index][_identity(entry)]
            entries.append(FileKey(entry.kind, entry.recipient, enc))
        result.append(tuple(entries))
    return tuple(result)


def check_rewrapped(groups: Sequence[Sequence[FileKey]], threshold: int | None, recovered: Recovered,
                    identities: Any) -> None:
    """The last check before a file is replaced: the new groups give back the same data key.

    Recovers the key from `groups` with the same identities (every opened share is combined, so a
    bad share among them shows) and compares it with `recovered.key`; DataKeyError otherwise.
    """
    frozen = tuple(tuple(group) for group in groups)
    effective = _new_threshold(frozen, threshold)
    for index, group in enumerate(frozen):
        for entry in group:
            if entry.kind == "age":
                if not entry.enc:
                    raise DataKeyError(f"group {index + 1}: {shown_recipient(entry.recipient)} has no enc")
                agewrap.dearmor(entry.enc)  # ArmorError (a SopsctlError) if it would not load
    metadata = SopsMetadata(frozen, effective if len(frozen) > 1 else None,
                            "groups" if len(frozen) > 1 else "flat")
    try:
        again = recover(metadata, identities, check_mac=False)
    except DataKeyError as exc:
        raise DataKeyError("the re-wrapped key groups do not give the data key back with the identities "
                           "at hand, so the file is left as it was:\n" + str(exc)) from None
    if not hmac.compare_digest(again.key, recovered.key):
        raise DataKeyError("the re-wrapped key groups give a different data key; the file is left as it was")
    # recover combined every share it opened; sops may combine just `effective` of them. A split made
    # for a higher threshold than the one written passes the first test and fails this one.
    opened = sorted(again.shares)
    for count, subset in enumerate(itertools.combinations(opened, effective)):
        if count >= _MAX_COALITIONS:
            break
        if not hmac.compare_digest(shamir.combine([again.shares[i] for i in subset]), recovered.key):
            shown = ", ".join(str(i + 1) for i in subset)
            raise DataKeyError(f"groups {shown} together would not give the data key back (the split does "
                               f"not match threshold {effective}); the file is left as it was")


def check_written(old: SopsMetadata, planned: Sequence[Sequence[FileKey]], written: SopsMetadata,
                  recovered: Recovered, identities: Any) -> None:
    """The last check before a re-keyed file replaces the original, read back from its new bytes.

    The entries read back must be exactly the planned ones (kind, recipient and `enc`, per group).
    One group staying one group: the entry that opened the key must be among them byte for byte, so
    the identity that unwrapped it gets the same data key again (age decryption is deterministic),
    and every newly wrapped entry must be a well-formed age file; no second unwrap is needed.
    Anything else (Shamir groups, a re-split) goes through check_rewrapped, which unwraps again.
    """
    def entries(groups: Sequence[Sequence[FileKey]]) -> list[list[tuple[str, str, str | None]]]:
        return [sorted((e.kind, e.recipient.strip(), e.enc) for e in group) for group in groups]

    if entries(written.groups) != entries(planned):
        raise DataKeyError("the key entries read back from the re-keyed file are not the ones written (a bug); "
                           "the file is left as it was")
    if len(old.groups) != 1 or len(written.groups) != 1 or 0 not in recovered.encs:
        check_rewrapped(written.groups, written.effective_threshold, recovered, identities)
        return
    opener = (recovered.opened[0].strip(), recovered.encs[0])
    group = written.groups[0]
    if not any(e.kind == "age" and (e.recipient.strip(), e.enc) == opener for e in group):
        check_rewrapped(written.groups, written.effective_threshold, recovered, identities)
        return
    before = {(e.kind, e.recipient.strip(), e.enc) for e in old.groups[0]}
    for entry in group:
        if entry.kind == "age" and (entry.kind, entry.recipient.strip(), entry.enc) not in before:
            if not entry.enc:
                raise DataKeyError(f"{shown_recipient(entry.recipient)} has no enc")
            agewrap.dearmor(entry.enc)  # ArmorError (a SopsctlError) if it would not load
