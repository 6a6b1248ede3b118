"""Re-key writers: only the sops key entries change, byte for byte as `sops updatekeys` writes them."""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopsctl.errors import SopsctlError
from sopsctl.formats import MetadataError, detect_format, read_metadata
from sopsctl.formats.write import replace_key_groups
from sopsctl.formats.write_json import go_string
from sopsctl.model import FileKey

from ..conftest import REAL_FLEET, VECTORS
from ..strategies import key_pool

IDS = VECTORS / "identities"
ADMIN, USER, HOST1, HOST2, SSH_AGE = (
    (IDS / f"vec-{n}.pub").read_text().strip() for n in ("admin", "user", "host1", "host2", "ssh-as-age"))
SSH = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINE2jIPaKGNZfTq0P/dvmDWgsCRNhwmSIiF0ObZpIqO/ someone@host"
ARMOR_BEGIN, ARMOR_END = "-----BEGIN AGE ENCRYPTED FILE-----\n", "-----END AGE ENCRYPTED FILE-----\n"


def _sops_files() -> list[Path]:
    vectors = [p for p in sorted(VECTORS.rglob("*")) if p.is_file() and ".enc" in p.name]
    # sops files of the real fleet: secrets/**.yaml|.enc (YAML, binary) and clan `secret` files (binary)
    fleet = [p for p in sorted(REAL_FLEET.rglob("*")) if p.is_file() and not p.is_symlink() and (
        p.name == "secret" or ("secrets" in p.parts and p.suffix in (".yaml", ".enc")))]
    return vectors + fleet


SOPS_FILES = _sops_files()


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS if path.is_relative_to(VECTORS) else REAL_FLEET))


def _fmt(path: Path | str) -> str:
    return detect_format(str(path))


def _meta(data: bytes, fmt: str):
    meta = read_metadata(data, fmt, full=True)
    assert meta is not None
    return meta


def _fake_blob(seed: str) -> str:
    """Armored-looking text: the writers never look inside enc, readers must return it as is."""
    body = (seed.encode().hex() * 8)[:120]
    return ARMOR_BEGIN + "\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + "\n" + ARMOR_END


def _other_blobs(groups) -> list[tuple[FileKey, ...]]:
    return [tuple(k._replace(enc=_fake_blob(k.recipient + str(i))) for k in g) for i, g in enumerate(groups)]


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_every_layout_is_covered() -> None:
    """The identity tests below run over every format and layout the brief names (guards the file list)."""
    names = {_id(p) for p in SOPS_FILES}
    for wanted in ("yaml/nested.enc.yaml", "json/basic.enc.json", "dotenv/app.enc.env", "ini/app.enc.ini",
                   "binary/blob.enc", "shamir/three-groups.enc.yaml", "shamir/three-groups.enc.json",
                   "multidoc/two-docs.enc.yaml", "comments/unencrypted-comment.enc.yaml",
                   "regex/k8s-secret.enc.yaml", "mac-only/suffix.enc.yaml", "ssh/mixed-recipients.enc.yaml",
                   "head/secrets/shared.yaml", "head/secrets/bridge/crs58-age-key.enc"):
        assert wanted in names
    sorted_style = [p for p in SOPS_FILES if b"- enc: |" in p.read_bytes() or b'{\n\t\t\t\t"enc"' in p.read_bytes()]
    assert len(sorted_style) >= 4  # 3.13-written files: YAML and binary


@pytest.mark.parametrize("name", ["yaml/nested.enc.yaml", "json/basic.enc.json", "dotenv/app.enc.env",
                                  "ini/app.enc.ini", "binary/blob.enc", "shamir/three-groups.enc.yaml"])
def test_full_read_returns_the_blobs(vectors: Path, name: str) -> None:
    data = (vectors / name).read_bytes()
    keys = [k for g in _meta(data, _fmt(name)).groups for k in g]
    assert keys and all(k.enc.startswith(ARMOR_BEGIN) and k.enc.endswith(ARMOR_END) for k in keys)
    if name.endswith(".yaml"):  # the fast scanner audit uses still skips them
        assert all(k.enc is None for g in read_metadata(data, "yaml").groups for k in g)


@pytest.mark.parametrize(("value", "written"), [
    ("age1abc", "age1abc"), (SSH, SSH), ("123", '"123"'), ("true", '"true"'), ("y", '"y"'), ("off", '"off"'),
    ("2024-01-01", '"2024-01-01"'), ("", '""'), ("a: b", "'a: b'"), (" lead", "' lead'"), ("*x", "'*x'"),
    ("a #b", "'a #b'"), ("tab\there", '"tab\\there"'),
])
def test_yaml_scalars_quoted_like_go_yaml(value: str, written: str) -> None:
    from sopsctl.formats.write_yaml import _scalar

    assert _scalar(value) == written


