"""datakey: recover from every vector, prove keys with the MAC, re-wrap with minimal diffs, and let the real sops read the result."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pyrage
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sopsctl import datakey
from sopsctl.crypto import agewrap, shamir
from sopsctl.datakey import (
    DataKeyError,
    NativeWrapError,
    Recovered,
    check_rewrapped,
    recover,
    rewrap,
    verify_key,
)
from sopsctl.errors import SopsctlError
from sopsctl.formats import detect_format, metadata_from_mapping, read_metadata
from sopsctl.identities import IdentitySet, load_identities
from sopsctl.model import FileKey, SopsMetadata

SECRET_SHAPE = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{6,}")


# --- helpers ----------------------------------------------------------------------------------------


def full_metadata(path: Path) -> SopsMetadata:
    """Metadata with the enc blobs (the YAML fast path of read_metadata leaves them out)."""
    data = path.read_bytes()
    fmt = detect_format(path.name)
    if fmt == "yaml":
        return metadata_from_mapping(next(yaml.safe_load_all(data))["sops"])
    metadata = read_metadata(data, fmt)
    assert metadata is not None
    return metadata


def _secret(vectors: Path, name: str) -> str:
    text = (vectors / "identities" / f"vec-{name}.txt").read_text()
    return next(line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-1"))


def _public(vectors: Path, name: str) -> str:
    if name == "ssh":
        return (vectors / "identities" / "vec-ssh_ed25519.pub").read_text().strip()
    return (vectors / "identities" / f"vec-{name}.pub").read_text().strip()


@pytest.fixture
def ids(vectors: Path, tmp_path: Path):
    """ids("admin", "host1") -> the IdentitySet of those vector identities ("ssh" = the native ssh key)."""
    home = tmp_path / "empty-home"
    home.mkdir(exist_ok=True)

    def make(*names: str) -> IdentitySet:
        env = {}
        ages = [_secret(vectors, n) for n in names if n != "ssh"]
        if ages:
            env["SOPS_AGE_KEY"] = "\n".join(ages)
        if "ssh" in names:
            env["SOPS_AGE_SSH_PRIVATE_KEY_FILE"] = str(vectors / "identities" / "vec-ssh_ed25519")
        result = load_identities(env, home, system="linux")
        assert result.errors == ()
        return result

    return make


def _age(vectors: Path, *names: str) -> tuple[FileKey, ...]:
    return tuple(FileKey("age", _public(vectors, n)) for n in names)


def _emit_entries(entries: Sequence[FileKey], indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for entry in entries:
        assert entry.kind == "age" and entry.enc
        lines.append(f"{pad}- recipient: {entry.recipient}")
        lines.append(f"{pad}  enc: |")
        lines.extend(f"{pad}    {line}" for line in entry.enc.splitlines())
    return lines


def emit_keys(groups: Sequence[Sequence[FileKey]], threshold: int | None) -> str:
    """The key part of a `sops:` block in sops 3.11's YAML layout (everything before lastmodified)."""
    if len(groups) == 1:
        lines = ([f"    shamir_threshold: {threshold}"] if threshold else []) + ["    age:"]
        lines += _emit_entries(groups[0], 8)
    else:
        lines = [f"    shamir_threshold: {threshold}", "    key_groups:"]
        for group in groups:
            lines += ["        - hc_vault: []", "          age:"]
            lines += _emit_entries(group, 12)
    return "\n".join(lines) + "\n"


def replace_keys(text: str, keys: str) -> str:
    """The YAML file text with the key part of every `sops:` block replaced (all documents)."""
    pattern = re.compile(r"^sops:\n.*?^(?=    lastmodified:)", re.M | re.S)
    edited, count = pattern.subn(lambda _: "sops:\n" + keys, text)
    assert count >= 1
    return edited


def sops_decrypt(sops_bin: Path, path: Path, vectors: Path, tmp_path: Path, *names: str):
    key_file = tmp_path / f"keys-{'-'.join(names)}.txt"
    key_file.write_text("".join(_secret(vectors, n) + "\n" for n in names if n != "ssh"))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "SOPS_AGE_KEY_FILE": str(key_file)}
    if "ssh" in names:
        env["SOPS_AGE_SSH_PRIVATE_KEY_FILE"] = str(vectors / "identities" / "vec-ssh_ed25519")
    return subprocess.run([str(sops_bin), "decrypt", str(path)], env=env, capture_output=True, check=False)


