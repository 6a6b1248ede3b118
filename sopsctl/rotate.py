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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import values as v
from .batch import governed_file, rewrite_batch
from .datakey import DATA_KEY_BYTES, DataKeyError, Recovered, go_rfc3339, recover, rewrap
from .engine import RuleMatcher
from .errors import SopsctlError
from .identities import batch_processes
from .model import CreationRule, FileKey, SopsMetadata
from .rekey import rule_threshold, target_groups

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
                  data: bytes = b"") -> Iterator[str]:
    """Candidate AADs for a comment at byte `position`, most likely first: the enclosing paths of the
    next value, of the previous one, then every other path of the document. Lazily: the first
    candidate almost always fits, and the whole list costs a pass over every path of the file."""
    seen: set[str] = set()

    def fresh(candidates: Iterable[str]) -> Iterator[str]:
        for aad in candidates:
            if aad not in seen:
                seen.add(aad)
                yield aad

    if data:
        by_indent = _indented_path(data, position)
        if by_indent is not None:
            yield from fresh((by_indent,))
    after = next((aad for start, aad in value_spans if start > position), None)
    before = next((aad for start, aad in reversed(value_spans) if start < position), None)
    for aad in (after, before):
        if aad is not None:
            yield from fresh(_candidates(aad))
    yield from fresh((":",))
    for aad in everything:
        yield from fresh(_candidates(aad))


_LASTMODIFIED = re.compile(rb'(?m)^([ \t]*"?(?:sops_)?lastmodified"?[ \t]*[:=][ \t]*["\']?)'
                           rb"([^\r\n]*?)(?=[\"']?[ \t]*,?[ \t]*\r?$)")


def _replace_lastmodified(data: bytes, old: str, new: str) -> bytes:
    """Every `lastmodified` entry holding `old` gets `new`, in the file's own quoting (YAML, JSON, dotenv, INI)."""
    wanted, stamp = old.encode("utf-8"), new.encode("ascii")
    pieces, last = [], 0
    position = data.find(wanted)
    while position >= 0:  # only the lines holding the old stamp are tried: no scan of every line
        match = _LASTMODIFIED.match(data, data.rfind(b"\n", 0, position) + 1)
        if match is not None and match.start(2) == position and match.group(2) == wanted:
            pieces += [data[last:position], stamp]
            last = match.end(2)
        position = data.find(wanted, position + 1)
    result = b"".join(pieces) + data[last:]
    if not pieces:
        raise RotateError("cannot find its lastmodified entry to update (metadata laid out unusually); "
                          "rotate it with `sops rotate -i`")
    return result


def rotate_bytes(data: bytes, fmt: str, identities: Any, groups: Sequence[Sequence[FileKey]] | None = None,
                 threshold: int | None = None, *, stamp: str | None = None,
                 metadata: SopsMetadata | None = None) -> bytes:
    """The rotated file: new data key, every token re-encrypted with its IV and AAD, new MAC and lastmodified.

    `groups`/`threshold` are the recipients to wrap the new key for (default: the file's own);
    `metadata`, the file's metadata when the caller has just read it from `data`. Raises RotateError
    (or DataKeyError, a ValueError from the writers) and never returns an unverified result.
    """
    from .formats.write import replace_key_groups
    from .verify import verify_file

    checked = verify_file(data, fmt, identities, metadata)  # one full decryption: every value and the MAC
    if not checked.ok:
        raise RotateError(f"not rotated, it does not verify ({checked.status}): {checked.message}")
    metadata = checked.metadata
    assert metadata is not None and metadata.mac and metadata.lastmodified  # verify_file checked them
    assert checked.data_key is not None
    old = Recovered(checked.data_key)  # the key verify_file just proved right: no second unwrap
    leaves = checked.leaves
    known = checked.plaintexts  # each value token's parts and plaintext from that check: not redone
    encrypted = {leaf.value: leaf.aad for leaf in leaves if leaf.encrypted and isinstance(leaf.value, str)}
    clear = {leaf.value for leaf in leaves if not leaf.encrypted and isinstance(leaf.value, str)}

    new_key = secrets.token_bytes(DATA_KEY_BYTES)
    if hmac.compare_digest(new_key, old.key):  # never in practice; the guarantee is stated, so checked
        raise RotateError("the new data key equals the old one; nothing was changed")
    new_stamp = stamp or now_stamp()
    old_aad = go_rfc3339(str(metadata.lastmodified))
    assert old_aad is not None
    mac_enc = v.parse_enc(metadata.mac)
    digest = v.decrypt_value(old.key, mac_enc, old_aad)
    new_mac = v.encrypt_value(new_key, digest, new_stamp, "str", iv=mac_enc.iv)

    matches = list(_TOKEN.finditer(data))
    texts = [m.group(0).decode("ascii") for m in matches]
    value_spans = [(m.start(), encrypted[t]) for m, t in zip(matches, texts, strict=True) if t in encrypted]
    pieces: list[bytes] = []
    tokens: list[str] = []  # every token of the result, in order: what the check below expects to find
    last = 0
    for match, text in zip(matches, texts, strict=True):
        if text == metadata.mac:
            replacement = new_mac
        elif text in clear and text not in encrypted:
            tokens.append(text)
            continue  # a clear value that only looks encrypted: sops hashes it as it is
        else:
            replacement = _reencrypt(text, match.start(), old.key, new_key, encrypted, value_spans, data,
                                     *known.get(text, (None, None)))
        tokens.append(replacement)
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
    result = replace_key_groups(result, fmt, wrapped, threshold if several else None, old=metadata)
    _check_rotated(result, fmt, identities, new_key, new_stamp, new_mac, wrapped, tokens)
    return result