def test_json_strings_escaped_like_go() -> None:
    assert go_string("<a&b>\u2028é\n") == '"\\u003ca\\u0026b\\u003e\\u2028é\\n"'


# -- (a) identity -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", SOPS_FILES, ids=_id)
def test_own_groups_give_the_same_bytes(path: Path) -> None:
    data = path.read_bytes()
    meta = _meta(data, _fmt(path))
    assert replace_key_groups(data, _fmt(path), meta.groups, meta.threshold) == data


@pytest.mark.parametrize("path", SOPS_FILES, ids=_id)
def test_regenerated_entries_are_byte_identical(path: Path) -> None:
    """Swap every blob, then put the originals back: nothing of the original entries' text is left
    to reuse, so the writer must regenerate each entry exactly as sops (3.11 or 3.13) wrote it."""
    data, fmt = path.read_bytes(), _fmt(path)
    meta = _meta(data, fmt)
    swapped = replace_key_groups(data, fmt, _other_blobs(meta.groups), meta.threshold)
    assert swapped != data
    assert _meta(swapped, fmt).groups == tuple(tuple(g) for g in _other_blobs(meta.groups))
    assert replace_key_groups(swapped, fmt, meta.groups, meta.threshold) == data


@pytest.mark.parametrize("name", ["yaml/nested.enc.yaml", "shamir/three-groups.enc.yaml", "multidoc/two-docs.enc.yaml",
                                  "json/basic.enc.json", "shamir/three-groups.enc.json", "dotenv/app.enc.env",
                                  "ini/app.enc.ini", "binary/blob.enc"])
def test_crlf_files_keep_their_line_endings(vectors: Path, name: str) -> None:
    lf = (vectors / name).read_bytes()
    crlf, fmt = _crlf(lf), _fmt(name)
    meta = _meta(crlf, fmt)
    assert replace_key_groups(crlf, fmt, meta.groups, meta.threshold) == crlf
    new_groups = _other_blobs(meta.groups)
    expected = replace_key_groups(lf, fmt, new_groups, meta.threshold)
    out = replace_key_groups(crlf, fmt, new_groups, meta.threshold)
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert out == _crlf(expected)


def test_unknown_metadata_fields_and_comments_outside_stay(vectors: Path) -> None:
    data = (vectors / "yaml/nested.enc.yaml").read_bytes()
    data = data.replace(b"    lastmodified:", b"    future_field:\n        x: [1, 2]\n    lastmodified:")
    data += b"# a trailing comment\n"
    meta = _meta(data, "yaml")
    out = replace_key_groups(data, "yaml", [meta.groups[0][:1]], None)
    assert b"    future_field:\n        x: [1, 2]\n    lastmodified:" in out and out.endswith(b"# a trailing comment\n")
    assert HOST1.encode() not in out and _meta(out, "yaml").groups == (meta.groups[0][:1],)


# -- (b) against the real sops ----------------------------------------------------------------


def test_matches_the_updatekeys_vector(vectors: Path) -> None:
    before = (vectors / "rekey/secret.before.enc.yaml").read_bytes()
    after = (vectors / "rekey/secret.after.enc.yaml").read_bytes()
    meta = _meta(after, "yaml")
    assert replace_key_groups(before, "yaml", meta.groups, meta.threshold) == after


def _rule(groups: list[list[str]], threshold: int | None = None, indent: int | None = None) -> str:
    lines = []
    if indent:
        lines += ["stores:", "  yaml:", f"    indent: {indent}"]
    lines += ["creation_rules:", "  - path_regex: .*"]
    if threshold:
        lines.append(f"    shamir_threshold: {threshold}")
    if len(groups) == 1:
        lines.append(f"    age: {','.join(groups[0])}")
    else:
        lines.append("    key_groups:")
        lines += [f"      - age: [{', '.join(g)}]" for g in groups]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    plain: bytes
    before: list[list[str]]
    after: list[list[str]]
    threshold: int | None = None  # the rule's, when it encrypts `before`
    indent: int | None = None
    identities: tuple[str, ...] = ("admin",)  # enough to unwrap `before`