def _no_secret(text: str) -> None:
    assert not SECRET_SHAPE.search(text.upper())


# --- recover ------------------------------------------------------------------------------------------


def _flat_cases() -> list[tuple[str, str]]:
    from tests.conftest import VECTORS

    cases = []
    for entry in json.loads((VECTORS / "manifest.json").read_text()):
        if len(entry["key_groups"]) != 1:
            continue
        for reader in entry["key_groups"][0]:
            name = "ssh" if reader.startswith("vec-ssh_ed25519") else reader.removeprefix("vec-")
            cases.append((entry["file"], name))
    return cases


@pytest.mark.parametrize(("file", "reader"), _flat_cases())
def test_recover_every_flat_vector_with_each_of_its_readers(file: str, reader: str, vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / file)
    assert len(metadata.groups) == 1
    recovered = recover(metadata, ids(reader))
    assert len(recovered.key) == 32
    assert recovered.shares == {}
    assert recovered.opened == {0: next(e.recipient for e in metadata.groups[0]
                                        if e.recipient.split()[:2] == _public(vectors, reader).split()[:2])}
    assert verify_key(recovered.key, metadata)
    assert "key=<32 bytes>" in repr(recovered) and recovered.key.hex() not in repr(recovered)


def test_every_reader_of_a_file_gets_the_same_key(vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "ssh" / "mixed-recipients.enc.yaml")
    keys = {recover(metadata, ids(name)).key for name in ("admin", "ssh", "ssh-as-age")}
    assert len(keys) == 1
    # the ssh key opens only the ssh entry, its converted twin only the age1 entry
    assert recover(metadata, ids("ssh")).opened[0].startswith("ssh-ed25519 ")
    assert recover(metadata, ids("ssh-as-age")).opened[0] == _public(vectors, "ssh-as-age")


def test_the_same_file_in_every_format_is_not_the_same_key(vectors: Path, ids) -> None:
    files = ["yaml/nested.enc.yaml", "json/basic.enc.json", "dotenv/app.enc.env", "ini/app.enc.ini",
             "binary/blob.enc"]
    keys = [recover(full_metadata(vectors / f), ids("host1")).key for f in files]
    assert len(set(keys)) == len(files)
    # and a key proves only its own file
    assert not verify_key(keys[0], full_metadata(vectors / files[1]))


@pytest.mark.parametrize("file", ["shamir/three-groups.enc.yaml", "shamir/three-groups.enc.json"])
@pytest.mark.parametrize(
    ("readers", "opened"),
    [
        (("host1", "host2"), {1: "host1", 2: "host2"}),
        (("admin", "host2"), {0: "admin", 2: "host2"}),
        (("user", "host1"), {0: "user", 1: "host1"}),
        (("admin", "user", "host1", "host2"), {0: "admin", 1: "host1", 2: "host2"}),
    ],
)
def test_recover_shamir_with_two_groups(file: str, readers, opened, vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / file)
    assert metadata.effective_threshold == 2
    recovered = recover(metadata, ids(*readers))
    assert recovered.opened == {g: _public(vectors, n) for g, n in opened.items()}
    assert sorted(recovered.shares) == sorted(opened)
    assert all(len(s) == 33 and s[-1] == g + 1 for g, s in recovered.shares.items())
    assert verify_key(recovered.key, metadata)
    assert shamir.combine(list(recovered.shares.values())) == recovered.key


