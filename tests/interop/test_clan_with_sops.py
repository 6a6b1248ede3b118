"""Interop acceptance tests for clan trees (sops/ + vars/) beside .sops.yaml: audit, who, access and rekey against the real sops."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest

from ..clan_builder import ClanTree, relative_link_target
from .audit_fleet import Fleet, FleetError, plaintext, rules_config
from .test_audit_with_sops import Run, class_name, files_of, findings_of, sopsctl, summary, who
from .test_rekey_with_sops import assert_only_key_entries_differ, key_entries

pytestmark = pytest.mark.interop

# Every private key of the test: recovery (policy only), clan users alice, bob, dave (two keys, no policy
# key), clan machines web1, db1, old (its policy host is retired), and a stray key nobody knows.
KEY_NAMES = ("recovery", "alice", "bob", "dave-1", "dave-2", "web1", "db1", "old", "stray")
# Who each key is to the policy (the audit's `subject`) and its policy key name; dave and stray have none.
SUBJECT = {"recovery": "key:recovery", "alice": "identity:alice", "bob": "identity:bob",
           "web1": "host:web1", "db1": "host:db1", "old": "host:old"}
POLICY_KEY = {"recovery": "recovery", "alice": "alice-clan", "bob": "bob-age", "web1": "web1-clan",
              "db1": "db1-clan", "old": "old-clan"}

# Keys come from clan's key.json in three of the four forms: `clan_user`, `clan_machine`, and a plain
# `age:` that equals bob's key.json (so a clan user is matched to a policy key by recipient).
POLICY = """\
version: 1
settings:
  secrets_dirs: [secrets]
  always_readers: [key:recovery]
{clan_root}keys:
  recovery: {{age: {recovery}, note: "offline recovery key"}}
  alice-clan: {{clan_user: alice}}
  bob-age: {{age: {bob}}}
  web1-clan: {{clan_machine: web1}}
  db1-clan: {{clan_machine: db1}}
  old-clan: {{clan_machine: old}}
identities:
  alice: {{role: admin, keys: [alice-clan]}}
  bob: {{role: user, keys: [bob-age]}}
hosts:
  web1: {{platform: nixos, keys: [web1-clan], users: {{alice: admin}}}}
  db1: {{platform: nixos, keys: [db1-clan], users: {{alice: admin}}}}
  old: {{platform: nixos, keys: [old-clan], status: retired}}