PLAIN_YAML = b"db:\n  password: hunter2\n  port: 5432\nlist:\n  - a\n  - b: c\n# note\nplain_unencrypted: x\n"
FLAT, TWO_ONE = [[ADMIN, HOST1]], [[ADMIN, USER], [HOST1]]
CASES = [
    Case("yaml-flat", "s.yaml", PLAIN_YAML, FLAT, [[ADMIN, HOST2]]),
    Case("yaml-indent2", "s.yaml", PLAIN_YAML, FLAT, [[HOST2, ADMIN, USER]], indent=2),
    Case("yaml-multidoc", "s.yaml", b"a: 1\n---\nb: two\n", FLAT, [[ADMIN, HOST2]]),
    Case("json-flat", "s.json", b'{"a": "<&>", "n": 1, "l": [1, {"x": null}]}', FLAT, [[ADMIN, HOST2]]),
    Case("dotenv-flat", "s.env", b"A=1\n#c\nB=two words\n", FLAT, [[ADMIN, HOST2, USER]]),
    Case("ini-flat", "s.ini", b"[s]\nk = v\n\n[t]\nx = y\n", FLAT, [[ADMIN, HOST2]]),
    Case("binary-flat", "s.bin", bytes(range(256)), FLAT, [[ADMIN, HOST2]]),
    # sops keeps the file's threshold: flat -> 3 groups writes 3; 2 groups -> 1 group writes 1
    Case("yaml-flat-to-groups", "s.yaml", PLAIN_YAML, FLAT, [[ADMIN], [HOST1], [HOST2]]),
    Case("yaml-groups-to-flat", "s.yaml", PLAIN_YAML, TWO_ONE, [[ADMIN, HOST2]], 2, identities=("admin", "host1")),
    Case("yaml-groups-change", "s.yaml", PLAIN_YAML, [[ADMIN, USER], [HOST1], [HOST2]], [[ADMIN], [HOST1, USER], [HOST2]],
         2, identities=("admin", "host1")),
    Case("yaml-indent2-groups", "s.yaml", PLAIN_YAML, FLAT, [[ADMIN, USER], [HOST2]], indent=2),
    Case("yaml-indent3-groups", "s.yaml", PLAIN_YAML, FLAT, [[ADMIN], [USER, HOST2]], indent=3),
    Case("json-flat-to-groups", "s.json", b'{"a": 1}', FLAT, [[ADMIN, USER], [HOST2]]),
    Case("json-groups-to-flat", "s.json", b'{"a": 1}', TWO_ONE, [[ADMIN, HOST2]], 2, identities=("admin", "host1")),
    Case("dotenv-flat-to-groups", "s.env", b"A=1\n", FLAT, [[ADMIN], [HOST1, HOST2], [USER]]),
    Case("dotenv-groups-to-flat", "s.env", b"A=1\n", TWO_ONE, [[HOST2]], 2, identities=("admin", "host1")),
    Case("ini-flat-to-groups", "s.ini", b"[s]\nk = v\n", FLAT, [[ADMIN, USER], [HOST2]]),
    Case("binary-groups-change", "s.bin", b"x", TWO_ONE, [[ADMIN], [HOST1, HOST2]], 2, identities=("admin", "host1")),
]


def _run_sops(sops: Path, cwd: Path, *args: str, key_file: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "SOPS_AGE_KEY_FILE": str(key_file or "/dev/null")}
    return subprocess.run([str(sops), *args], cwd=cwd, env=env, capture_output=True, timeout=60)


def _key_file(directory: Path, names: tuple[str, ...]) -> Path:
    path = directory / ("ids-" + "-".join(names) + ".txt")
    path.write_text("".join((IDS / f"vec-{n}.txt").read_text() for n in names))
    return path


@pytest.fixture(scope="module")
def pairs(sops_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes, Path]]:
    """(before, after, dir) per case: `sops encrypt` under one rule, `sops updatekeys -y` under another."""
    out = {}
    for case in CASES:
        work = tmp_path_factory.mktemp(case.name)
        (work / case.file).write_bytes(case.plain)
        (work / ".sops.yaml").write_text(_rule(case.before, case.threshold, case.indent))
        done = _run_sops(sops_bin, work, "encrypt", "--output", "enc." + case.file, case.file)
        assert done.returncode == 0, done.stderr.decode()
        before = (work / ("enc." + case.file)).read_bytes()
        (work / ".sops.yaml").write_text(_rule(case.after, None, case.indent))
        done = _run_sops(sops_bin, work, "updatekeys", "-y", "enc." + case.file,
                         key_file=_key_file(work, case.identities))
        assert done.returncode == 0, done.stderr.decode()
        out[case.name] = (before, (work / ("enc." + case.file)).read_bytes(), work)
    return out


def _ini_sections(data: bytes) -> tuple[list, dict]:
    """Sections other than [sops] in order, and [sops] as a mapping (3.11 writes it in Go map order)."""
    sections: list[tuple[str, list[str]]] = []
    for line in data.decode().splitlines():
        if line.startswith("["):
            sections.append((line, []))
        elif line.strip() and sections:
            sections[-1][1].append(line)
    sops = {k.strip(): v.strip() for line in dict(sections)["[sops]"] for k, _, v in [line.partition("=")]}
    return [s for s in sections if s[0] != "[sops]"], sops


