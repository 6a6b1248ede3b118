"""Native rotate (use case): a new data key for each file, every value re-encrypted, new MAC and lastmodified.

Like `sops rotate`, every encrypted value keeps its IV and AAD (its path) and only its `data`/`tag`
change; comments are re-encrypted the same way. The rotation works on the file's bytes: each
`ENC[AES256_GCM,…]` token is replaced in place, so everything else stays byte-identical, and the key
entries are rewritten for the recipients the policy's rule names. A file is rotated only when its
values all decrypt and its MAC verifies, and the result is verified before it is written.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import values as v
from .datakey import DATA_KEY_BYTES, DataKeyError, Recovered, go_rfc3339, rewrap
from .errors import SopsctlError
from .model import CreationRule, FileKey, SopsMetadata
from .rekey import governed_files, rule_threshold, target_groups, write_results

# A token as sops writes it: standard base64 parts, a lower-case type; bytes so any encoding works.
_TOKEN = re.compile(rb"ENC\[AES256_GCM,data:([A-Za-z0-9+/=]+),iv:([A-Za-z0-9+/=]+),tag:([A-Za-z0-9+/=]+),"
                    rb"type:([a-z]+)\]")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


class RotateError(SopsctlError):
    """This file cannot be rotated; the message names paths and what to do, never a value or key."""


@dataclass
class RotateReport:
    rotated: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)


def now_stamp() -> str:
    return datetime.now(UTC).strftime(_STAMP)


def _candidates(aad: str) -> list[str]:
    """`a:b:c:` itself (a list's comments share its path), then `a:b:`, `a:`, and the top level `:`."""
    parts = aad[:-1].split(":") if aad not in ("", ":") else []
    found = [":".join(parts[:n]) + ":" for n in range(len(parts), 0, -1)]
    return [*found, ":"]


_KEY_LINE = re.compile(rb"""(?:"([^"]*)"|'([^']*)'|([^:#'"][^:#]*?)):(?:[ \t]|$)""")


def _indented_path(data: bytes, position: int) -> str | None:
    """The enclosing mapping path of a YAML line by indentation: the keys of less-indented lines above.

    List items do not extend a path (sops), so a `- …` line is climbed over. A mapping with no values
    left in the tree (only nulls) gives no candidate from the leaves; this finds it from the text.
    """
    start = data.rfind(b"\n", 0, position) + 1
    line = data[start:position + 1]
    limit = len(line) - len(line.lstrip(b" "))
    parts: list[str] = []
    cursor = start
    while cursor > 0 and limit > 0:
        end = cursor - 1
        begin = data.rfind(b"\n", 0, end) + 1
        text, cursor = data[begin:end], begin
        stripped = text.lstrip(b" ")
        indent = len(text) - len(stripped)
        if not stripped.strip() or stripped.startswith(b"#") or indent >= limit:
            continue
        limit = indent
        if stripped.startswith(b"-"):
            continue
        match = _KEY_LINE.match(stripped)
        if match is None:
            return None
        parts.append(next(g for g in match.groups() if g is not None).strip()
                     .decode("utf-8", "replace") if match.group(3) else
                     next(g for g in match.groups() if g is not None).decode("utf-8", "replace"))
    return ":".join(reversed(parts)) + ":" if parts else ":"


def _comment_aads(position: int, value_spans: Sequence[tuple[int, str]], everything: Iterable[str],
                  data: bytes = b"") -> list[str]:
    """Candidate AADs for a comment at byte `position`, most likely first: the enclosing paths of the
    next value, of the previous one, then every other path of the document."""
    after = next((aad for start, aad in value_spans if start > position), None)
    before = next((aad for start, aad in reversed(value_spans) if start < position), None)
    ordered: dict[str, None] = {}
    by_indent = _indented_path(data, position) if data else None
    if by_indent is not None:
        ordered[by_indent] = None
    for aad in (after, before):
        if aad is not None:
            ordered.update(dict.fromkeys(_candidates(aad)))
    ordered[":"] = None
    for aad in everything:
        ordered.update(dict.fromkeys(_candidates(aad)))
    return list(ordered)


def _replace_lastmodified(data: bytes, old: str, new: str) -> bytes:
    """Every `lastmodified` entry holding `old` gets `new`, in the file's own quoting (YAML, JSON, dotenv, INI)."""
    pattern = re.compile(rb'(?m)^([ \t]*"?(?:sops_)?lastmodified"?[ \t]*[:=][ \t]*["\']?)'
                         + re.escape(old.encode("utf-8")) + rb"(?=[\"']?[ \t]*,?[ \t]*\r?$)")
    result, count = pattern.subn(lambda m: m.group(1) + new.encode("ascii"), data)
    if count == 0:
        raise RotateError("cannot find its lastmodified entry to update (metadata laid out unusually); "
                          "rotate it with `sops rotate -i`")
    return result


def rotate_bytes(data: bytes, fmt: str, identities: Any, groups: Sequence[Sequence[FileKey]] | None = None,
                 threshold: int | None = None, *, stamp: str | None = None) -> bytes:
    """The rotated file: new data key, every token re-encrypted with its IV and AAD, new MAC and lastmodified.

    `groups`/`threshold` are the recipients to wrap the new key for (default: the file's own). Raises
    RotateError (or DataKeyError, a ValueError from the writers) and never returns an unverified result.
    """
    from .formats import read_metadata
    from .formats.write import replace_key_groups
    from .verify import verify_file

    checked = verify_file(data, fmt, identities)
    if not checked.ok:
        raise RotateError(f"not rotated, it does not verify ({checked.status}): {checked.message}")
    metadata = read_metadata(data, fmt, full=True)
    assert metadata is not None and metadata.mac and metadata.lastmodified  # verify_file checked them
    assert checked.data_key is not None
    old = Recovered(checked.data_key)  # the key verify_file just proved right: no second unwrap
    leaves = checked.leaves
    encrypted = {leaf.value: leaf.aad for leaf in leaves if leaf.encrypted and isinstance(leaf.value, str)}
    clear = {leaf.value for leaf in leaves if not leaf.encrypted and isinstance(leaf.value, str)}

    new_key = secrets.token_bytes(DATA_KEY_BYTES)
    if hmac.compare_digest(new_key, old.key):  # never in practice; the guarantee is stated, so checked
        raise RotateError("the new data key equals the old one; nothing was changed")
    new_stamp = stamp or now_stamp()
    old_aad = go_rfc3339(str(metadata.lastmodified))
    assert old_aad is not None
    digest = v.decrypt_value(old.key, v.parse_enc(metadata.mac), old_aad)
    mac_enc = v.parse_enc(metadata.mac)
    new_mac = v.encrypt_value(new_key, digest, new_stamp, "str", iv=mac_enc.iv)

    matches = list(_TOKEN.finditer(data))
    texts = [m.group(0).decode("ascii") for m in matches]
    value_spans = [(m.start(), encrypted[t]) for m, t in zip(matches, texts, strict=True) if t in encrypted]
    pieces: list[bytes] = []
    last = 0
    for match, text in zip(matches, texts, strict=True):
        if text == metadata.mac:
            replacement = new_mac
        elif text in clear and text not in encrypted:
            continue  # a clear value that only looks encrypted: sops hashes it as it is
        else:
            replacement = _reencrypt(text, match.start(), old.key, new_key, encrypted, value_spans, data)
        pieces += [data[last:match.start()], replacement.encode("ascii")]
        last = match.end()
    pieces.append(data[last:])
    result = _replace_lastmodified(b"".join(pieces), str(metadata.lastmodified), new_stamp)

    wanted = [tuple(g) for g in (groups if groups is not None else metadata.groups)]
    several = len(wanted) > 1
    if groups is None:
        threshold = metadata.threshold if several else None
    # A fresh Recovered and an "old" with no groups: every entry is wrapped anew (a fresh Shamir split).
    wrapped = rewrap(Recovered(new_key), SopsMetadata(()), wanted, threshold if several else None)
    result = replace_key_groups(result, fmt, wrapped, threshold if several else None)

    again = verify_file(result, fmt, identities)
    if not again.ok:
        raise RotateError(f"the rotated file would not verify ({again.status}: {again.message}); "
                          "the original is untouched")
    # verify_file unwrapped a key from the NEW entries that decrypts every value: it must be the new one.
    if again.data_key is None or not hmac.compare_digest(again.data_key, new_key):
        raise RotateError("the rotated file's key entries do not give the new data key back; the original is "
                          "untouched")
    return result


def _reencrypt(text: str, position: int, old_key: bytes, new_key: bytes, encrypted: dict[str, str],
               value_spans: Sequence[tuple[int, str]], data: bytes = b"") -> str:
    enc = v.parse_enc(text)
    known = encrypted.get(text)
    aads = [known] if known is not None else _comment_aads(position, value_spans, encrypted.values(), data)
    for aad in aads:
        try:
            plaintext = v.decrypt_value(old_key, enc, aad)
        except v.DecryptError:
            continue
        replacement = v.encrypt_value(new_key, plaintext, aad, enc.type, iv=enc.iv)
        if not replacement:
            raise RotateError(f"an encrypted {enc.type} at {aad[:-1] or 'the top level'} is empty, which sops "
                              "never writes; not rotated")
        return replacement
    where = f"the value at {known[:-1]}" if known is not None else f"an encrypted {enc.type} (byte {position})"
    raise RotateError(f"{where} does not decrypt with the data key; not rotated (nothing was changed)")


# --- the batch ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    path: str
    fmt: str
    data: bytes
    groups: tuple[tuple[FileKey, ...], ...]
    threshold: int | None


def plan(root: Path, relatives: Sequence[str], rules: Sequence[CreationRule], report: RotateReport,
         overrides: Mapping[str, CreationRule | str] | None = None) -> list[_Plan]:
    """Read each file and find the recipients its rule names; unreadable, plain or uncovered files fail."""
    return [_Plan(relative, fmt, data, target_groups(metadata, rule), rule_threshold(rule))
            for relative, fmt, data, metadata, rule in governed_files(
                root, relatives, rules, lambda path, why: report.failed.append((path, why)),
                plain="not SOPS-encrypted: it has no sops metadata, so nothing to rotate", overrides=overrides)]


def run(root: Path, relatives: Sequence[str], rules: Sequence[CreationRule], identities: Any, *,
        progress: Callable[[int], None] | None = None, stamp: str | None = None,
        overrides: Mapping[str, CreationRule | str] | None = None) -> RotateReport:
    """Rotate every file (each checked before and after); write those that succeeded in one batch.

    `overrides` gives the rule of files `.sops.yaml` does not govern (clan secrets: their links)."""
    report = RotateReport()
    results: dict[str, bytes] = {}
    for item in plan(root, relatives, rules, report, overrides):
        try:
            results[item.path] = rotate_bytes(item.data, item.fmt, identities, item.groups, item.threshold,
                                              stamp=stamp)
        except (SopsctlError, DataKeyError, ValueError) as exc:
            report.failed.append((item.path, str(exc).replace("\n", "; ")))
        if progress:
            progress(1)
    report.rotated, not_written = write_results(root, results)
    report.failed = sorted(report.failed + not_written)
    return report