@pytest.mark.parametrize("readers", [("admin", "user"), ("admin",), ("host2",), ()])
def test_shamir_needs_two_distinct_groups(readers, vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "shamir" / "three-groups.enc.yaml")
    with pytest.raises(DataKeyError) as info:
        recover(metadata, ids(*readers))
    lines = str(info.value).splitlines()
    groups_opened = 1 if readers else 0
    assert lines[0].startswith(f"cannot recover the data key: {groups_opened} of the 2 key groups needed")
    assert [line.split(":")[0] for line in lines[1:]] == ["group 1 of 3", "group 2 of 3", "group 3 of 3"]
    if readers and readers[0] in ("admin", "user"):
        assert lines[1] == f"group 1 of 3: opened by {_public(vectors, readers[0])}"
    assert f"no identity opens {_public(vectors, 'host1')}" in lines[2]
    if not readers:
        assert "no identities found in" in lines[0]
    else:
        assert "identities from SOPS_AGE_KEY" in lines[0]
    _no_secret(str(info.value))


def test_a_flat_failure_names_recipients_and_sources(vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    with pytest.raises(DataKeyError) as info:
        recover(metadata, ids("host2", "user"))
    message = str(info.value)
    assert message.splitlines() == [
        "cannot recover the data key: none of its entries opens (identities from SOPS_AGE_KEY (2))",
        f"group 1 of 1: no identity opens {_public(vectors, 'admin')}, {_public(vectors, 'host1')}",
    ]
    assert isinstance(info.value, SopsctlError)


def test_source_errors_are_listed_in_the_failure(vectors: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.txt"
    broken.write_text(" " + _secret(vectors, "admin") + "\n")
    identities = load_identities({"SOPS_AGE_KEY_FILE": str(broken)}, tmp_path, system="linux")
    with pytest.raises(DataKeyError) as info:
        recover(full_metadata(vectors / "yaml" / "nested.enc.yaml"), identities)
    assert str(info.value).splitlines()[-1].startswith("identity source SOPS_AGE_KEY_FILE: line 1: leading")
    _no_secret(str(info.value))


def test_pgp_and_kms_entries_are_skipped(vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    pgp = FileKey("pgp", "FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4", "-----BEGIN PGP MESSAGE-----\n...")
    kms = FileKey("kms", "arn:aws:kms:us-east-1:656532927350:key/920aff2e", "CiC...")
    with_others = SopsMetadata(((pgp, kms, *metadata.groups[0]),), None, "flat",
                               metadata.lastmodified, metadata.mac, metadata.version)
    assert recover(with_others, ids("host1")).key == recover(metadata, ids("host1")).key
    with pytest.raises(DataKeyError) as info:
        recover(with_others, ids("host2"))
    assert ("skipped pgp FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4, kms arn:aws:kms:us-east-1:656532927350:"
            "key/920aff2e (sopsctl opens only age entries)") in str(info.value)


def test_a_broken_entry_does_not_hide_the_next(vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    admin, host1 = metadata.groups[0]
    broken = admin._replace(enc=admin.enc.replace("-----BEGIN AGE ENCRYPTED FILE-----", "garbage"))
    edited = SopsMetadata(((broken, host1),), None, "flat", metadata.lastmodified, metadata.mac)
    assert recover(edited, ids("admin", "host1")).opened == {0: host1.recipient}
    with pytest.raises(DataKeyError, match="does not start with -----BEGIN AGE"):
        recover(edited, ids("admin"))
    missing = SopsMetadata(((admin._replace(enc=None),),), None, "flat")
    with pytest.raises(DataKeyError, match="has no enc"):
        recover(missing, ids("admin"))


def test_a_payload_of_the_wrong_size_is_refused(vectors: Path, ids) -> None:
    recipient = _public(vectors, "admin")
    flat = SopsMetadata(((FileKey("age", recipient, agewrap.wrap(os.urandom(33), recipient)),),))
    with pytest.raises(DataKeyError, match="wraps 33 bytes, expected 32"):
        recover(flat, ids("admin"))
    groups = SopsMetadata(((FileKey("age", recipient, agewrap.wrap(os.urandom(32), recipient)),),
                           _age(vectors, "host1")), 2, "groups")
    with pytest.raises(DataKeyError, match="wraps 32 bytes, expected 33"):
        recover(groups, ids("admin"))


def test_a_key_the_mac_refuses_never_leaves_recover(vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    edited = SopsMetadata(metadata.groups, None, "flat", "2026-11-28T13:39:21Z", metadata.mac)
    with pytest.raises(DataKeyError, match="does not decrypt the file's MAC"):
        recover(edited, ids("admin"))
    assert recover(edited, ids("admin"), check_mac=False).key == recover(metadata, ids("admin")).key


def test_inconsistent_shares_are_caught_by_the_mac(vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "shamir" / "three-groups.enc.yaml")
    key = recover(metadata, ids("host1", "host2")).key
    other = shamir.split(key, 3, 2)  # a valid split of the same key, but not the file's split
    host2 = _public(vectors, "host2")
    groups = (*metadata.groups[:2], (FileKey("age", host2, agewrap.wrap(other[2], host2)),))
    mixed = SopsMetadata(groups, 2, "groups", metadata.lastmodified, metadata.mac)
    with pytest.raises(DataKeyError, match="disagree"):
        recover(mixed, ids("host1", "host2"))


# --- verify_key ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lastmodified", "ok"),
    [
        ("2026-11-28T13:39:20Z", True),
        ("2026-11-28T13:39:20+00:00", True),
        ("2026-11-28T13:39:20.5Z", True),
        ("2026-11-28t13:39:20z", True),
        ("2026-11-28T15:39:20+02:00", False),  # the same instant, but another AAD string
        ("2026-11-28T13:39:21Z", False),
        ("2026-11-28", False),
        ("yesterday", False),
    ],
)
def test_verify_key_and_lastmodified(lastmodified: str, ok: bool, vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    assert metadata.lastmodified == "2026-11-28T13:39:20Z"
    key = recover(metadata, ids("admin")).key
    edited = SopsMetadata(metadata.groups, None, "flat", lastmodified, metadata.mac)
    assert verify_key(key, edited) is ok


def test_verify_key_refuses_wrong_keys_and_bad_macs(vectors: Path, ids) -> None:
    metadata = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    key = recover(metadata, ids("admin")).key
    assert verify_key(key, metadata)
    assert not verify_key(bytes(32), metadata)
    assert not verify_key(key[:-1] + bytes([key[-1] ^ 1]), metadata)
    assert not verify_key(key + b"\0", metadata)
    for mac in (None, "", "not an ENC value", metadata.mac.replace("type:str", "").rstrip("]") + "]",
                metadata.mac.replace("iv:", "iv:!"), metadata.mac.replace("data:", "data:AAAA")):
        broken = SopsMetadata(metadata.groups, None, "flat", metadata.lastmodified, mac)
        assert not verify_key(key, broken), mac
    assert not verify_key(key, SopsMetadata(metadata.groups, None, "flat", None, metadata.mac))


def test_go_rfc3339() -> None:
    assert datakey.go_rfc3339("2026-11-28T13:39:20Z") == "2026-11-28T13:39:20Z"
    assert datakey.go_rfc3339("2026-11-28T13:39:20+00:00") == "2026-11-28T13:39:20Z"
    assert datakey.go_rfc3339("2026-11-28T13:39:20-00:00") == "2026-11-28T13:39:20Z"
    assert datakey.go_rfc3339("2026-11-28T13:39:20.123456789+05:30") == "2026-11-28T13:39:20+05:30"
    assert datakey.go_rfc3339("2026-11-28T13:39:20-08:00") == "2026-11-28T13:39:20-08:00"
    assert datakey.go_rfc3339("2026-11-28 13:39:20+00:00") == "2026-11-28T13:39:20Z"  # str(datetime)
    assert datakey.go_rfc3339("2026-02-30T13:39:20Z") is None
    assert datakey.go_rfc3339("2026-11-28T13:39:20") is None


# --- rewrap: single group ----------------------------------------------------------------------------------


def _encs(groups) -> dict[tuple[int, str], str]:
    return {(g, e.recipient): e.enc for g, group in enumerate(groups) for e in group}


@pytest.mark.interop
@pytest.mark.parametrize("file", ["yaml/nested.enc.yaml", "multidoc/two-docs.enc.yaml"])
def test_rewrap_single_group_keeps_staying_entries_and_sops_reads_it(
        file: str, vectors: Path, ids, sops_bin: Path, tmp_path: Path) -> None:
    path = vectors / file
    old = full_metadata(path)
    assert emit_keys(old.groups, None) in path.read_text()  # the emitter writes sops's own layout
    recovered = recover(old, ids("admin"))
    new = rewrap(recovered, old, [_age(vectors, "admin", "host2")], 0)
    assert new[0][0] == old.groups[0][0]  # admin stays: kind, recipient and enc verbatim
    assert new[0][1].recipient == _public(vectors, "host2") and new[0][1].enc
    assert agewrap.unwrap(new[0][1].enc, ids("host2")) == recovered.key
    check_rewrapped(new, None, recovered, ids("admin"))
    check_rewrapped(new, None, recovered, ids("host2"))
    edited = tmp_path / path.name
    edited.write_text(replace_keys(path.read_text(), emit_keys(new, None)))
    expected = path.with_name(path.name.replace(".enc.", ".dec."))
    for reader in ("host2", "admin"):
        result = sops_decrypt(sops_bin, edited, vectors, tmp_path, reader)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == expected.read_bytes()
    assert sops_decrypt(sops_bin, edited, vectors, tmp_path, "host1").returncode == 128  # removed


def test_rewrap_single_group_keeps_even_entries_it_cannot_open(vectors: Path, ids) -> None:
    old = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    recovered = recover(old, ids("host1"))
    pgp = FileKey("pgp", "FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4", "-----BEGIN PGP MESSAGE-----\nx\n")
    with_pgp = SopsMetadata(((*old.groups[0], pgp),), None, "flat", old.lastmodified, old.mac)
    new = rewrap(recovered, with_pgp, [(FileKey("pgp", pgp.recipient), *_age(vectors, "admin", "user"))], None)
    assert new[0][0] == pgp  # same data key, so the pgp blob is still good
    assert new[0][1] == old.groups[0][0]  # admin: kept though only host1 was at hand
    assert agewrap.unwrap(new[0][2].enc, ids("user")) == recovered.key


def test_rewrap_refuses_a_new_pgp_key_before_wrapping_anything(vectors: Path, ids,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    old = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    recovered = recover(old, ids("admin"))
    calls = []
    monkeypatch.setattr(agewrap, "wrap", lambda *a: calls.append(a) or "x")
    new_groups = [(*_age(vectors, "admin", "host2"), FileKey("pgp", "FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4"))]
    with pytest.raises(NativeWrapError) as info:
        rewrap(recovered, old, new_groups, None)
    assert "sops updatekeys" in str(info.value) and "pgp key FBC7B9E2" in str(info.value)
    assert "\n" not in str(info.value)
    assert calls == []


def test_rewrap_for_a_missing_plugin(vectors: Path, ids, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    old = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    recipient = "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t"
    with pytest.raises(agewrap.PluginMissingError, match="age-plugin-yubikey"):
        rewrap(recover(old, ids("admin")), old, [(FileKey("age", recipient),)], None)


# --- rewrap: Shamir ------------------------------------------------------------------------------------------


@pytest.fixture
def shamir_file(vectors: Path) -> Path:
    return vectors / "shamir" / "three-groups.enc.yaml"


@pytest.mark.interop
def test_shamir_same_shape_keeps_every_old_entry(shamir_file: Path, vectors: Path, ids, sops_bin: Path,
                                                 tmp_path: Path) -> None:
    old = full_metadata(shamir_file)
    assert emit_keys(old.groups, 2) in shamir_file.read_text()
    recovered = recover(old, ids("host1", "host2"))
    new_groups = [_age(vectors, "admin", "user"), _age(vectors, "host1", "ssh-as-age"), _age(vectors, "host2")]
    new = rewrap(recovered, old, new_groups, 2)
    old_encs, new_encs = _encs(old.groups), _encs(new)
    assert all(new_encs[k] == v for k, v in old_encs.items())  # not one old blob changed
    added = new_encs[(1, _public(vectors, "ssh-as-age"))]
    assert agewrap.unwrap(added, ids("ssh-as-age")) == recovered.shares[1]
    check_rewrapped(new, 2, recovered, ids("host1", "host2"))
    check_rewrapped(new, 2, recovered, ids("ssh-as-age", "admin"))
    edited = tmp_path / "three-groups.enc.yaml"
    edited.write_text(replace_keys(shamir_file.read_text(), emit_keys(new, 2)))
    result = sops_decrypt(sops_bin, edited, vectors, tmp_path, "ssh-as-age", "host2")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == (vectors / "shamir" / "three-groups.dec.yaml").read_bytes()
    # host1 and its new neighbour share one group: one share only
    assert sops_decrypt(sops_bin, edited, vectors, tmp_path, "ssh-as-age", "host1").returncode == 128


@pytest.mark.interop
def test_shamir_group_gaining_an_unopened_share_splits_afresh(shamir_file: Path, vectors: Path, ids,
                                                              sops_bin: Path, tmp_path: Path) -> None:
    old = full_metadata(shamir_file)
    new_groups = [_age(vectors, "admin", "user", "ssh-as-age"), _age(vectors, "host1"), _age(vectors, "host2")]
    # with admin at hand group 1's share is known: old entries stay
    with_admin = recover(old, ids("admin", "host1"))
    kept = rewrap(with_admin, old, new_groups, 2)
    assert all(_encs(kept)[k] == v for k, v in _encs(old.groups).items())
    # without it, group 1 cannot get its share: a new split, every entry re-wrapped
    recovered = recover(old, ids("host1", "host2"))
    new = rewrap(recovered, old, new_groups, 2)
    old_encs, new_encs = _encs(old.groups), _encs(new)
    assert all(new_encs[k] != v for k, v in old_encs.items())
    share = agewrap.unwrap(new_encs[(1, _public(vectors, "host1"))], ids("host1"))
    assert share is not None and len(share) == 33 and share[-1] == 2 and share != recovered.shares[1]
    check_rewrapped(new, 2, recovered, ids("host1", "host2"))
    edited = tmp_path / "three-groups.enc.yaml"
    edited.write_text(replace_keys(shamir_file.read_text(), emit_keys(new, 2)))
    for readers in (("ssh-as-age", "host1"), ("admin", "host2"), ("host1", "host2")):
        result = sops_decrypt(sops_bin, edited, vectors, tmp_path, *readers)
        assert result.returncode == 0, (readers, result.stderr.decode())
        assert result.stdout == (vectors / "shamir" / "three-groups.dec.yaml").read_bytes()


@pytest.mark.interop
def test_shamir_threshold_change_splits_afresh(shamir_file: Path, vectors: Path, ids, sops_bin: Path,
                                               tmp_path: Path) -> None:
    old = full_metadata(shamir_file)
    recovered = recover(old, ids("admin", "host1", "host2"))
    new = rewrap(recovered, old, old.groups, 3)
    assert all(_encs(new)[k] != v for k, v in _encs(old.groups).items())
    check_rewrapped(new, 3, recovered, ids("admin", "host1", "host2"))
    with pytest.raises(DataKeyError, match="1 of the 3|2 of the 3"):
        check_rewrapped(new, 3, recovered, ids("admin", "host1"))
    edited = tmp_path / "three-groups.enc.yaml"
    edited.write_text(replace_keys(shamir_file.read_text(), emit_keys(new, 3)))
    assert sops_decrypt(sops_bin, edited, vectors, tmp_path, "admin", "host1", "host2").returncode == 0
    assert sops_decrypt(sops_bin, edited, vectors, tmp_path, "admin", "host1").returncode == 128


@pytest.mark.interop
def test_shamir_to_one_group_and_back(shamir_file: Path, vectors: Path, ids, sops_bin: Path,
                                      tmp_path: Path) -> None:
    old = full_metadata(shamir_file)
    recovered = recover(old, ids("host1", "host2"))
    flat = rewrap(recovered, old, [_age(vectors, "admin", "host2")], 2)  # threshold ignored for one group
    assert agewrap.unwrap(flat[0][1].enc, ids("host2")) == recovered.key
    check_rewrapped(flat, None, recovered, ids("host2"))
    edited = tmp_path / "flat.enc.yaml"
    edited.write_text(replace_keys(shamir_file.read_text(), emit_keys(flat, None)))
    result = sops_decrypt(sops_bin, edited, vectors, tmp_path, "host2")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == (vectors / "shamir" / "three-groups.dec.yaml").read_bytes()

    nested = vectors / "yaml" / "nested.enc.yaml"
    single = full_metadata(nested)
    key = recover(single, ids("admin"))
    split = rewrap(key, single, [_age(vectors, "admin"), _age(vectors, "host2")], None)  # None: all groups
    check_rewrapped(split, 2, key, ids("admin", "host2"))
    edited = tmp_path / "split.enc.yaml"
    edited.write_text(replace_keys(nested.read_text(), emit_keys(split, 2)))
    result = sops_decrypt(sops_bin, edited, vectors, tmp_path, "admin", "host2")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == (vectors / "yaml" / "nested.dec.yaml").read_bytes()
    assert sops_decrypt(sops_bin, edited, vectors, tmp_path, "admin").returncode == 128


def test_shamir_fresh_split_refuses_pgp_in_any_group(shamir_file: Path, vectors: Path, ids) -> None:
    old = full_metadata(shamir_file)
    recovered = recover(old, ids("host1", "host2"))
    groups = [(*_age(vectors, "admin"), FileKey("pgp", "FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4")),
              _age(vectors, "host1"), _age(vectors, "host2")]
    with pytest.raises(NativeWrapError, match="group 1: the pgp key"):
        rewrap(recovered, old, groups, 3)


@pytest.mark.parametrize(("groups", "threshold"), [(3, 4), (3, 1), (2, 3)])
def test_rewrap_rejects_thresholds_that_do_not_fit(groups: int, threshold: int, shamir_file: Path,
                                                   vectors: Path, ids) -> None:
    old = full_metadata(shamir_file)
    recovered = recover(old, ids("host1", "host2"))
    with pytest.raises(DataKeyError, match="does not fit"):
        rewrap(recovered, old, [_age(vectors, "admin")] * groups, threshold)


def test_rewrap_rejects_empty_groups(vectors: Path, ids) -> None:
    old = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    recovered = recover(old, ids("admin"))
    for groups in ([], [()], [_age(vectors, "admin"), ()]):
        with pytest.raises(DataKeyError, match="at least one key"):
            rewrap(recovered, old, groups, None)


# --- check_rewrapped -------------------------------------------------------------------------------------------


def test_check_rewrapped_catches_bad_results(shamir_file: Path, vectors: Path, ids) -> None:
    old = full_metadata(shamir_file)
    recovered = recover(old, ids("host1", "host2"))
    good = rewrap(recovered, old, old.groups, 2)
    check_rewrapped(good, 2, recovered, ids("host1", "host2"))
    host2 = _public(vectors, "host2")
    # group 3 given group 2's share: two points with the same x
    swapped = (*good[:2], (FileKey("age", host2, agewrap.wrap(recovered.shares[1], host2)),))
    with pytest.raises(DataKeyError, match="same x"):
        check_rewrapped(swapped, 2, recovered, ids("host1", "host2"))
    # a consistent split of some other key
    other = shamir.split(os.urandom(32), 3, 2)
    host1 = _public(vectors, "host1")
    foreign = (good[0], (FileKey("age", host1, agewrap.wrap(other[1], host1)),),
               (FileKey("age", host2, agewrap.wrap(other[2], host2)),))
    with pytest.raises(DataKeyError, match="different data key"):
        check_rewrapped(foreign, 2, recovered, ids("host1", "host2"))
    # identities that are no longer recipients cannot vouch for the result
    with pytest.raises(DataKeyError, match="do not give the data key back") as info:
        check_rewrapped(good, 2, recovered, ids("ssh-as-age"))
    _no_secret(str(info.value))
    with pytest.raises(DataKeyError, match="has no enc"):
        check_rewrapped((good[0], (good[1][0]._replace(enc=None),), good[2]), 2, recovered, ids("host1"))
    with pytest.raises(agewrap.ArmorError):
        check_rewrapped((good[0], (good[1][0]._replace(enc="junk"),), good[2]), 2, recovered, ids("host2"))


def test_check_rewrapped_catches_a_split_for_another_threshold(shamir_file: Path, vectors: Path, ids) -> None:
    old = full_metadata(shamir_file)
    recovered = recover(old, ids("host1", "host2"))
    shares = shamir.split(recovered.key, 3, 3)  # 3-of-3, to be written as 2-of-3
    groups = tuple(tuple(FileKey("age", e.recipient, agewrap.wrap(shares[g], e.recipient)) for e in group)
                   for g, group in enumerate(old.groups))
    everyone = ids("admin", "host1", "host2")
    check_rewrapped(groups, 3, recovered, everyone)
    with pytest.raises(DataKeyError, match="groups 1, 2 together would not give the data key back"):
        check_rewrapped(groups, 2, recovered, everyone)
    # the other way round is harmless: any 3 points of a line still give its value at 0
    lower = rewrap(recovered, old, old.groups, 2)
    check_rewrapped(lower, 3, recovered, everyone)


def test_check_rewrapped_single_group(vectors: Path, ids) -> None:
    old = full_metadata(vectors / "yaml" / "nested.enc.yaml")
    recovered = recover(old, ids("admin"))
    wrong = Recovered(os.urandom(32))
    with pytest.raises(DataKeyError, match="different data key"):
        check_rewrapped(old.groups, None, wrong, ids("admin"))
    check_rewrapped(old.groups, None, recovered, ids("host1"))


# --- a property: any re-keying of any layout gives the key back, with minimal diffs --------------------------

_POOL: list = []


def _pool() -> list:
    if not _POOL:
        _POOL.extend(pyrage.x25519.Identity.generate() for _ in range(6))
    return _POOL


@st.composite
def _layouts(draw, pool_size: int = 6):
    count = draw(st.integers(min_value=1, max_value=3))
    groups = [draw(st.lists(st.integers(0, pool_size - 1), min_size=1, max_size=3, unique=True))
              for _ in range(count)]
    threshold = draw(st.integers(min_value=2, max_value=count)) if count > 1 else None
    return groups, threshold


def _build(groups: list[list[int]], threshold: int | None, key: bytes) -> SopsMetadata:
    pool = _pool()
    if len(groups) == 1:
        payloads = [key]
    else:
        payloads = shamir.split(key, len(groups), threshold or len(groups))
    built = tuple(tuple(FileKey("age", str(pool[i].to_public()), agewrap.wrap(payloads[g], str(pool[i].to_public())))
                        for i in group) for g, group in enumerate(groups))
    return SopsMetadata(built, threshold, "groups" if len(groups) > 1 else "flat")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old_layout=_layouts(), new_layout=_layouts(), held=st.sets(st.integers(0, 5), min_size=1))
def test_rewrap_property(old_layout, new_layout, held) -> None:
    pool = _pool()
    key = os.urandom(32)
    old = _build(*old_layout, key)
    at_hand = IdentitySet(tuple(pool[i] for i in sorted(held)))
    try:
        recovered = recover(old, at_hand)
    except DataKeyError:
        assume(False)
    assert recovered.key == key
    new_indices, new_threshold = new_layout
    new_groups = [tuple(FileKey("age", str(pool[i].to_public())) for i in group) for group in new_indices]
    new = rewrap(recovered, old, new_groups, new_threshold)
    assert [[e.recipient for e in g] for g in new] == [[e.recipient for e in g] for g in new_groups]
    check_rewrapped(new, new_threshold, recovered, IdentitySet(tuple(pool)))
    old_encs, new_encs = _encs(old.groups), _encs(new)
    staying = [k for k in new_encs if k in old_encs]
    if len(old.groups) == 1 and len(new) == 1:
        assert all(new_encs[k] == old_encs[k] for k in staying)
    elif len(new) > 1:
        same = len(old.groups) == len(new) and old.effective_threshold == (new_threshold or len(new))
        gaining = {group for group, recipient in new_encs if (group, recipient) not in old_encs}
        if same and gaining <= set(recovered.shares):
            assert all(new_encs[k] == old_encs[k] for k in staying)
        else:
            assert all(new_encs[k] != old_encs[k] for k in staying)