@pytest.mark.interop
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_sops_updatekeys(case: Case, pairs, sops_bin: Path) -> None:
    before, after, work = pairs[case.name]
    fmt = _fmt(case.file)
    meta = _meta(after, fmt)
    assert [[k.recipient for k in g] for g in meta.groups] == case.after  # sops did what the case says
    out = replace_key_groups(before, fmt, meta.groups, meta.threshold)
    if fmt == "ini":
        assert _ini_sections(out) == _ini_sections(after)
        (work / "mine.ini").write_bytes(out)
        ids = _key_file(work, ("admin",) if len(meta.groups) == 1 else ("admin", "host2"))
        done = _run_sops(sops_bin, work, "decrypt", "mine.ini", key_file=ids)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout == _run_sops(sops_bin, work, "decrypt", "enc.s.ini", key_file=ids).stdout
    elif fmt == "binary":
        # updatekeys re-emits the `_unencrypted` suffix sops assumes for a binary file that records
        # none: a change outside the key entries that SPEC §5 forbids, so ours keeps the file's absence.
        suffix = b'\t\t"unencrypted_suffix": "_unencrypted",\n'
        assert suffix not in before and suffix in after
        assert out == after.replace(suffix, b"")
    else:
        assert out == after


# -- (c) remove one recipient, add one: minimal diff, sops still decrypts ----------------------


def _identity(name: str) -> pyrage.x25519.Identity:
    text = (IDS / f"vec-{name}.txt").read_text()
    return pyrage.x25519.Identity.from_str(next(line for line in text.splitlines() if line.startswith("AGE-SECRET")))


def _wrap_for(enc: str, holder: str, recipient: str) -> str:
    """Unwrap a blob with the holder's identity and wrap the same data key (or share) for `recipient`."""
    secret = pyrage.decrypt(enc.encode(), [_identity(holder)])
    return pyrage.encrypt(secret, [pyrage.x25519.Recipient.from_str(recipient)], armored=True).decode()


def _entry_lines(fmt: str, key: FileKey) -> set[str]:
    """The lines (stripped) an age entry may occupy in each format, its structure lines included."""
    if fmt == "yaml":
        return {f"- recipient: {key.recipient}", f"recipient: {key.recipient}", "- enc: |", "enc: |",
                *key.enc.splitlines()}
    if fmt in ("json", "binary"):
        return {"{", "}", "},", f'"recipient": "{key.recipient}",', f'"recipient": "{key.recipient}"',
                f'"enc": {go_string(key.enc)}', f'"enc": {go_string(key.enc)},'}
    flat = key.enc.replace("\n", "\\n")
    return {key.recipient, flat}


def _diff_only_touches(fmt: str, old: bytes, new: bytes, removed: FileKey, added: FileKey) -> None:
    diff = [d for d in difflib.ndiff(old.decode().splitlines(), new.decode().splitlines()) if d[:1] in "+-"]
    assert diff, "nothing changed"
    for line in diff:
        content = line[2:].strip()
        key = removed if line[0] == "-" else added
        if fmt in ("dotenv", "ini"):  # `name=value`: the value must be one of the entry's
            content = content.partition("=")[2].strip()
        assert content in _entry_lines(fmt, key), f"diff touches a line outside the changed entries: {line!r}"


REPLACE_CASES = [  # file, the recipient who goes, the one who comes (and then reads it; the other cannot)
    ("yaml/nested.enc.yaml", HOST1, USER),
    ("json/basic.enc.json", HOST1, USER),
    ("dotenv/app.enc.env", HOST1, USER),
    ("ini/app.enc.ini", HOST1, USER),
    ("binary/blob.enc", HOST1, USER),
    ("multidoc/two-docs.enc.yaml", HOST1, USER),
    ("ssh/mixed-recipients.enc.yaml", SSH_AGE, USER),
    ("shamir/three-groups.enc.yaml", USER, SSH_AGE),
    ("shamir/three-groups.enc.json", USER, SSH_AGE),
]
NAMES = {ADMIN: "admin", USER: "user", HOST1: "host1", HOST2: "host2", SSH_AGE: "ssh-as-age"}


@pytest.mark.interop
@pytest.mark.parametrize(("name", "gone", "new"), REPLACE_CASES, ids=[c[0] for c in REPLACE_CASES])
def test_replace_one_recipient(vectors: Path, sops_bin: Path, tmp_path: Path, name: str, gone: str, new: str) -> None:
    data, fmt = (vectors / name).read_bytes(), _fmt(name)
    meta = _meta(data, fmt)
    admin = next(k for k in meta.groups[0] if k.recipient == ADMIN)
    removed = next(k for g in meta.groups for k in g if k.recipient == gone)
    added = FileKey("age", new, _wrap_for(admin.enc, "admin", new))  # the same data key, or group 1's share
    groups = [tuple(k for k in g if k != removed) + ((added,) if i == 0 else ()) for i, g in enumerate(meta.groups)]
    out = replace_key_groups(data, fmt, groups, meta.threshold)
    assert _meta(out, fmt).groups == tuple(groups)
    _diff_only_touches(fmt, data, out, removed, added)
    if fmt == "yaml":  # the staying entry keeps its exact text
        assert re.search(rb"- recipient: " + ADMIN.encode() + rb"\n +enc: \|\n", out)
    target = tmp_path / Path(name).name
    target.write_bytes(out)
    others = () if len(meta.groups) == 1 else ("host1",)
    readers = _key_file(tmp_path, (NAMES[new], *others))
    done = _run_sops(sops_bin, tmp_path, "decrypt", target.name, key_file=readers)
    assert done.returncode == 0, done.stderr.decode()  # data key unwraps and the MAC verifies
    assert done.stdout == (vectors / name.replace(".enc", ".dec")).read_bytes()
    lost = _key_file(tmp_path, (NAMES[gone], *others))
    assert _run_sops(sops_bin, tmp_path, "decrypt", target.name, key_file=lost).returncode == 128