def _check_rotated(result: bytes, fmt: str, identities: Any, new_key: bytes, new_stamp: str, new_mac: str,
                   wrapped: Sequence[Sequence[FileKey]], tokens: Sequence[str]) -> None:
    """The result, read back, before it may replace the original; RotateError otherwise.

    It differs from the verified original only in its tokens, lastmodified and key entries, so this
    reads those back: the key entries are the ones wrapped and give the new key with the identities at
    hand (a real unwrap), the MAC decrypts with it and the new lastmodified, and every token is the
    one written, in place (each value token was decrypted again as it was made, see _reencrypt).
    """
    from .formats import MetadataError, read_metadata

    fail = "; the original is untouched"
    try:
        written = read_metadata(result, fmt, full=True)
    except MetadataError as exc:
        raise RotateError(f"the rotated file's sops metadata does not read back ({exc}){fail}") from None
    if written is None or go_rfc3339(str(written.lastmodified or "")) != go_rfc3339(new_stamp) \
            or written.mac != new_mac:
        raise RotateError(f"the rotated file's lastmodified or mac did not read back as written{fail}")

    def entries(groups: Sequence[Sequence[FileKey]]) -> list[list[tuple[str, str, str | None]]]:
        return [sorted((e.kind, e.recipient.strip(), e.enc) for e in group) for group in groups]

    if entries(written.groups) != entries(wrapped):
        raise RotateError(f"the rotated file's key entries do not read back as written{fail}")
    try:
        again = recover(written, identities, check_mac=True)  # unwrap, and the MAC must decrypt with it
    except DataKeyError as exc:
        raise RotateError(f"the rotated file would not verify (cannot-unwrap: {'; '.join(exc.lines())}){fail}") \
            from None
    if not hmac.compare_digest(again.key, new_key):
        raise RotateError(f"the rotated file's key entries do not give the new data key back{fail}")
    if [m.group(0).decode("ascii") for m in _TOKEN.finditer(result)] != list(tokens):
        raise RotateError(f"the rotated file's encrypted values are not the ones written, in place{fail}")


def _reencrypt(text: str, position: int, old_key: bytes, new_key: bytes, encrypted: dict[str, str],
               value_spans: Sequence[tuple[int, str]], data: bytes = b"", enc: v.EncValue | None = None,
               plaintext: bytes | None = None) -> str:
    """`text` encrypted again under `new_key` with its IV and AAD; its parts and `plaintext` when already
    known (a value the verification decrypted with this AAD), else found here (comments: their AAD is
    searched)."""
    if enc is None:
        enc = v.parse_enc(text)
    known = encrypted.get(text)
    aads = [known] if known is not None else _comment_aads(position, value_spans, encrypted.values(), data)
    for aad in aads:
        if plaintext is None or known is None:
            try:
                plaintext = v.decrypt_value(old_key, enc, aad)
            except v.DecryptError:
                continue
        replacement = v.encrypt_value(new_key, plaintext, aad, enc.type, iv=enc.iv)
        if not replacement:
            raise RotateError(f"an encrypted {enc.type} at {aad[:-1] or 'the top level'} is empty, which sops "
                              "never writes; not rotated")
        again = v.parse_enc(replacement)  # read back as a reader would: the same type and plaintext
        if again.type != enc.type or v.decrypt_value(new_key, again, aad) != plaintext:
            raise RotateError("a re-encrypted value does not decrypt back to itself (a bug); not rotated")
        return replacement
    where = f"the value at {known[:-1]}" if known is not None else f"an encrypted {enc.type} (byte {position})"
    raise RotateError(f"{where} does not decrypt with the data key; not rotated (nothing was changed)")


# --- the batch ------------------------------------------------------------------------------------


_NOT_ENCRYPTED = "not SOPS-encrypted: it has no sops metadata, so nothing to rotate"


def run(root: Path, relatives: Sequence[str], rules: Sequence[CreationRule], identities: Any, *,
        progress: Callable[[int], None] | None = None, stamp: str | None = None,
        overrides: Mapping[str, CreationRule | str] | None = None) -> RotateReport:
    """Rotate every file (each checked before and after); write those that succeeded in one batch.

    The files are read and rotated on every core (batch.rewrite_batch: rotation is CPU work); the
    sync and every rename are this process's. `overrides` gives the rule of files `.sops.yaml` does
    not govern (clan secrets: their links).
    """
    matcher = RuleMatcher(rules)
    stamp = stamp or now_stamp()  # one lastmodified for the batch: formatting it per file cost 10 µs each

    def rotate_one(relative: str) -> tuple[bytes | None, str | None]:
        """(rotated bytes, None), or (None, the one-line reason it is not rotated)."""
        found = governed_file(root, relative, rules, matcher, _NOT_ENCRYPTED, overrides)
        if found is None or isinstance(found, str):
            return None, found or _NOT_ENCRYPTED
        _, fmt, data, metadata, rule = found
        try:
            return rotate_bytes(data, fmt, identities, target_groups(metadata, rule), rule_threshold(rule),
                                stamp=stamp, metadata=metadata), None
        except (SopsctlError, DataKeyError, ValueError) as exc:
            return None, str(exc).replace("\n", "; ")

    rotated, failed = rewrite_batch(root, relatives, rotate_one, workers=batch_processes(identities),
                                    progress=progress)
    return RotateReport(rotated, failed)