classes:
  - name: shared
    path: secrets/shared/**
    readers: [role:admin, hosts]
  - name: host
    path: secrets/hosts/{{host}}/**
    readers: ["host:{{host}}", "admins-of:{{host}}"]
"""

# The .sops.yaml side: (path, format, recipients). db.json was encrypted before db1 joined `hosts`.
SOPS_SIDE = (
    ("secrets/shared/app.yaml", "yaml", ("recovery", "alice", "web1", "db1")),
    ("secrets/shared/db.json", "json", ("recovery", "alice", "web1")),
    ("secrets/hosts/web1/ssh.yaml", "yaml", ("recovery", "web1", "alice")),
)
SOPS_DRIFTED = "secrets/shared/db.json"


@dataclass(frozen=True)
class ClanSecret:
    """A clan secret or var folder: its links when it was encrypted, the keys it was encrypted for, and
    the keys that must read it once rekeyed (its final links, retired hosts left out)."""

    folder: str
    links: tuple[str, ...]
    encrypted_for: tuple[str, ...]
    readers: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"{self.folder}/secret"


OPS_AT_BUILD = (("users", "alice"), ("machines", "web1"))  # sops/groups/ops members before the drift

CLAN = (
    # in sync, and stay so
    ClanSecret("sops/secrets/db-password", ("users/alice", "machines/db1"), ("alice", "db1"), ("alice", "db1")),
    ClanSecret("sops/secrets/bob-notes", ("users/bob",), ("bob",), ("bob",)),
    ClanSecret("vars/per-machine/web1/openssh/ssh.id_ed25519", ("machines/web1", "users/alice"),
               ("web1", "alice"), ("web1", "alice")),
    ClanSecret("vars/shared/user-password-alice/user-password", ("users/alice",), ("alice",), ("alice",)),
    ClanSecret("vars/shared/user-password-alice/user-password-hash",
               ("users/alice", "machines/web1", "machines/db1"), ("alice", "web1", "db1"), ("alice", "web1", "db1")),
    ClanSecret("vars/shared/wifi/psk", ("machines/web1", "machines/db1", "users/bob"),
               ("web1", "db1", "bob"), ("web1", "db1", "bob")),
    # group ops gains bob after these were encrypted: one missing-reader each
    ClanSecret("sops/secrets/api-token", ("users/alice", "groups/ops"), ("alice", "web1"), ("alice", "web1", "bob")),
    ClanSecret("sops/secrets/deploy-key", ("groups/ops", "users/dave"), ("alice", "web1", "dave-1", "dave-2"),
               ("alice", "web1", "bob", "dave-1", "dave-2")),
    ClanSecret("vars/per-machine/db1/zfs/key", ("machines/db1", "groups/ops"), ("db1", "alice", "web1"),
               ("db1", "alice", "web1", "bob")),
    # a users/bob link added after encryption
    ClanSecret("sops/secrets/monitoring", ("users/alice",), ("alice",), ("alice", "bob")),
    # its machines/db1 link removed, db1 left a recipient
    ClanSecret("sops/secrets/backup", ("users/alice", "machines/web1", "machines/db1"), ("alice", "web1", "db1"),
               ("alice", "web1")),
    # a stray recipient that no policy key and no key.json knows
    ClanSecret("sops/secrets/smtp", ("users/alice", "machines/web1"), ("alice", "web1", "stray"), ("alice", "web1")),
    # machine `old` is linked and a recipient, but its policy host is retired
    ClanSecret("sops/secrets/legacy-vpn", ("users/alice", "machines/old"), ("alice", "old"), ("alice",)),
    # a var of a machine whose sops/machines/ghost is gone
    ClanSecret("vars/per-machine/ghost/wireguard/private-key", ("users/alice",), ("alice",), ("alice",)),
    # a link to a user (zoe) who no longer exists
    ClanSecret("sops/secrets/old-admin", ("users/alice", "users/zoe"), ("alice",), ("alice",)),
    # a link to a group (legacy) that no longer exists
    ClanSecret("sops/secrets/ci-cache", ("users/bob", "groups/legacy"), ("bob",), ("bob",)),
)
# group ops also links a machine clan no longer has: one finding for the group, none for its secrets
GONE_MEMBER = "sops/groups/ops/machines/decommissioned"
BY_FOLDER = {s.folder: s for s in CLAN}
CLAN_PATHS = frozenset(s.path for s in CLAN)
PUBLIC_VALUES = ("vars/per-machine/web1/openssh/ssh.id_ed25519.pub/value",
                 "vars/per-machine/ghost/wireguard/public-key/value")


def p(folder: str) -> str:
    return BY_FOLDER[folder].path


ANY = object()  # orphaned findings: SPEC names no subject for them


@dataclass(frozen=True)
class Expected:
    kind: str
    path: str
    subject: object  # str, or ANY
    key: str | None
    klass: str = "clan"


def planted(stray: str, prefix: str = "") -> list[Expected]:
    """Each planted drift, found exactly once (paths under `prefix` when clan_root moves the tree)."""
    clan = [
        Expected("missing-reader", p("sops/secrets/api-token"), "identity:bob", "bob-age"),
        Expected("missing-reader", p("sops/secrets/deploy-key"), "identity:bob", "bob-age"),
        Expected("missing-reader", p("vars/per-machine/db1/zfs/key"), "identity:bob", "bob-age"),
        Expected("missing-reader", p("sops/secrets/monitoring"), "identity:bob", "bob-age"),
        Expected("unexpected-reader", p("sops/secrets/backup"), "host:db1", "db1-clan"),
        Expected("unknown-recipient", p("sops/secrets/smtp"), stray, None),
        Expected("retired-recipient", p("sops/secrets/legacy-vpn"), "host:old", "old-clan"),
        Expected("orphaned", p("vars/per-machine/ghost/wireguard/private-key"), ANY, None),
        Expected("orphaned", p("sops/secrets/old-admin"), ANY, None),
        Expected("orphaned", p("sops/secrets/ci-cache"), ANY, None),
        Expected("orphaned", GONE_MEMBER, ANY, None),
    ]
    return [Expected(e.kind, prefix + e.path, e.subject, e.key, e.klass) for e in clan] + [
        Expected("missing-reader", SOPS_DRIFTED, "host:db1", "db1-clan", "shared")]


DRIFTED = frozenset(e.path for e in planted("") if e.kind != "orphaned")  # what rekey must rewrite


# -- building the repo with the real sops ---------------------------------------------------------


@dataclass
class ClanFleet:
    fleet: Fleet
    plain: dict[str, bytes]  # clan secret path -> its plaintext
    original: dict[str, bytes]  # every encrypted file -> its bytes before any rekey

    @property
    def root(self) -> Path:
        return self.fleet.root

    def copy(self, dest: Path) -> ClanFleet:
        return ClanFleet(self.fleet.copy(dest), dict(self.plain), dict(self.original))

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def all_keys(self) -> Path:
        return self.fleet.key_file(KEY_NAMES)


def policy_text(recipients: dict[str, str], clan_root: str | None = None) -> str:
    setting = f"  clan_root: {clan_root}\n" if clan_root else ""
    return POLICY.format(clan_root=setting, **recipients)


def encrypt_binary(fleet: Fleet, path: str, data: bytes, names: Iterable[str]) -> None:
    """What clan runs: `sops encrypt` in the binary store for explicit recipients, the repo's .sops.yaml kept out."""
    target = fleet.root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    config = fleet._scratch("configs", "{}\n")
    recipients = ",".join(fleet.recipients[n] for n in names)
    fleet.run_sops(["encrypt", "--input-type", "binary", "--output-type", "binary", "--age", recipients,
                    "--in-place", path], config=config)


def build(dest: Path, sops: Path) -> ClanFleet:
    generated = {name: pyrage.x25519.Identity.generate() for name in KEY_NAMES}
    fleet = Fleet(root=dest / "repo", work=dest / "work", sops=sops,
                  identities={n: str(i) for n, i in generated.items()},
                  recipients={n: str(i.to_public()) for n, i in generated.items()})
    clan = ClanTree(fleet.root)
    r = fleet.recipients
    clan.write_key("users", "alice", [r["alice"]], as_list=False)
    clan.write_key("users", "bob", [r["bob"]])
    clan.write_key("users", "dave", [r["dave-1"], r["dave-2"]])
    clan.write_key("machines", "web1", [r["web1"]], as_list=False)
    clan.write_key("machines", "db1", [r["db1"]])
    clan.write_key("machines", "old", [r["old"]])
    for kind, name in OPS_AT_BUILD:
        clan.add_member("ops", kind, name)

    (fleet.root / "policies").mkdir(parents=True)
    fleet.write_policy("policies/fleet.yaml", policy_text(r))
    fleet.generate()
    for path, fmt, names in SOPS_SIDE:
        config = rules_config([[r[n] for n in names]]) if path == SOPS_DRIFTED else None
        fleet.encrypt(path, plaintext(fmt, f"s3cr3t-{path}"), config)

    plain: dict[str, bytes] = {}
    for secret in CLAN:
        folder = clan.secret_dir(secret.folder)
        for link in secret.links:
            kind, name = link.split("/")
            clan.link(folder, kind, name)
        plain[secret.path] = b"\x00\xff clan " + secret.folder.encode() + b"\n"
        encrypt_binary(fleet, secret.path, plain[secret.path], secret.encrypted_for)
    clan.write_value("vars/per-machine/web1/openssh/ssh.id_ed25519.pub", "ssh-ed25519 AAAAC3Nz… root@web1\n")
    clan.write_value("vars/per-machine/ghost/wireguard/public-key", "kP0oNo7lQmFhY2x1c3RlcnB1YmxpYw==\n")

    # the drifts, each after encryption
    clan.add_member("ops", "users", "bob")
    clan.add_member("ops", "machines", "decommissioned")
    clan.link(fleet.root / "sops/secrets/monitoring", "users", "bob")
    clan.unlink(fleet.root / "sops/secrets/backup", "machines", "db1")

    for path, fmt, names in SOPS_SIDE:
        got = key_entries((fleet.root / path).read_bytes(), fmt).recipient_sets()
        if got != [{r[n] for n in names}]:
            raise FleetError(f"{path}: sops encrypted it for {got}, not {names}")
    for secret in CLAN:
        got = key_entries((fleet.root / secret.path).read_bytes(), "binary").recipient_sets()
        if got != [{r[n] for n in secret.encrypted_for}]:
            raise FleetError(f"{secret.path}: sops encrypted it for {got}, not {secret.encrypted_for}")
    link = fleet.root / "vars/per-machine/db1/zfs/key/groups/ops"
    assert relative_link_target(link) == "../../../../../../sops/groups/ops"
    assert relative_link_target(fleet.root / "sops/groups/ops/users/bob") == "../../../users/bob"
    for dangling in ("sops/secrets/old-admin/users/zoe", "sops/secrets/ci-cache/groups/legacy", GONE_MEMBER):
        assert (fleet.root / dangling).is_symlink() and not (fleet.root / dangling).exists(), dangling
    assert not (fleet.root / "sops/machines/ghost").exists()

    original = {path: (fleet.root / path).read_bytes() for path, _, _ in SOPS_SIDE}
    original.update({s.path: (fleet.root / s.path).read_bytes() for s in CLAN})
    return ClanFleet(fleet, plain, original)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, sops_bin: Path) -> ClanFleet:
    """Built once; tests that change the tree work on a copy."""
    return build(tmp_path_factory.mktemp("clan-fleet"), sops_bin)


@pytest.fixture
def cf(base: ClanFleet, tmp_path: Path) -> ClanFleet:
    return base.copy(tmp_path)


# -- checking -------------------------------------------------------------------------------------


def run(cf: ClanFleet, *args: str) -> Run:
    return sopsctl(cf.fleet, *args)


def check_findings(result: Run, expected: list[Expected]) -> None:
    findings = findings_of(result)
    wanted = {(e.kind, e.path): e for e in expected}
    assert len(wanted) == len(expected)
    got = {(f["kind"], f["path"]): f for f in findings}
    extra = [summary(f) for key, f in got.items() if key not in wanted]
    missing = [f"{e.kind} {e.path} subject={e.subject if e.subject is not ANY else '*'}"
               for key, e in wanted.items() if key not in got]
    assert not extra and not missing, f"unexpected findings: {extra}\nnot found: {missing}"
    assert len(findings) == len(expected), f"a planted drift is reported more than once: {[summary(f) for f in findings]}"
    for key, e in wanted.items():
        finding = got[key]
        if e.subject is not ANY:
            assert finding["subject"] == e.subject, summary(finding)
            assert finding["key"] == e.key, summary(finding)
        assert class_name(finding["class"]) == e.klass, finding
        assert finding["severity"] == ("warning" if e.kind == "orphaned" else "error"), finding


def decrypts(cf: ClanFleet, path: str, name: str) -> bool:
    """Whether the real sops decrypts `path` with only key `name`; when it does, it must give the original."""
    return cf.fleet.opens(path, cf.plain[path], [name])


def readers_by_sops(cf: ClanFleet) -> dict[str, set[str]]:
    """For every clan secret, the keys (of KEY_NAMES) with which the real sops alone decrypts it."""
    pairs = [(s.path, name) for s in CLAN for name in KEY_NAMES]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda pair: decrypts(cf, *pair), pairs))
    readable: dict[str, set[str]] = {s.path: set() for s in CLAN}
    for (path, name), ok in zip(pairs, results, strict=True):
        if ok:
            readable[path].add(name)
    return readable


# -- the tests ------------------------------------------------------------------------------------


def test_audit_reports_each_planted_clan_drift_once_in_one_report_with_the_sops_yaml_side(base: ClanFleet) -> None:
    result = run(base, "audit")
    check_findings(result, planted(base.fleet.recipients["stray"]))
    result.expect_code(1)
    assert result.data["summary"]["errors"] == 8 and result.data["summary"]["warnings"] == 4, result.data["summary"]


def test_audit_lists_clan_secrets_and_vars_with_their_recipients_matched_to_policy_keys(base: ClanFleet) -> None:
    files = files_of(run(base, "audit"))
    clan_files = {path for path, entry in files.items() if entry["class"] == "clan"}
    assert clan_files == CLAN_PATHS
    assert set(files) == CLAN_PATHS | {path for path, _, _ in SOPS_SIDE}, "only secrets are listed: no key.json, no value"
    by_recipient = {recipient: name for name, recipient in base.fleet.recipients.items()}
    for secret in CLAN:
        entry = files[secret.path]
        assert entry["format"] == "binary" and entry.get("status", "encrypted") == "encrypted", entry
        assert {r["recipient"] for r in entry["recipients"]} == {base.fleet.recipients[n] for n in secret.encrypted_for}
        for recipient in entry["recipients"]:
            name = by_recipient[recipient["recipient"]]
            if name in POLICY_KEY:  # alice via clan_user, web1/db1/old via clan_machine, bob by recipient
                assert (recipient["key"], recipient["owner"]) == (POLICY_KEY[name], SUBJECT[name]), (secret.path, recipient)
            elif name == "stray":
                assert (recipient["key"], recipient["owner"]) == (None, None), (secret.path, recipient)


def test_one_matrix_shows_both_systems_and_marks_exactly_the_planted_drift(base: ClanFleet) -> None:
    result = run(base, "matrix")
    result.expect_code(0)
    assert set(result.data["files"]) == CLAN_PATHS | {path for path, _, _ in SOPS_SIDE}
    cell = {"missing-reader": "missing", "unexpected-reader": "unexpected", "unknown-recipient": "unexpected",
            "retired-recipient": "unexpected"}
    wanted = {(e.path, e.subject, cell[e.kind]) for e in planted(base.fleet.recipients["stray"]) if e.kind in cell}
    got = {(c["path"], c["subject"], c["access"]) for c in result.data["cells"] if c["access"] != "direct"}
    assert got == wanted


def test_the_clan_tree_is_found_where_settings_clan_root_says(cf: ClanFleet) -> None:
    (cf.root / "infra").mkdir()
    for folder in ("sops", "vars"):
        shutil.move(cf.root / folder, cf.root / "infra" / folder)
    cf.fleet.write_policy("policies/fleet.yaml", policy_text(cf.fleet.recipients, "infra"))
    result = run(cf, "audit")
    check_findings(result, planted(cf.fleet.recipients["stray"], prefix="infra/"))
    result.expect_code(1)


def test_who_and_access_answer_across_both_systems(base: ClanFleet) -> None:
    data = who(base.fleet, p("sops/secrets/db-password"))
    assert data["source"] == "file"
    assert {r["subject"]: r["alone"] for r in data["readers"]} == {"identity:alice": True, "host:db1": True}
    assert [{e["recipient"] for e in group} for group in data["groups"]] == [
        {base.fleet.recipients["alice"], base.fleet.recipients["db1"]}]

    data = who(base.fleet, p("sops/secrets/bob-notes"))  # bob's key.json matched to the plain `age:` key
    assert [(r["subject"], r["keys"], r["alone"]) for r in data["readers"]] == [("identity:bob", ["bob-age"], True)]

    access = run(base, "access", "host:web1")
    access.expect_code(0)
    assert access.data["subject"] == "host:web1"
    files = {f["path"]: f for f in access.data["files"]}
    web1_clan = {s.path for s in CLAN if "web1" in s.encrypted_for}
    assert set(files) == web1_clan | {"secrets/shared/app.yaml", SOPS_DRIFTED, "secrets/hosts/web1/ssh.yaml"}
    assert all(f["alone"] and f["direct"] for f in files.values()), files


def test_rekey_fixes_clan_drift_and_sops_then_decrypts_with_exactly_the_linked_keys(cf: ClanFleet) -> None:
    result = run(cf, "rekey", "--identity", str(cf.all_keys()))
    result.expect_code(0)
    assert result.data["failed"] == []
    assert set(result.data["changed"]) == DRIFTED
    assert not set(result.data["unchanged"]) & DRIFTED

    formats = {path: fmt for path, fmt, _ in SOPS_SIDE} | dict.fromkeys(CLAN_PATHS, "binary")
    for path, before in cf.original.items():
        after = cf.read(path)
        if path in DRIFTED:
            assert_only_key_entries_differ(before, after, formats[path], path)
        else:
            assert after == before, f"{path}: in sync, yet rekey rewrote it"
    for secret in CLAN:
        got = key_entries(cf.read(secret.path), "binary").recipient_sets()
        assert got == [{cf.fleet.recipients[n] for n in secret.readers}], secret.path

    after = run(cf, "audit")
    leftover = [summary(f) for f in findings_of(after) if f["kind"] != "orphaned"]
    assert leftover == [], f"rekey left findings: {leftover}"
    after.expect_code(0)

    readable = readers_by_sops(cf)
    assert readable == {s.path: set(s.readers) for s in CLAN}

    again = run(cf, "rekey", "--identity", str(cf.all_keys()))
    again.expect_code(0)
    assert again.data["changed"] == [], "a second rekey must find nothing to do"

    data = who(cf.fleet, p("sops/secrets/api-token"))
    assert {r["subject"]: r["alone"] for r in data["readers"]} == {
        "identity:alice": True, "host:web1": True, "identity:bob": True}
    access = run(cf, "access", "identity:bob")
    access.expect_code(0)
    assert {f["path"] for f in access.data["files"]} == {s.path for s in CLAN if "bob" in s.readers}


def test_rekey_dry_run_lists_the_drifted_clan_secrets_and_changes_nothing(cf: ClanFleet) -> None:
    result = run(cf, "rekey", "--dry-run")
    result.expect_code(1)
    assert set(result.data["changed"]) == DRIFTED
    assert all(cf.read(path) == before for path, before in cf.original.items())


def test_the_fixture_is_what_sops_says_before_any_rekey(base: ClanFleet) -> None:
    """The oracle: before rekey, sops opens each clan secret with exactly the keys it was encrypted for."""
    assert readers_by_sops(base) == {s.path: set(s.encrypted_for) for s in CLAN}
    # key.json in both of clan's forms: one object (alice, web1) and a list (bob, dave with two keys)
    assert json.loads((base.root / "sops/users/alice/key.json").read_text())["type"] == "age"
    assert len(json.loads((base.root / "sops/users/dave/key.json").read_text())) == 2


def test_rotate_gives_clan_secrets_a_new_data_key_for_exactly_their_linked_readers(cf: ClanFleet) -> None:
    """rotate and verify take clan files too: new data key, wrapped for what the links grant, same plaintext."""
    from sopsctl.datakey import recover
    from sopsctl.formats import read_metadata
    from sopsctl.identities import load_identities

    rotatable = sorted(s.path for s in CLAN if "per-machine/ghost" not in s.path)  # orphaned vars are refused
    identities = load_identities({}, cf.fleet.work, [cf.all_keys()])

    def data_key(path: str) -> bytes:
        return recover(read_metadata(cf.read(path), "binary", full=True), identities).key

    before = {path: data_key(path) for path in rotatable}
    verified = run(cf, "verify", "--identity", str(cf.all_keys()), *rotatable)
    verified.expect_code(0)
    rotated = run(cf, "rotate", "--identity", str(cf.all_keys()), *rotatable)
    rotated.expect_code(0)
    assert sorted(rotated.data["rotated"]) == rotatable and rotated.data["failed"] == []
    for path in rotatable:
        assert data_key(path) != before[path], f"{path}: rotate kept the data key"
    rotated_secrets = [s for s in CLAN if s.path in rotatable]
    readable = readers_by_sops(cf)
    assert {s.path: readable[s.path] for s in rotated_secrets} == {s.path: set(s.readers) for s in rotated_secrets}
    run(cf, "verify", "--identity", str(cf.all_keys()), *rotatable).expect_code(0)