def test_sorted_files_stay_sorted(real_fleet: Path, sops_bin: Path, tmp_path: Path) -> None:
    """A file last written by sops >= 3.13: the new entry is written `enc` first, in place, the rest kept."""
    path = real_fleet / "head/secrets/shared.yaml"
    data = path.read_bytes()
    meta = _meta(data, "yaml")
    removed = meta.groups[0][2]
    added = FileKey("age", key_pool()[0], _fake_blob("new"))
    groups = [tuple(k for k in meta.groups[0] if k != removed) + (added,)]
    out = replace_key_groups(data, "yaml", groups, None)
    diff = [d for d in difflib.ndiff(data.decode().splitlines(), out.decode().splitlines()) if d[:1] in "+-"]
    assert [d for d in diff if d[0] == "-"] == _sorted_entry("-", removed)
    assert [d for d in diff if d[0] == "+"] == _sorted_entry("+", added)
    assert out.decode().index(added.recipient) > out.decode().index(meta.groups[0][-1].recipient)
    # to Shamir, sorted: key_groups where it sorts, groups `age` before `hc_vault`, threshold after mac
    two = replace_key_groups(data, "yaml", [groups[0][:2], groups[0][2:]], 2)
    text = two.decode().split("\nsops:\n")[1]
    keys = re.findall(r"^    (\w+):", text, re.M)
    assert keys == sorted(keys) and keys[:2] == ["key_groups", "lastmodified"]
    assert "        - age:\n            - enc: |\n" in text and "          hc_vault: []\n" in text
    (tmp_path / "x.yaml").write_bytes(two)  # sops 3.11 reads the sorted layout
    done = _run_sops(sops_bin, tmp_path, "filestatus", "x.yaml")
    assert json.loads(done.stdout) == {"encrypted": True}


def _sorted_entry(sign: str, key: FileKey) -> list[str]:
    return [f"{sign}         - enc: |", *(f"{sign}             {line}" for line in key.enc.splitlines()),
            f"{sign}           recipient: {key.recipient}"]


def test_sorted_binary_file(real_fleet: Path) -> None:
    data = (real_fleet / "head/secrets/bridge/tara-age-key.enc").read_bytes()
    meta = _meta(data, "binary")
    added = FileKey("age", key_pool()[1], _fake_blob("x"))
    out = replace_key_groups(data, "binary", [meta.groups[0] + (added,)], None)
    last_entry_end = data.rindex(b"\n\t\t]")
    new_entry = f',\n\t\t\t{{\n\t\t\t\t"enc": {go_string(added.enc)},\n\t\t\t\t"recipient": "{added.recipient}"\n\t\t\t}}'
    assert out == data[:last_entry_end] + new_entry.encode() + data[last_entry_end:]


def test_ini_keeps_lines_and_pads_only_when_it_must(vectors: Path, sops_bin: Path, tmp_path: Path) -> None:
    data = (vectors / "ini/app.enc.ini").read_bytes()
    meta = _meta(data, "ini")
    added = FileKey("age", USER, _wrap_for(meta.groups[0][0].enc, "admin", USER))
    out = replace_key_groups(data, "ini", [meta.groups[0] + (added,)], None)
    flat_enc = added.enc.replace("\n", "\\n")
    # 3.11 order is random: old lines stay as they are, new ones go at the end, padded like the rest
    assert out == data + f"age__list_2__map_recipient = {USER}\nage__list_2__map_enc       = {flat_enc}\n".encode()
    # to Shamir the keys grow longer than the old alignment: the whole section is re-padded
    two = replace_key_groups(data, "ini", [meta.groups[0], (added,)], 2)
    section = two.decode().split("[sops]\n")[1].splitlines()
    assert len({line.index(" = ") for line in section}) == 1
    assert section[0].index(" = ") == len("key_groups__list_0__map_age__list_1__map_recipient")
    assert _meta(two, "ini").groups == (meta.groups[0], (added,))
    (tmp_path / "x.ini").write_bytes(two)  # sops reads it (decrypting re-padded files: test_matches_sops_updatekeys)
    assert json.loads(_run_sops(sops_bin, tmp_path, "filestatus", "x.ini").stdout) == {"encrypted": True}


