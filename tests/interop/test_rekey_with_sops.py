"""Interop acceptance tests for `sopsctl rekey` and the life events' `--rekey` (SPEC §4, §5) against the real sops."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pyrage
import pytest
import yaml

from sopsctl import fsutil
from sopsctl.cli import main

from .audit_fleet import Fleet, Secret, plaintext, rules_config

pytestmark = pytest.mark.interop

HOST = "edge"  # the host the tests add, then retire
R, ALICE, BOB, WEB1 = "recovery", "alice-2026", "bob-2026", "web1-host"
KEY_NAMES = (R, ALICE, BOB, WEB1)

POLICY_FLEET = """\
version: 1
settings:
  secrets_dirs: [secrets]
  always_readers: [key:recovery]
keys:
  recovery: {{age: {recovery}, note: "offline recovery key"}}
  alice-2026: {{age: {alice-2026}}}
  bob-2026: {{age: {bob-2026}}}
  web1-host: {{age: {web1-host}}}
identities:
  alice: {{role: admin, keys: [alice-2026]}}
  bob: {{role: user, keys: [bob-2026]}}
hosts:
  web1: {{platform: nixos, keys: [web1-host], users: {{alice: admin, bob: primary}}}}
"""

POLICY_CLASSES = """\
classes:
  - name: quorum
    path: secrets/quorum/**
    key_groups: [[role:admin], [hosts], ["identity:bob"]]
    threshold: 2
  - name: vault
    path: secrets/vault/**
    key_groups: [[role:admin, hosts], [hosts]]
    threshold: 2
  - name: host
    path: secrets/hosts/{host}/**
    readers: ["host:{host}", "admins-of:{host}"]
  - name: home
    path: secrets/home/{identity}/**
    readers: ["identity:{identity}"]
  - name: shared
    path: secrets/shared/**
    readers: [role:admin, hosts]
"""

SHARED_GROUPS = ((R, ALICE, WEB1),)
VAULT_GROUPS = ((R, ALICE, WEB1), (R, WEB1))
QUORUM_GROUPS = ((R, ALICE), (R, WEB1), (R, BOB))
QUORUM_FILE_THRESHOLD = 3  # encrypted 3-of-3 while the rule says 2: sops keeps 3, sopsctl applies 2
RULE_THRESHOLD = {"vault": 2, "quorum": 2}

SECRETS: tuple[Secret, ...] = (
    Secret("secrets/shared/app.yaml", "yaml", "shared", SHARED_GROUPS),
    Secret("secrets/shared/api.json", "json", "shared", SHARED_GROUPS),
    Secret("secrets/shared/app.env", "dotenv", "shared", SHARED_GROUPS),
    Secret("secrets/shared/db.ini", "ini", "shared", SHARED_GROUPS),
    Secret("secrets/shared/tls.key", "binary", "shared", SHARED_GROUPS),
    Secret("secrets/vault/root.yaml", "yaml", "vault", VAULT_GROUPS, 2),
    Secret("secrets/quorum/ca.json", "json", "quorum", QUORUM_GROUPS, QUORUM_FILE_THRESHOLD),
    Secret("secrets/hosts/web1/ssh.yaml", "yaml", "host", ((R, WEB1, ALICE),)),
    Secret("secrets/home/bob/token.env", "dotenv", "home", ((R, BOB),)),
)
BY_PATH = {s.path: s for s in SECRETS}
# Where the new host joins (group indices), class by class: `hosts` sits in these groups.
HOST_JOINS = {"shared": (0,), "vault": (0, 1), "quorum": (1,)}
REKEYED = frozenset(s.path for s in SECRETS if s.klass in HOST_JOINS)
UNTOUCHED = frozenset(s.path for s in SECRETS) - REKEYED
# What the host's key opens alone once added: one-group files, and the Shamir file where it sits in
# every group. In `quorum` it holds one share of the two needed.
HOST_READS_ALONE = frozenset(s.path for s in SECRETS if s.klass in ("shared", "vault"))

KEY_FIELDS = ("age", "key_groups", "shamir_threshold")  # the sops metadata entries a re-key may change
KEPT_FIELDS = {"lastmodified", "mac", "version"}  # must be present, byte for byte, outside the key entries
TMP_SUFFIX = ".sopsctl-tmp"


def groups_with_host(secret: Secret) -> tuple[tuple[str, ...], ...]:
    joins = HOST_JOINS.get(secret.klass, ())
    return tuple((*group, HOST) if index in joins else group for index, group in enumerate(secret.groups))


# -- reading sops files without sopsctl -------------------------------------------------------------


@dataclass(frozen=True)
class KeyEntries:
    """A file's age entries per key group (recipient -> enc, as stored) and its shamir_threshold."""

    groups: tuple[dict[str, str], ...]
    threshold: int | None

    def recipient_sets(self) -> list[set[str]]:
        return [set(group) for group in self.groups]


def _flat_key(line: str, fmt: str) -> tuple[str, str] | None:
    if fmt == "dotenv":
        if not line.startswith("sops_"):
            return None
        name, _, value = line[len("sops_"):].partition("=")
        return name, value
    name, sep, value = line.partition("=")
    return (name.strip(), value.strip()) if sep else None


def _sops_section(lines: Sequence[str]) -> list[str]:
    start = lines.index("[sops]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    return list(lines[start + 1:end])


def key_entries(data: bytes, fmt: str) -> KeyEntries:
    """Parse the metadata the way sops lays it out (stores/stores.go, flatten.go), independent of sopsctl."""
    if fmt in ("yaml", "json", "binary"):
        document = yaml.safe_load(data) if fmt == "yaml" else json.loads(data)
        meta = document["sops"]
        if meta.get("age"):
            raw_groups = [meta["age"]]
        else:
            raw_groups = [group.get("age") or [] for group in meta["key_groups"]]
        groups = tuple({e["recipient"]: e["enc"] for e in group} for group in raw_groups)
        return KeyEntries(groups, meta.get("shamir_threshold"))
    lines = data.decode().splitlines()
    source = lines if fmt == "dotenv" else _sops_section(lines)
    flat = dict(kv for kv in (_flat_key(line, fmt) for line in source) if kv is not None)
    entries: dict[tuple[int, int], dict[str, str]] = {}
    for name, value in flat.items():
        match = (re.fullmatch(r"()age__list_(\d+)__map_(recipient|enc)", name)
                 or re.fullmatch(r"key_groups__list_(\d+)__map_age__list_(\d+)__map_(recipient|enc)", name))
        if match:
            group = int(match.group(1) or 0)
            entries.setdefault((group, int(match.group(2))), {})[match.group(3)] = value
    count = 1 + max(g for g, _ in entries)
    groups = tuple({e["recipient"]: e["enc"] for (g, _), e in sorted(entries.items()) if g == index}
                   for index in range(count))
    threshold = flat.get("shamir_threshold")
    return KeyEntries(groups, int(threshold) if threshold is not None else None)


def outside_key_entries(data: bytes, fmt: str) -> list[tuple[str, bytes]]:
    """Every line of the file, in order, except those of the metadata's key entries (labelled by field).

    YAML: the `sops:` block's fields at indent 4; JSON and binary: the `"sops"` object's members at two
    tabs (closing brackets belong to the member above); dotenv: `sops_…` lines; INI: the [sops] section.
    """
    lines = data.splitlines(keepends=True)
    pieces: list[tuple[str, bytes]] = []
    if fmt in ("yaml", "json", "binary"):
        opener = b"sops:\n" if fmt == "yaml" else b'\t"sops": {\n'
        member = re.compile(rb"^    ([A-Za-z_]+):" if fmt == "yaml" else rb'^\t\t"([A-Za-z_]+)":')
        start = len(lines) - 1 - lines[::-1].index(opener)
        current = "<outside>"
        for number, line in enumerate(lines):
            if number <= start or fmt != "yaml" and line.rstrip(b"\n") == b"\t}":
                current = "<outside>"
            elif (found := member.match(line)) is not None:
                current = found.group(1).decode()
            if current not in KEY_FIELDS:
                pieces.append((current, line))
        return pieces
    if fmt == "dotenv":
        flat = re.compile(rb"^sops_(age__|key_groups__|shamir_threshold=)")
        kind = re.compile(rb"^sops_([a-z_]+?)(?:__|=)")
    else:
        flat = re.compile(rb"^(age__|key_groups__|shamir_threshold\s*=)")
        kind = re.compile(rb"^([a-z_]+?)(?:__|\s*=)")
    in_sops = fmt == "dotenv"
    for line in lines:
        if fmt == "ini" and line.startswith(b"["):
            in_sops = line.strip() == b"[sops]"
        if in_sops and flat.match(line):
            continue
        found = kind.match(line) if in_sops else None
        pieces.append((found.group(1).decode() if found else "<outside>", line))
    return pieces


def assert_only_key_entries_differ(old: bytes, new: bytes, fmt: str, path: str) -> None:
    """SPEC §5: values, `mac`, `lastmodified` and all outside the metadata stay byte for byte."""
    kept_old, kept_new = outside_key_entries(old, fmt), outside_key_entries(new, fmt)
    assert {label for label, _ in kept_old} >= KEPT_FIELDS, f"{path}: the splitter lost mac/lastmodified/version"
    assert kept_new == kept_old, f"{path}: bytes outside the key entries changed"
    before, after = key_entries(old, fmt), key_entries(new, fmt)
    if len(before.groups) > 1 and (before.threshold, len(before.groups)) != (after.threshold, len(after.groups)):
        # A new threshold needs a new Shamir split: an old share kept beside new ones would be garbage.
        kept = {enc for group in before.groups for enc in group.values()} & \
            {enc for group in after.groups for enc in group.values()}
        assert not kept, f"{path}: re-split for a new threshold, yet {len(kept)} old share(s) were kept"
        return
    for index, (group_before, group_after) in enumerate(zip(before.groups, after.groups, strict=False)):
        for recipient in group_before.keys() & group_after.keys():
            assert group_after[recipient] == group_before[recipient], (
                f"{path}: group {index}: the entry of staying recipient {recipient} was re-wrapped")


# -- the fleet ------------------------------------------------------------------------------------


@dataclass
class RekeyFleet:
    """A repo of real sops files plus the new host's ssh key, its age forms, and each file's plaintext."""

    fleet: Fleet
    host_pub: Path
    host_identity: str  # AGE-SECRET-KEY-1… from `sopsctl keys from-ssh --private`
    original: dict[str, bytes]  # path -> encrypted bytes as sops wrote them
    plain: dict[str, bytes]  # path -> what `sops decrypt` printed for it
    bulk: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.fleet.root

    def copy(self, dest: Path) -> RekeyFleet:
        return RekeyFleet(self.fleet.copy(dest), self.host_pub, self.host_identity, dict(self.original),
                          dict(self.plain), list(self.bulk))

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def snapshot(self) -> dict[str, bytes]:
        return {p.relative_to(self.root).as_posix(): p.read_bytes()
                for p in sorted((self.root / "secrets").rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


def sopsctl(root: Path, *args: str, key_file: Path | None = None, repo_command: bool = True) -> Run:
    """`sopsctl ARGS --root ROOT` in-process from the repo root, with SOPS_AGE_KEY_FILE = key_file (or none)."""
    out, err = io.StringIO(), io.StringIO()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_")}
    if key_file is not None:
        env["SOPS_AGE_KEY_FILE"] = str(key_file)
    with mock.patch.dict(os.environ, env, clear=True), contextlib.chdir(root), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, *(["--root", str(root)] if repo_command else [])])
    return Run(code, out.getvalue(), err.getvalue())


def expect(run: Run, code: int, what: str) -> Run:
    assert run.code == code, f"{what}: exit {run.code}, expected {code}\nstdout:\n{run.out}\nstderr:\n{run.err}"
    return run


def host_add(rf: RekeyFleet, *extra: str, key_file: Path | None = None) -> Run:
    return sopsctl(rf.root, "host", "add", HOST, "--ssh-key-file", str(rf.host_pub), "--platform", "nixos",
                   "--user", "alice=admin", *extra, key_file=key_file)


def recovery(rf: RekeyFleet) -> Path:
    return rf.fleet.key_file([R])


def build(dest: Path, sops: Path, ssh_keygen: str) -> RekeyFleet:
    generated = {name: pyrage.x25519.Identity.generate() for name in KEY_NAMES}
    fleet = Fleet(root=dest / "repo", work=dest / "work", sops=sops,
                  identities={n: str(i) for n, i in generated.items()},
                  recipients={n: str(i.to_public()) for n, i in generated.items()})
    (fleet.root / "policies").mkdir(parents=True)
    fleet.write_policy("policies/fleet.yaml", POLICY_FLEET.format(**fleet.recipients))
    fleet.write_policy("policies/classes.yaml", POLICY_CLASSES)
    fleet.generate()
    for secret in SECRETS:
        config = None
        if secret.klass == "quorum":  # a Shamir file whose threshold differs from its rule's
            config = rules_config(fleet.recipients_of(secret.groups), QUORUM_FILE_THRESHOLD)
        fleet.encrypt(secret.path, plaintext(secret.format, f"s3cr3t-{secret.path.replace('/', '-')}"), config)
        got = key_entries((fleet.root / secret.path).read_bytes(), secret.format)
        assert got.recipient_sets() == [set(g) for g in fleet.recipients_of(secret.groups)], secret.path
        assert got.threshold == secret.threshold, secret.path

    key = fleet.work / "ssh" / "ssh_host_ed25519_key"
    key.parent.mkdir(parents=True)
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"root@{HOST}", "-f", str(key)],
                   check=True, timeout=30)
    converted = expect(sopsctl(fleet.root, "keys", "from-ssh", "--private", str(key), repo_command=False), 0, "keys from-ssh --private")
    identity = converted.out.strip()
    recipient = expect(sopsctl(fleet.root, "keys", "from-ssh", f"{key}.pub", repo_command=False), 0, "keys from-ssh").out.strip()
    assert str(pyrage.x25519.Identity.from_str(identity).to_public()) == recipient
    fleet.identities[HOST], fleet.recipients[HOST] = identity, recipient

    original = {s.path: (fleet.root / s.path).read_bytes() for s in SECRETS}
    plain = {}
    for secret in SECRETS:
        result = fleet.decrypt(secret.path, [R])
        assert result.returncode == 0, result.stderr
        plain[secret.path] = result.stdout
    return RekeyFleet(fleet, Path(f"{key}.pub"), identity, original, plain)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, sops_bin: Path, ssh_keygen: str) -> RekeyFleet:
    return build(tmp_path_factory.mktemp("rekey-fleet"), sops_bin, ssh_keygen)


@pytest.fixture
def rf(base: RekeyFleet, tmp_path: Path) -> RekeyFleet:
    return base.copy(tmp_path)


def assert_groups(rf: RekeyFleet, path: str, groups: Sequence[Sequence[str]], threshold: int | None) -> None:
    got = key_entries(rf.read(path), BY_PATH[path].format)
    assert got.recipient_sets() == [set(g) for g in rf.fleet.recipients_of(groups)], (
        f"{path}: recipients {got.recipient_sets()}, expected key groups {groups}")
    assert got.threshold == threshold, f"{path}: shamir_threshold {got.threshold}, expected {threshold}"


def decrypts(rf: RekeyFleet, path: str, names: Iterable[str] = (), extra: Iterable[str] = ()) -> bool:
    """Whether the real sops decrypts `path` with only these identities; it must print the original plaintext."""
    return rf.fleet.opens(path, rf.plain[path], names, extra)


def no_temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{TMP_SUFFIX}"))


# -- (1) life events with --rekey, checked with the real sops --------------------------------------------


def test_host_add_rekey_grants_exactly_the_policy_and_retire_rekey_revokes_everywhere(rf: RekeyFleet) -> None:
    host_only = [rf.host_identity]
    assert not any(decrypts(rf, s.path, extra=host_only) for s in SECRETS)  # not a reader yet

    expect(host_add(rf, "--rekey", key_file=recovery(rf)), 0, "host add --rekey")
    for secret in SECRETS:
        threshold = RULE_THRESHOLD.get(secret.klass)
        assert_groups(rf, secret.path, groups_with_host(secret), threshold)
    readable = {s.path for s in SECRETS if decrypts(rf, s.path, extra=host_only)}
    assert readable == HOST_READS_ALONE
    # In quorum the host holds one share; with an admin's it reaches the rule's threshold of 2.
    assert decrypts(rf, "secrets/quorum/ca.json", [ALICE], host_only)
    assert not decrypts(rf, "secrets/quorum/ca.json", [ALICE])
    for path in UNTOUCHED:
        assert rf.read(path) == rf.original[path], f"{path}: no reader changed, yet the file was rewritten"

    expect(sopsctl(rf.root, "host", "retire", HOST, "--rekey", key_file=recovery(rf)), 0, "host retire --rekey")
    for secret in SECRETS:
        threshold = RULE_THRESHOLD.get(secret.klass)
        assert_groups(rf, secret.path, secret.groups, threshold)
        assert not decrypts(rf, secret.path, extra=host_only), f"the retired host still reads {secret.path}"
        assert decrypts(rf, secret.path, [R])
    assert not decrypts(rf, "secrets/quorum/ca.json", [ALICE], host_only)


def test_life_events_with_rekey_take_identity_files(rf: RekeyFleet) -> None:
    """SPEC §4: life events' --rekey unwraps with the identities sops finds, plus `--identity FILE`."""
    expect(host_add(rf, "--rekey", "--identity", str(recovery(rf))), 0, "host add --rekey --identity")
    assert {p for p in REKEYED if rf.read(p) != rf.original[p]} == REKEYED
    assert decrypts(rf, "secrets/shared/app.yaml", extra=[rf.host_identity])
    expect(sopsctl(rf.root, "host", "retire", HOST, "--rekey", "--identity", str(recovery(rf))), 0,
           "host retire --rekey --identity")
    assert not decrypts(rf, "secrets/shared/app.yaml", extra=[rf.host_identity])


def sops_rule(rf: RekeyFleet, path: str) -> dict:
    """The first creation rule of the repo's .sops.yaml whose path_regex matches `path` (as sops picks it)."""
    config = yaml.safe_load((rf.root / ".sops.yaml").read_text())
    return next(r for r in config["creation_rules"] if "path_regex" not in r or re.search(r["path_regex"], path))


def test_rekey_gives_the_same_recipients_as_sops_updatekeys(rf: RekeyFleet, tmp_path: Path) -> None:
    theirs = rf.copy(tmp_path / "updatekeys")  # the same pre-rekey files
    expect(host_add(rf, "--rekey", key_file=recovery(rf)), 0, "host add --rekey")
    shutil.copy2(rf.root / ".sops.yaml", theirs.root / ".sops.yaml")  # the same policy change
    paths = [s.path for s in SECRETS]
    theirs.fleet.run_sops(["updatekeys", "-y", *paths], key_file=recovery(theirs))

    for secret in SECRETS:
        ours_entries = key_entries(rf.read(secret.path), secret.format)
        theirs_entries = key_entries(theirs.read(secret.path), secret.format)
        assert ours_entries.recipient_sets() == theirs_entries.recipient_sets(), secret.path
        assert ours_entries.recipient_sets() == [set(g) for g in rf.fleet.recipients_of(groups_with_host(secret))]
        if secret.path in UNTOUCHED:
            assert rf.read(secret.path) == theirs.read(secret.path) == rf.original[secret.path], secret.path
    for path in ("secrets/vault/root.yaml", "secrets/quorum/ca.json"):
        rule = sops_rule(rf, path)
        assert len(rule["key_groups"]) > 1
        assert key_entries(rf.read(path), BY_PATH[path].format).threshold == rule["shamir_threshold"] == 2, path
    # sops keeps the file's old threshold (reference §4.1 step 4); sopsctl applied the rule's.
    assert key_entries(theirs.read("secrets/quorum/ca.json"), "json").threshold == QUORUM_FILE_THRESHOLD
    assert not decrypts(theirs, "secrets/quorum/ca.json", [ALICE], [rf.host_identity])
    assert decrypts(rf, "secrets/quorum/ca.json", [ALICE], [rf.host_identity])


# -- (2) minimal diffs, dry run, skipped files ------------------------------------------------------------


def test_rekey_changes_only_the_key_entries(rf: RekeyFleet) -> None:
    modes = {}
    for index, secret in enumerate(SECRETS):
        modes[secret.path] = (0o600, 0o640, 0o644)[index % 3]
        (rf.root / secret.path).chmod(modes[secret.path])
    expect(host_add(rf, "--rekey", key_file=recovery(rf)), 0, "host add --rekey")
    for secret in SECRETS:
        new = rf.read(secret.path)
        assert (rf.root / secret.path).stat().st_mode & 0o7777 == modes[secret.path], f"{secret.path}: mode"
        if secret.path in UNTOUCHED:
            assert new == rf.original[secret.path]
            continue
        assert new != rf.original[secret.path]
        assert_only_key_entries_differ(rf.original[secret.path], new, secret.format, secret.path)
        assert decrypts(rf, secret.path, [R]), f"{secret.path}: sops cannot decrypt the re-keyed file"
        assert decrypts(rf, secret.path, extra=[rf.host_identity]) == (secret.path in HOST_READS_ALONE)
    # Every pair of groups of the re-split file combines (its shares belong to one split).
    for pair in ([ALICE, WEB1], [ALICE, BOB], [WEB1, BOB]):
        assert decrypts(rf, "secrets/quorum/ca.json", pair), pair
    assert not decrypts(rf, "secrets/quorum/ca.json", [BOB])


def test_splitter_sees_a_changed_mac_lastmodified_value_or_rewrapped_entry(base: RekeyFleet) -> None:
    """The helpers above can fail: each single-byte edit outside the key entries, or a re-wrapped blob, is caught."""
    yaml_file, json_file, env_file = (base.original[p] for p in
                                      ("secrets/shared/app.yaml", "secrets/shared/api.json", "secrets/shared/app.env"))
    ini_file = base.original["secrets/shared/db.ini"]
    edits = [
        (yaml_file, "yaml", b"    mac: ENC[AES256_GCM,data:", b"    mac: ENC[AES256_GCM,data:X"),
        (yaml_file, "yaml", b"    lastmodified: \"20", b"    lastmodified: \"19"),
        (yaml_file, "yaml", b"token: ENC[", b"token:  ENC["),
        (json_file, "json", b'\t\t"version": "', b'\t\t"version": "9'),
        (json_file, "json", b'\t"token": "ENC[', b'\t"token": "ENC[ '),
        (env_file, "dotenv", b"sops_mac=ENC[", b"sops_mac=ENC[X"),
        (ini_file, "ini", b"ENC[AES256_GCM,data:", b"ENC[AES256_GCM,data:Y"),
    ]
    for data, fmt, old, new in edits:
        assert old in data, (fmt, old)
        with pytest.raises(AssertionError):
            assert_only_key_entries_differ(data, data.replace(old, new, 1), fmt, "probe")
    for data, fmt in ((yaml_file, "yaml"), (json_file, "json"), (env_file, "dotenv"), (ini_file, "ini")):
        assert_only_key_entries_differ(data, data, fmt, "identity")
        # Re-wrapping changes an entry's armored body: change one base64 character of the first one.
        at = data.index(b"-----END AGE ENCRYPTED FILE-----") - 24
        while not data[at:at + 1].isalpha():
            at += 1
        tampered = data[:at] + data[at:at + 1].swapcase() + data[at + 1:]
        with pytest.raises(AssertionError):
            assert_only_key_entries_differ(data, tampered, fmt, "probe")


def test_dry_run_needs_no_identity_lists_the_files_and_gates(rf: RekeyFleet) -> None:
    expect(host_add(rf), 0, "host add (no --rekey)")
    before = rf.snapshot()
    dry = expect(sopsctl(rf.root, "rekey", "--dry-run", "--format", "json"), 1, "rekey --dry-run, work to do")
    report = dry.json()
    assert sorted(report["changed"]) == sorted(REKEYED) and len(report["changed"]) == len(REKEYED)
    assert sorted(report["unchanged"]) == sorted(UNTOUCHED)
    assert report["failed"] == []
    text = expect(sopsctl(rf.root, "rekey", "--dry-run"), 1, "rekey --dry-run (text)")
    assert {line.split()[-1] for line in text.out.splitlines() if line.startswith("would re-key ")} == REKEYED
    assert rf.snapshot() == before, "a dry run changed files"

    # The real run without any identity: nothing can be unwrapped, so nothing changes (exit 3).
    none = expect(sopsctl(rf.root, "rekey", "--format", "json"), 3, "rekey without identities")
    assert {f["path"] for f in none.json()["failed"]} == REKEYED
    assert rf.snapshot() == before

    expect(sopsctl(rf.root, "rekey", "--jobs", "3", key_file=recovery(rf)), 0, "rekey")
    clean = expect(sopsctl(rf.root, "rekey", "--dry-run", "--format", "json"), 0, "rekey --dry-run, nothing to do")
    assert clean.json()["changed"] == [] and sorted(clean.json()["unchanged"]) == sorted(s.path for s in SECRETS)


def test_files_no_identity_at_hand_unwraps_are_skipped_and_listed(rf: RekeyFleet) -> None:
    expect(host_add(rf), 0, "host add (no --rekey)")
    # web1 opens the shared files and the vault (it sits in both groups), not quorum (one share of three).
    web1 = rf.fleet.key_file([WEB1])
    run = expect(sopsctl(rf.root, "rekey", "--identity", str(web1), "--format", "json"), 3, "rekey as web1")
    report = run.json()
    skipped = {"secrets/quorum/ca.json"}
    assert {f["path"] for f in report["failed"]} == skipped
    assert all(f["message"].strip() for f in report["failed"])
    assert set(report["changed"]) == REKEYED - skipped
    assert "secrets/quorum/ca.json" in run.err
    assert rf.read("secrets/quorum/ca.json") == rf.original["secrets/quorum/ca.json"]
    for path in REKEYED - skipped:
        assert rf.read(path) != rf.original[path]
        assert decrypts(rf, path, extra=[rf.host_identity])
    assert no_temp_files(rf.root) == []


# -- (3) faults: a write failing half-way, and SIGKILL ----------------------------------------------------


class _FailingOs:
    """`os` for sopsctl.fsutil only: `name` raises ENOSPC on its `fail_at`-th call (1-based)."""

    def __init__(self, name: str, fail_at: int) -> None:
        self.name, self.fail_at, self.calls = name, fail_at, 0

    def __getattr__(self, attribute: str):  # type: ignore[no-untyped-def]
        real = getattr(os, attribute)
        if attribute != self.name:
            return real

        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == self.fail_at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args, **kwargs)

        return wrapped

    def syncfs(self, fd: int) -> int:
        """libc syncfs as ctypes calls it: -1 with errno set on the `fail_at`-th call."""
        import ctypes

        self.calls += 1
        if self.calls == self.fail_at:
            ctypes.set_errno(errno.ENOSPC)
            return -1
        os.sync()
        return 0


def classify(rf: RekeyFleet, old: dict[str, bytes], path: str) -> str:
    """'old' or 'new' (the rule's recipients, the rest byte for byte); anything else fails: a torn file."""
    data = rf.read(path)
    if data == old[path]:
        return "old"
    source = BY_PATH[source_of(path)]
    assert_only_key_entries_differ(old[path], data, source.format, path)
    wanted = [set(g) for g in rf.fleet.recipients_of(groups_with_host(source))]
    assert key_entries(data, source.format).recipient_sets() == wanted, f"{path}: neither old nor new (torn)"
    return "new"


def source_of(path: str) -> str:
    """The SECRETS file a bulk copy was made from (its name keeps the original name after `--`)."""
    return path if path in BY_PATH else "secrets/shared/" + path.rsplit("--", 1)[1]


@pytest.mark.parametrize(("call", "fail_at"), [("replace", 1), ("replace", 4), ("replace", len(REKEYED)),
                                                ("sync", 1)])
def test_a_write_failing_half_way_leaves_each_file_old_or_new(
        rf: RekeyFleet, monkeypatch: pytest.MonkeyPatch, call: str, fail_at: int) -> None:
    expect(host_add(rf), 0, "host add (no --rekey)")
    old = rf.snapshot()
    faulty = _FailingOs(call, fail_at)
    if call == "sync":  # the batch is made durable with syncfs(2) (through ctypes) where there is one
        monkeypatch.setattr(fsutil, "_syncfs", lambda: faulty.syncfs)
    monkeypatch.setattr(fsutil, "os", faulty)
    run = expect(sopsctl(rf.root, "rekey", "--jobs", "2", "--format", "json", key_file=recovery(rf)), 3,
                 f"rekey with os.{call} failing at call {fail_at}")
    monkeypatch.undo()
    assert faulty.calls >= fail_at, f"os.{call} was called {faulty.calls} times: the fault was never injected"
    state = {s.path: classify(rf, old, s.path) for s in SECRETS}
    new = {p for p, s in state.items() if s == "new"}
    report = run.json()
    failed = {f["path"] for f in report["failed"]}
    assert new <= REKEYED
    assert set(report["changed"]) == new, "the report's `changed` is not what was written"
    assert failed == REKEYED - new, "the report must name exactly the files not written"
    assert len(new) == (fail_at - 1 if call == "replace" else 0)
    for path in failed:
        assert path in run.err, f"stderr does not name {path}"
    assert no_temp_files(rf.root) == []
    for secret in SECRETS:
        assert decrypts(rf, secret.path, [R]), secret.path
    for path in new:
        assert decrypts(rf, path, [ALICE], [rf.host_identity])

    expect(sopsctl(rf.root, "rekey", key_file=recovery(rf)), 0, "rekey again, with nothing failing")
    assert {p for p in REKEYED if classify(rf, old, p) == "new"} == REKEYED


BULK_SOURCES = ("app.yaml", "api.json", "app.env", "db.ini", "tls.key")


def add_bulk(rf: RekeyFleet, count: int) -> None:
    """`count` copies of the shared files (real sops output) under secrets/shared/bulk/."""
    folder = rf.root / "secrets" / "shared" / "bulk"
    folder.mkdir()
    for index in range(count):
        name = BULK_SOURCES[index % len(BULK_SOURCES)]
        relative = f"secrets/shared/bulk/{index:04d}--{name}"
        shutil.copyfile(rf.root / "secrets" / "shared" / name, rf.root / relative)
        rf.bulk.append(relative)
        rf.plain[relative] = rf.plain[f"secrets/shared/{name}"]


def _temp_files(directories: Sequence[Path]) -> set[str]:
    return {entry.path for d in directories for entry in os.scandir(d) if entry.name.endswith(TMP_SUFFIX)}


def _kill_at(process: subprocess.Popen, moment: str, delay: float, directories: Sequence[Path]) -> None:
    """SIGKILL `process` `delay` s after `moment`: its start, its first temp file, or its first rename."""
    before = _temp_files(directories)
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while moment != "start" and process.poll() is None and time.monotonic() < deadline:
        now = _temp_files(directories) - before
        if (moment == "temps" and now) or (moment == "renames" and seen - now):
            break  # a temp file appeared / one of ours vanished: renamed over its target
        seen |= now
        time.sleep(0.0005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)


def test_sigkill_at_random_moments_leaves_each_file_old_or_new(rf: RekeyFleet, tmp_path: Path) -> None:
    add_bulk(rf, 600)  # enough that the renames last a few milliseconds (one is ~15 µs): a kill lands among them
    expect(host_add(rf), 0, "host add (no --rekey)")
    paths = [*REKEYED, *rf.bulk]
    old = {p: rf.read(p) for p in paths}
    env = rf.fleet.env(recovery(rf))
    directories = sorted({(rf.root / p).parent for p in paths})

    def command(root: Path) -> list[str]:
        return [sys.executable, "-m", "sopsctl", "rekey", "--root", str(root), "--jobs", "2"]

    timing = rf.copy(tmp_path / "timing")  # how long one whole run takes, to kill inside it
    start = time.monotonic()
    subprocess.run(command(timing.root), env=env, cwd=timing.root, check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - start

    rng = random.Random(20260711)
    moments = [("start", rng.uniform(0.01, 0.2)), ("start", rng.uniform(0.01, 0.2)),
               ("start", rng.uniform(0.2, 0.6) * duration), ("temps", rng.uniform(0, 0.003)),
               ("renames", rng.uniform(0, 0.002)), ("renames", 0.0)]
    outcomes = []
    for moment, delay in moments:
        process = subprocess.Popen(command(rf.root), env=env, cwd=rf.root, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        _kill_at(process, moment, delay, directories)
        code = process.wait(timeout=60)
        states = {p: classify(rf, old, p) for p in paths}  # each file old or new, never torn
        new = [p for p, state in states.items() if state == "new"]
        outcomes.append((moment, round(delay, 3), code, len(new)))
        for path in rng.sample(paths, 10) + rng.sample(new, min(10, len(new))):
            assert decrypts(rf, path, [R]), path
    assert all(code == -signal.SIGKILL for _, _, code, _ in outcomes), f"a run ended before its kill: {outcomes}"
    assert any(0 < count < len(paths) for *_, count in outcomes), (
        f"no kill landed among the renames, so no half-done batch was checked: {outcomes}")

    final = subprocess.run(command(rf.root), env=env, cwd=rf.root, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode(errors="replace")
    assert all(classify(rf, old, p) == "new" for p in paths)
    for path in rng.sample(rf.bulk, 20):
        assert decrypts(rf, path, extra=[rf.host_identity]), path


def test_temp_files_a_killed_run_left_are_not_taken_for_secrets(rf: RekeyFleet) -> None:
    """A SIGKILL between a batch's temp writes and its renames leaves `.NAME.XXXX.sopsctl-tmp` files."""
    expect(host_add(rf), 0, "host add (no --rekey)")
    leftovers = {  # named as fsutil.BatchWriter names them; one torn mid-write, one whole
        "secrets/shared/.api.json.k9x2m1qz.sopsctl-tmp": rf.read("secrets/shared/api.json")[:-40],
        "secrets/shared/.tls.key.0d7fq3wa.sopsctl-tmp": rf.read("secrets/shared/tls.key"),
    }
    for path, data in leftovers.items():
        (rf.root / path).write_bytes(data)
    run = sopsctl(rf.root, "rekey", "--format", "json", key_file=recovery(rf))
    report = run.json()
    listed = [*report["changed"], *report["unchanged"], *(f["path"] for f in report["failed"])]
    assert [p for p in listed if p.endswith(TMP_SUFFIX)] == [], "sopsctl took its own temp files for secrets"
    expect(run, 0, "rekey beside a killed run's temp files")
    assert {p for p in REKEYED if classify(rf, rf.original, p) == "new"} == REKEYED