def test_sorted_ini_inserts_in_order(vectors: Path) -> None:
    text = (vectors / "ini/app.enc.ini").read_text()
    head, section = text.split("[sops]\n")
    data = (head + "[sops]\n" + "".join(sorted(section.splitlines(True)))).encode()  # as sops 3.13 writes it
    meta = _meta(data, "ini")
    out = replace_key_groups(data, "ini", [meta.groups[0] + (FileKey("age", USER, _fake_blob("u")),)], None)
    keys = [line.split(" ")[0] for line in out.decode().split("[sops]\n")[1].splitlines()]
    assert keys == sorted(keys) and "age__list_2__map_enc" in keys


def test_ini_does_not_shrink_padding(vectors: Path) -> None:
    """Back to one group the longest keys go, but staying lines keep their (wider) padding."""
    data = (vectors / "ini/app.enc.ini").read_bytes()
    meta = _meta(data, "ini")
    two = replace_key_groups(data, "ini", [meta.groups[0][:1], meta.groups[0][1:]], 2)
    one = replace_key_groups(two, "ini", meta.groups, 1)
    managed = ("key_groups", "age", "shamir_threshold")
    unmanaged = [line for line in two.decode().splitlines() if not line.startswith(managed)]
    assert [line for line in one.decode().splitlines() if not line.startswith(managed)] == unmanaged
    assert len({line.index(" = ") for line in one.decode().split("[sops]\n")[1].splitlines()}) == 1
    assert _meta(one, "ini").groups == meta.groups


# -- layouts sops would not write: what stays must stay ----------------------------------------


def test_yaml_odd_layouts_keep_their_text(vectors: Path) -> None:
    data = (vectors / "shamir/three-groups.enc.yaml").read_bytes()
    # a comment under `key_groups:`, `null` for an empty list, `age` moved last and a comment after it
    data = data.replace(b"    key_groups:\n", b"    key_groups:\n        # three groups\n")
    data = data.replace(b"        - hc_vault: []\n          age:\n            - recipient: age1s4",
                        b"        - hc_vault: null\n          age:\n            - recipient: age1s4")
    meta = _meta(data, "yaml")
    assert replace_key_groups(data, "yaml", meta.groups, meta.threshold) == data
    groups = [meta.groups[0][:1], *meta.groups[1:]]  # user leaves group 1
    out = replace_key_groups(data, "yaml", groups, 2)
    assert b"        - hc_vault: null\n          age:\n            - recipient: age1s4" in out
    assert USER.encode() not in out and _meta(out, "yaml").groups == tuple(groups)
    user_entry = re.search(rb"            - recipient: " + USER.encode() + rb"\n(?:                .*\n|              enc: \|\n)+",
                           data)
    assert user_entry and out == data.replace(user_entry.group(), b"")  # only user's entry went
    flat = (vectors / "yaml/nested.enc.yaml").read_bytes()
    head, block = flat.split(b"\nsops:\n")
    age_end = block.index(b"    lastmodified:")
    moved = head + b"\nsops:\n" + block[age_end:] + block[:age_end] + b"# after the block\n"
    meta = _meta(moved, "yaml")
    assert replace_key_groups(moved, "yaml", meta.groups, None) == moved
    out = replace_key_groups(moved, "yaml", [meta.groups[0][:1]], None)
    host1_entry = moved.index(b"        - recipient: " + HOST1.encode())
    assert out == moved[:host1_entry] + b"# after the block\n"
    # `age` last and no final line end: the last blob must keep its newline whatever comes after it
    cut = moved.removesuffix(b"\n# after the block\n")
    added = FileKey("age", USER, _fake_blob("u"))
    for groups in ([meta.groups[0][:1]], [meta.groups[0] + (added,)], [meta.groups[0][1:]]):
        assert _meta(replace_key_groups(cut, "yaml", groups, None), "yaml").groups == tuple(groups)


@pytest.mark.parametrize("name", ["yaml/nested.enc.yaml", "json/basic.enc.json"])
def test_staying_entry_keeps_text_sops_would_not_write(vectors: Path, name: str) -> None:
    """Kept, not regenerated: an entry with a comment (YAML) or written compactly (JSON) stays as it is."""
    data, fmt = (vectors / name).read_bytes(), _fmt(name)
    meta = _meta(data, fmt)
    admin = meta.groups[0][0]
    if fmt == "yaml":
        odd = f"        - recipient: {ADMIN}  # the admin\n          enc: {json.dumps(admin.enc)}\n"
        data = re.sub(rb"        - recipient: " + ADMIN.encode() + rb"\n(?:          .*\n)+", lambda _: odd.encode(), data)
    else:
        odd = json.dumps({"recipient": ADMIN, "enc": admin.enc}, separators=(",", ":"))
        data = re.sub(rb'\{\s*"recipient": "' + ADMIN.encode() + rb'",\s*"enc": "[^"]*"\s*\}', lambda _: odd.encode(), data)
    assert odd.encode() in data and _meta(data, fmt).groups == meta.groups
    out = replace_key_groups(data, fmt, [(admin, FileKey("age", USER, _fake_blob("u")))], None)
    assert odd.encode() in out and HOST1.encode() not in out


def test_json_group_written_compactly_stays(vectors: Path) -> None:
    data = (vectors / "shamir/three-groups.enc.json").read_bytes()
    meta = _meta(data, "json")
    text = data.decode()
    start = text.rindex("\n\t\t\t{\n", 0, text.index(HOST2)) + 1  # the last group's object
    end = text.index("\n\t\t\t}", start) + 5
    compact = json.dumps(json.loads(text[start:end]), separators=(",", ":"))
    data = (text[:start] + "\t\t\t" + compact + text[end:]).encode()
    assert _meta(data, "json").groups == meta.groups
    groups = [meta.groups[0][:1], *meta.groups[1:]]
    out = replace_key_groups(data, "json", groups, 2)
    assert compact.encode() in out and USER.encode() not in out and _meta(out, "json").groups == tuple(groups)


@pytest.mark.parametrize("name", ["yaml/nested.enc.yaml", "dotenv/app.enc.env", "ini/app.enc.ini"])
def test_files_without_final_newline(vectors: Path, name: str) -> None:
    full = (vectors / name).read_bytes()
    data, fmt = full.rstrip(b"\n"), _fmt(name)
    meta = _meta(data, fmt)
    assert replace_key_groups(data, fmt, meta.groups, None) == data
    added = FileKey("age", USER, _fake_blob("u"))
    out = replace_key_groups(data, fmt, [meta.groups[0] + (added,)], None)
    assert out.rstrip(b"\n") == out and _meta(out, fmt).groups == (meta.groups[0] + (added,),)
    # the same lines as with the final newline: dotenv inserts before `sops_lastmodified`, INI appends
    assert out + b"\n" == replace_key_groups(full, fmt, [meta.groups[0] + (added,)], None)


# -- thresholds and bad input --------------------------------------------------------------------


def test_threshold_rules(vectors: Path) -> None:
    flat = (vectors / "yaml/nested.enc.yaml").read_bytes()
    shamir = (vectors / "shamir/three-groups.enc.yaml").read_bytes()
    g = _meta(shamir, "yaml").groups
    one = (g[0] + g[1],)
    assert b"shamir_threshold" not in replace_key_groups(flat, "yaml", one, 1)
    assert b"shamir_threshold" not in replace_key_groups(flat, "yaml", one, None)
    assert b"    shamir_threshold: 1\n    age:\n" in replace_key_groups(shamir, "yaml", one, None)
    assert b"    shamir_threshold: 3\n    key_groups:\n" in replace_key_groups(flat, "yaml", g, 3)
    assert b"    shamir_threshold: 2\n" in replace_key_groups(shamir, "yaml", g[:2], None)  # default: every group
    with_one = replace_key_groups(shamir, "yaml", one, 1)
    assert replace_key_groups(with_one, "yaml", one, None) == with_one


@pytest.mark.parametrize(("groups", "threshold", "message"), [
    ([], None, "at least one key"),
    ([[FileKey("age", ADMIN, "x")], []], None, "at least one key"),
    ([[FileKey("age", ADMIN, None)]], None, "no wrapped data key"),
    ([[FileKey("age", ADMIN, "x")], [FileKey("age", HOST1, "y")]], 1, "threshold 1"),
    ([[FileKey("age", ADMIN, "x")], [FileKey("age", HOST1, "y")]], 3, "threshold 3"),
    ([[FileKey("pgp", "85D77543B3D624B63CEA9E6DBC17301B491B3F21", "x")]], None, "sops updatekeys"),
    ([[FileKey("nope", ADMIN, "x")]], None, "unknown key kind"),
])
def test_bad_input_is_refused(vectors: Path, groups, threshold, message: str) -> None:
    data = (vectors / "yaml/nested.enc.yaml").read_bytes()
    with pytest.raises(ValueError, match=message) as caught:
        replace_key_groups(data, "yaml", groups, threshold)
    # only what the user can fix is a SopsctlError (exit 3); the rest are bugs in the caller
    assert isinstance(caught.value, SopsctlError) == (message == "sops updatekeys")


@pytest.mark.parametrize(("fmt", "data"), [("yaml", b"a: 1\n"), ("json", b'{"a": 1}'), ("dotenv", b"A=1\n"),
                                           ("ini", b"[a]\nb = c\n"), ("binary", b"\x00\xff")])
def test_files_without_metadata_are_refused(fmt: str, data: bytes) -> None:
    with pytest.raises(MetadataError):
        replace_key_groups(data, fmt, [[FileKey("age", ADMIN, "x")]], None)


def test_pgp_entries_that_stay_keep_their_fields(vectors: Path) -> None:
    data = (vectors / "yaml/nested.enc.yaml").read_bytes().replace(b"    unencrypted_suffix:", (
        b"    pgp:\n        - created_at: \"2024-01-02T03:04:05Z\"\n          enc: |\n            -----BEGIN PGP MESSAGE-----\n"
        b"            abc\n            -----END PGP MESSAGE-----\n          fp: 85D77543B3D624B63CEA9E6DBC17301B491B3F21\n"
        b"    unencrypted_suffix:"))
    meta = _meta(data, "yaml")
    pgp = meta.groups[0][-1]
    assert pgp.kind == "pgp"
    assert replace_key_groups(data, "yaml", meta.groups, None) == data
    shamir = replace_key_groups(data, "yaml", [meta.groups[0][:1], (pgp._replace(enc="share\n"),)], 2)
    assert (b'        - pgp:\n            - created_at: "2024-01-02T03:04:05Z"\n              enc: |\n'
                b"                share\n              fp: 85D77543B3D624B63CEA9E6DBC17301B491B3F21\n"
                b"          hc_vault: []\n          age: []\n" in shamir)


# -- (d) whatever is written reads back ----------------------------------------------------------

BASES = [VECTORS / name for name in (
    "yaml/nested.enc.yaml", "shamir/three-groups.enc.yaml", "multidoc/two-docs.enc.yaml", "json/basic.enc.json",
    "shamir/three-groups.enc.json", "dotenv/app.enc.env", "ini/app.enc.ini", "binary/blob.enc")] + [
    REAL_FLEET / "head/secrets" / name for name in ("shared.yaml", "bridge/tara-age-key.enc")]  # sorted (3.13)


def _outside_metadata(data: bytes, fmt: str) -> object:
    text = data.decode()
    if fmt == "yaml":
        return re.sub(r"(?m)^sops:\r?\n(?:[ #].*\n|\r?\n)*", "", text)
    if fmt in ("json", "binary"):
        return text[:text.rindex('"sops"')], {k: v for k, v in json.loads(text).items() if k != "sops"}
    if fmt == "dotenv":
        return [line for line in text.splitlines() if not line.startswith("sops_")]
    return text.split("[sops]")[0]


@st.composite
def _rekeys(draw):
    base = draw(st.sampled_from(BASES))
    data = base.read_bytes()
    if draw(st.booleans()):
        data = _crlf(data)
    fmt = _fmt(base)
    own = [k for g in _meta(data, fmt).groups for k in g]
    fresh = [FileKey("age", r, _fake_blob(r)) for r in key_pool()[:6]] + [FileKey("age", SSH, _fake_blob("ssh"))]
    pool = list({k.recipient: k for k in own + fresh}.values())
    chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=8, unique_by=lambda k: k.recipient))
    count = draw(st.integers(1, min(3, len(chosen))))
    cuts = sorted(draw(st.lists(st.integers(1, len(chosen) - 1), min_size=count - 1, max_size=count - 1,
                                unique=True))) if count > 1 else []
    groups = [tuple(chosen[a:b]) for a, b in zip([0, *cuts], [*cuts, len(chosen)], strict=True)]
    threshold = draw(st.one_of(st.none(), st.integers(2, len(groups)))) if len(groups) > 1 else draw(
        st.sampled_from([None, 1]))
    return base, fmt, data, groups, threshold


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rekeys())
def test_written_groups_read_back(case) -> None:
    base, fmt, data, groups, threshold = case
    out = replace_key_groups(data, fmt, groups, threshold)
    meta = _meta(out, fmt)
    assert meta.groups == tuple(groups)
    original = _meta(data, fmt)
    had = original.threshold is not None
    # the threshold written is the one given; "none" (None, or 1 with one group) keeps an absent one absent
    if not threshold:
        expected = (len(groups) if len(groups) > 1 else 1) if had else None
    else:
        expected = None if len(groups) == 1 and threshold == 1 and not had else threshold
    assert meta.threshold == expected
    assert meta.effective_threshold == ((threshold or len(groups)) if len(groups) > 1 else 1)
    assert _outside_metadata(out, fmt) == _outside_metadata(data, fmt)
    assert (b"\r\n" in data) == (b"\n" not in out.replace(b"\r\n", b"")), "line endings changed"
    if meta.threshold is None or had:  # (an absent threshold comes back absent only if none was written)
        back = replace_key_groups(out, fmt, original.groups, original.threshold)
        if fmt == "ini":  # a re-padded [sops] section stays wide: compare what it says
            assert _ini_sections(back) == _ini_sections(data)
        else:
            assert back == data
    if fmt == "yaml" and "multidoc" in base.parts:
        blocks = re.findall(r"(?ms)^sops:\r?\n.*?(?=^---|\Z)", out.decode())
        assert len(blocks) == 2 and blocks[0] == blocks[1]
