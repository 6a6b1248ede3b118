"""Interop acceptance tests for `sopsctl audit`, `who` and `access` (SPEC §4) on files the real sops wrote."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest

from sopsctl.cli import main

from .audit_fleet import (
    BOB_KEY_FIELD,
    BOB_KEY_HOLDER,
    BY_PATH,
    CA,
    CAROL_KEY_FIELD,
    HOST_DB1,
    KEY_BEARING,
    KEY_BEARING_POLICY,
    KEY_OWNERS,
    RETIRED_KEYS,
    SECRETS,
    SOPS_NO_KEY,
    SUBJECT_KEYS,
    Fleet,
    build_fleet,
    key_bearing_policy,
    plaintext,
    rules_config,
)

pytestmark = pytest.mark.interop

KINDS = {"missing-reader", "unexpected-reader", "unknown-recipient", "retired-recipient", "group-mismatch",
         "plaintext", "uncovered", "fallback-only", "stale-config", "transitive-reader", "unreadable", "orphaned"}
WARNING_KINDS = {"transitive-reader", "fallback-only", "orphaned"}
FINDING_FIELDS = {"kind", "severity", "path", "subject", "key", "class", "message", "fix"}
FILE_FIELDS = {"path", "class", "format", "threshold", "recipients"}
RECIPIENT_FIELDS = {"recipient", "group", "key", "owner"}
WHO_FIELDS = {"path", "source", "threshold", "groups", "readers", "coalitions"}

CA_FILES = tuple(s.path for s in SECRETS if s.klass == "ca")
# Carol's key sits in KEY_BEARING, which recovery, alice, db1 and web1 read. Carol alone reads her home
# file; recovery reads it directly, so alice, db1 and web1 read it only through KEY_BEARING.
TRANSITIVE_DIRECT = frozenset((BOB_KEY_HOLDER, s) for s in ("identity:alice", "host:db1", "host:web1"))
# In the 2-of-3 `ca` files carol's key is a whole group: alice (group 1) and db1 (group 2) reach the
# threshold with it, web1 (in no group) does not, recovery (in every group) reads them directly.
TRANSITIVE_SHAMIR = frozenset((p, s) for p in CA_FILES for s in ("identity:alice", "host:db1"))
BASELINE_TRANSITIVE = TRANSITIVE_DIRECT | TRANSITIVE_SHAMIR

ALICE, BOB, CAROL, DB1, WEB1 = "identity:alice", "identity:bob", "identity:carol", "host:db1", "host:web1"
CA_PAIRS = {frozenset(p) for p in ((ALICE, DB1), (ALICE, CAROL), (DB1, CAROL))}


# -- running sopsctl ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    data: dict
    stderr: str

    def expect_code(self, code: int) -> None:
        assert self.code == code, (f"`sopsctl {' '.join(self.args)}` exited {self.code}, expected {code}; "
                                   f"stderr:\n{self.stderr}")


def sopsctl(fleet: Fleet, *args: str) -> Run:
    """Run `sopsctl ARGS --root ROOT --format json` from the repo root; its stdout must be one JSON document."""
    argv = (*args, "--root", str(fleet.root), "--format", "json")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(fleet.root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    try:
        data = json.loads(out.getvalue())
    except json.JSONDecodeError:
        data = None  # reported below, outside the except block, without a chained traceback
    if not isinstance(data, dict):
        pytest.fail(f"`sopsctl {' '.join(argv)}` exited {code} without a JSON object on stdout\n"
                    f"stdout: {out.getvalue()[:1000]!r}\nstderr: {err.getvalue()[:2000]}")
    return Run(argv, code, data, err.getvalue())


def audit(fleet: Fleet, *args: str) -> Run:
    return sopsctl(fleet, "audit", *args)


def class_name(value: object) -> str | None:
    """The class a finding or file names: its name, with or without the template binding after it."""
    if value is None:
        return None
    assert isinstance(value, str), f"class must be a string or null, not {value!r}"
    match = re.match(r"[A-Za-z0-9._-]+", value)
    assert match, f"class {value!r} does not start with a class name"
    return match.group()


def summary(finding: dict) -> str:
    return f"{finding.get('kind')} {finding.get('path')} subject={finding.get('subject')} key={finding.get('key')}"


def findings_of(run: Run) -> list[dict]:
    """The `findings` list, each item checked against the minimum shape of SPEC §4 'JSON shapes'."""
    findings = run.data.get("findings")
    assert isinstance(findings, list), f"audit JSON has no `findings` list: {sorted(run.data)}"
    for finding in findings:
        assert isinstance(finding, dict), finding
        assert finding.keys() >= FINDING_FIELDS, f"finding lacks {FINDING_FIELDS - finding.keys()}: {finding}"
        assert finding["kind"] in KINDS, finding
        assert finding["severity"] == ("warning" if finding["kind"] in WARNING_KINDS else "error"), finding
        path = finding["path"]
        assert isinstance(path, str) and path and not path.startswith("/") and "\\" not in path, finding
        assert finding["subject"] is None or isinstance(finding["subject"], str), finding
        assert finding["key"] is None or isinstance(finding["key"], str), finding
        class_name(finding["class"])
        for text in ("message", "fix"):
            assert isinstance(finding[text], str) and finding[text].strip(), f"empty {text}: {finding}"
        assert "\n" not in finding["fix"].strip(), f"the fix must be one line: {finding}"
    counts = Counter(summary(f) for f in findings)
    assert all(n == 1 for n in counts.values()), f"a finding is reported twice: {counts.most_common(3)}"
    return findings


def files_of(run: Run) -> dict[str, dict]:
    files = run.data.get("files")
    assert isinstance(files, list), f"audit JSON has no `files` list: {sorted(run.data)}"
    by_path: dict[str, dict] = {}
    for entry in files:
        assert entry.keys() >= FILE_FIELDS, f"file entry lacks {FILE_FIELDS - entry.keys()}: {entry}"
        assert entry["path"] not in by_path, f"{entry['path']} is listed twice in `files`"
        assert isinstance(entry["recipients"], list), entry
        for recipient in entry["recipients"]:
            assert recipient.keys() >= RECIPIENT_FIELDS, f"recipient lacks {RECIPIENT_FIELDS - recipient.keys()}"
            assert isinstance(recipient["group"], int), f"`group` must be a group index: {recipient}"
        by_path[entry["path"]] = entry
    return by_path


def groups_of(entry: dict) -> list[set[str]]:
    """A file entry's recipients regrouped by their `group` index, in index order."""
    grouped: dict[int, set[str]] = defaultdict(set)
    for recipient in entry["recipients"]:
        grouped[recipient["group"]].add(recipient["recipient"])
    return [grouped[index] for index in sorted(grouped)]


def owner_ok(name: str, owner: object) -> bool:
    """A key with an owner names it as a subject; the recovery key, owned by nobody, may say null or itself."""
    expected = KEY_OWNERS[name]
    return owner == expected if expected is not None else owner in (None, f"key:{name}")


def new_problems(run: Run) -> tuple[list[dict], list[dict]]:
    """(findings other than transitive-reader, transitive-reader findings not in the baseline)."""
    findings = findings_of(run)
    others = [f for f in findings if f["kind"] != "transitive-reader"]
    extra = [f for f in findings if f["kind"] == "transitive-reader"
             and (f["path"], f["subject"]) not in BASELINE_TRANSITIVE]
    return others, extra


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, sops_bin: Path) -> Fleet:
    """The base repo, built once: never modified by a test (planted cases work on a copy)."""
    return build_fleet(tmp_path_factory.mktemp("audit-fleet"), sops_bin)


@pytest.fixture
def copy(fleet: Fleet, tmp_path: Path) -> Fleet:
    return fleet.copy(tmp_path / "copy")


# -- 1. the fresh fleet ---------------------------------------------------------------------------


def test_fresh_fleet_has_only_the_transitive_warnings_of_the_key_bearing_secret(fleet: Fleet) -> None:
    run = audit(fleet)
    findings = findings_of(run)
    assert [summary(f) for f in findings if f["kind"] != "transitive-reader"] == []
    pairs = {(f["path"], f["subject"]) for f in findings}
    assert {p for p in pairs if p[0] not in CA_FILES} == TRANSITIVE_DIRECT
    for finding in findings:
        assert finding["severity"] == "warning"
        assert class_name(finding["class"]) == BY_PATH[finding["path"]].klass, finding
        assert KEY_BEARING in finding["message"], f"the message must show the chain: {finding}"
        if "via" in finding:
            assert finding["via"] == [KEY_BEARING], finding
    run.expect_code(0)


def test_transitive_access_counts_a_shamir_share_reached_through_a_key_bearing_secret(fleet: Fleet) -> None:
    findings = findings_of(audit(fleet))
    assert {(f["path"], f["subject"]) for f in findings if f["path"] in CA_FILES} == TRANSITIVE_SHAMIR


def test_strict_turns_the_warnings_into_exit_1(fleet: Fleet) -> None:
    plain, strict = audit(fleet), audit(fleet, "--strict")
    assert [summary(f) for f in findings_of(strict)] == [summary(f) for f in findings_of(plain)]
    plain.expect_code(0)
    strict.expect_code(1)


def test_files_list_format_class_threshold_and_recipients_of_every_file(fleet: Fleet) -> None:
    files = files_of(audit(fleet))
    assert sorted(files) == sorted(BY_PATH)
    by_recipient = {recipient: name for name, recipient in fleet.recipients.items()}
    for path, secret in BY_PATH.items():
        entry = files[path]
        assert entry["format"] == secret.format, path
        assert class_name(entry["class"]) == secret.klass, path
        if secret.threshold is None:
            assert entry["threshold"] in (None, 1), path
        else:
            assert entry["threshold"] == secret.threshold, path
        assert groups_of(entry) == [set(group) for group in fleet.recipients_of(secret.groups)], path
        for recipient in entry["recipients"]:
            name = by_recipient[recipient["recipient"]]
            assert recipient["key"] == name, (path, recipient)
            assert owner_ok(name, recipient["owner"]), (path, recipient)


def test_audit_of_given_paths_judges_only_those(copy: Fleet) -> None:
    copy.rotate("secrets/hosts/web1/ssh.yaml", remove=[copy.recipients["web1-host"]])
    run = audit(copy, "secrets/hosts/web1/ssh.yaml", "secrets/shared/api.json")
    assert sorted(files_of(run)) == ["secrets/hosts/web1/ssh.yaml", "secrets/shared/api.json"]
    assert [summary(f) for f in findings_of(run)] == [
        "missing-reader secrets/hosts/web1/ssh.yaml subject=host:web1 key=web1-host"]
    run.expect_code(1)
    clean = audit(copy, "secrets/shared/api.json")
    assert findings_of(clean) == []
    clean.expect_code(0)


# -- 2. one planted problem, one finding ----------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    kind: str
    path: str
    subject: str | None = None
    key: str | None = None
    klass: str | None = None
    recipient: str | None = None  # the recipient the finding is about, to look up in `files`


def _unexpected_reader(f: Fleet) -> Planted:
    f.rotate("secrets/shared/api.json", add=[f.recipients["bob-2026"]])
    return Planted("unexpected-reader", "secrets/shared/api.json", BOB, "bob-2026", "shared",
                   f.recipients["bob-2026"])


def _missing_reader(f: Fleet) -> Planted:
    f.rotate("secrets/hosts/web1/ssh.yaml", remove=[f.recipients["web1-host"]])
    return Planted("missing-reader", "secrets/hosts/web1/ssh.yaml", WEB1, "web1-host", "host")


def _missing_reader_in_a_shamir_group(f: Fleet) -> Planted:
    f.rotate("secrets/ca/ca.ini", remove=[f.recipients["db1-host"]])  # group 2 keeps only recovery
    return Planted("missing-reader", "secrets/ca/ca.ini", DB1, "db1-host", "ca")


def _unknown_recipient(f: Fleet) -> Planted:
    stranger = str(pyrage.x25519.Identity.generate().to_public())
    f.rotate("secrets/hosts/db1/db.ini", add=[stranger])
    return Planted("unknown-recipient", "secrets/hosts/db1/db.ini", stranger, None, "host", stranger)


def _key_of_a_retired_host(f: Fleet) -> Planted:
    f.rotate("secrets/hosts/web1/app.env", add=[f.recipients["old-host"]])
    return Planted("retired-recipient", "secrets/hosts/web1/app.env", "host:old", "old-host", "host",
                   f.recipients["old-host"])


def _retired_key(f: Fleet) -> Planted:
    f.rotate("secrets/hosts/db1/tls.key", add=[f.recipients["bob-2025"]])
    return Planted("retired-recipient", "secrets/hosts/db1/tls.key", "key:bob-2025", "bob-2025", "host",
                   f.recipients["bob-2025"])


def _plaintext_yaml(f: Fleet) -> Planted:
    (f.root / "secrets/shared/notes.yaml").write_bytes(plaintext("yaml", "not encrypted"))
    return Planted("plaintext", "secrets/shared/notes.yaml", klass="shared")


def _plaintext_binary(f: Fleet) -> Planted:
    (f.root / "secrets/hosts/db1/id_ed25519").write_bytes(plaintext("binary", "raw key bytes"))
    return Planted("plaintext", "secrets/hosts/db1/id_ed25519", klass="host")


def _uncovered(f: Fleet) -> Planted:
    f.encrypt("secrets/misc/legacy.yaml", plaintext("yaml", "legacy"),
              rules_config(f.recipients_of([("recovery", "alice-2026")])))
    return Planted("uncovered", "secrets/misc/legacy.yaml")


def _wrong_threshold(f: Fleet) -> Planted:
    f.encrypt("secrets/ca/root.yaml", plaintext("yaml", "rewritten"), rules_config(f.recipients_of(CA), 3))
    return Planted("group-mismatch", "secrets/ca/root.yaml", klass="ca")


def _missing_group(f: Fleet) -> Planted:
    f.encrypt("secrets/ca/root.json", plaintext("json", "rewritten"), rules_config(f.recipients_of(CA[:2]), 2))
    return Planted("group-mismatch", "secrets/ca/root.json", klass="ca")


def _stale_config(f: Fleet) -> Planted:
    config = f.root / ".sops.yaml"
    data = bytearray(config.read_bytes())
    at = next(i for i, byte in enumerate(data) if chr(byte).isalpha())
    data[at] ^= 0x20  # flip the case of one letter of the header comment
    config.write_bytes(bytes(data))
    return Planted("stale-config", ".sops.yaml")


def _yaml_without_mac_and_version(f: Fleet) -> Planted:
    target = f.root / "secrets/hosts/web1/ssh.yaml"
    lines = target.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("    mac:", "    version:"))]
    assert len(kept) == len(lines) - 2, "the sops block should have had one mac and one version line"
    target.write_text("".join(kept))
    return Planted("unreadable", "secrets/hosts/web1/ssh.yaml", klass="host")


def _json_age_not_a_list(f: Fleet) -> Planted:
    target = f.root / "secrets/shared/api.json"
    document = json.loads(target.read_text())
    document["sops"]["age"] = "not a list of recipients"
    target.write_text(json.dumps(document, indent="\t") + "\n")
    return Planted("unreadable", "secrets/shared/api.json", klass="shared")


PLANTS: dict[str, Callable[[Fleet], Planted]] = {
    "unexpected-reader": _unexpected_reader,
    "missing-reader": _missing_reader,
    "missing-reader-shamir": _missing_reader_in_a_shamir_group,
    "unknown-recipient": _unknown_recipient,
    "retired-recipient-host": _key_of_a_retired_host,
    "retired-recipient-key": _retired_key,
    "plaintext-yaml": _plaintext_yaml,
    "plaintext-binary": _plaintext_binary,
    "uncovered": _uncovered,
    "group-mismatch-threshold": _wrong_threshold,
    "group-mismatch-groups": _missing_group,
    "stale-config": _stale_config,
    "unreadable-yaml": _yaml_without_mac_and_version,
    "unreadable-json": _json_age_not_a_list,
}


@pytest.mark.parametrize("case", list(PLANTS))
def test_a_planted_problem_is_reported_exactly_once(copy: Fleet, case: str) -> None:
    want = PLANTS[case](copy)
    run = audit(copy)
    others, extra = new_problems(run)
    assert [summary(f) for f in extra] == [], "the planted problem must not add transitive findings"
    assert [summary(f) for f in others] == [summary(vars(want))], f"exactly one {want.kind} finding"
    got = others[0]
    assert (got["kind"], got["path"], got["subject"], got["key"]) == (want.kind, want.path, want.subject, want.key)
    assert class_name(got["class"]) == want.klass
    assert got["severity"] == "error"
    if want.recipient is not None:
        listed = [r for r in files_of(run)[want.path]["recipients"] if r["recipient"] == want.recipient]
        assert len(listed) == 1, f"{want.recipient} should be listed once among the recipients of {want.path}"
        assert listed[0]["key"] == want.key
        if want.key not in RETIRED_KEYS:  # the owner of a retired key: its own test below
            assert listed[0]["owner"] == (KEY_OWNERS[want.key] if want.key else None)
    run.expect_code(1)


def test_the_owner_of_a_retired_key_is_still_its_holder(copy: Fleet) -> None:
    """The finding's subject is key:bob-2025 (SPEC §4), but `owner` says who holds the key: bob."""
    want = _retired_key(copy)
    run = audit(copy)
    assert [summary(f) for f in new_problems(run)[0]] == [summary(vars(want))]
    listed = [r for r in files_of(run)[want.path]["recipients"] if r["recipient"] == want.recipient]
    assert [(r["key"], r["owner"]) for r in listed] == [("bob-2025", BOB)]


def test_a_chain_of_key_bearing_secrets_is_followed(copy: Fleet) -> None:
    copy.write_policy(KEY_BEARING_POLICY, key_bearing_policy({KEY_BEARING: "carol", BOB_KEY_HOLDER: "bob"}))
    copy.generate()
    token = "secrets/home/bob/token.yaml"
    # The chain is real: web1 reads carol's key, carol's key reads bob's, bob's key reads his token.
    carol_key = copy.decrypt(KEY_BEARING, ["web1-host"], extract=f'["{CAROL_KEY_FIELD}"]')
    assert carol_key.returncode == 0, carol_key.stderr
    bob_key = copy.decrypt(BOB_KEY_HOLDER, [], [carol_key.stdout.decode()], extract=f'["{BOB_KEY_FIELD}"]')
    assert bob_key.returncode == 0, bob_key.stderr
    assert copy.decrypt(token, ["web1-host"], [bob_key.stdout.decode()]).returncode == 0
    assert copy.decrypt(token, ["web1-host"]).returncode == SOPS_NO_KEY

    run = audit(copy)
    others, extra = new_problems(run)
    assert [summary(f) for f in others] == []
    chains = {CAROL: [BOB_KEY_HOLDER], ALICE: [KEY_BEARING, BOB_KEY_HOLDER],
              DB1: [KEY_BEARING, BOB_KEY_HOLDER], WEB1: [KEY_BEARING, BOB_KEY_HOLDER]}
    assert sorted((f["path"], f["subject"]) for f in extra) == sorted((token, s) for s in chains)
    for finding in extra:
        via = chains[finding["subject"]]
        assert all(step in finding["message"] for step in via), f"the message must show the chain {via}"
        assert finding["severity"] == "warning"
        if "via" in finding:
            assert finding["via"] == via, finding
    assert {(f["path"], f["subject"]) for f in findings_of(run)} >= TRANSITIVE_DIRECT
    run.expect_code(0)
    audit(copy, "--strict").expect_code(1)


# -- 3. who and access agree with real decryption -----------------------------------------------


def who(fleet: Fleet, path: str) -> dict:
    run = sopsctl(fleet, "who", path)
    run.expect_code(0)
    data = run.data
    assert data.keys() >= WHO_FIELDS, f"who JSON lacks {WHO_FIELDS - data.keys()}"
    assert data["path"] == path
    for group in data["groups"]:
        for entry in group:
            assert {"recipient", "key", "owner"} <= entry.keys(), entry
    for reader in data["readers"]:
        assert {"subject", "keys", "alone"} <= reader.keys(), reader
        assert isinstance(reader["alone"], bool), reader
    assert all(isinstance(c, list) and all(isinstance(s, str) for s in c) for c in data["coalitions"])
    return data


def subject_of(name: str) -> str:
    return KEY_OWNERS[name] or f"key:{name}"


def expected_alone(groups: Sequence[Sequence[str]], threshold: int | None) -> dict[str, bool]:
    """SPEC §4: a subject reads alone when its keys sit in at least `threshold` groups."""
    reached: dict[str, set[int]] = defaultdict(set)
    for index, group in enumerate(groups):
        for name in group:
            reached[subject_of(name)].add(index)
    return {subject: len(indexes) >= (threshold or 1) for subject, indexes in reached.items()}


def check_groups(fleet: Fleet, data: dict, groups: Sequence[Sequence[str]]) -> None:
    got = [{entry["recipient"] for entry in group} for group in data["groups"]]
    assert got == [set(group) for group in fleet.recipients_of(groups)]
    for group, names in zip(data["groups"], groups, strict=True):
        by_recipient = {fleet.recipients[n]: n for n in names}
        for entry in group:
            name = by_recipient[entry["recipient"]]
            assert entry["key"] == name, entry
            assert owner_ok(name, entry["owner"]), entry


def coalitions(data: dict) -> set[frozenset[str]]:
    """The coalitions of two or more; each must be minimal (no member reads alone)."""
    alone = {r["subject"] for r in data["readers"] if r["alone"]}
    found = {frozenset(c) for c in data["coalitions"]}
    for coalition in found:
        if len(coalition) == 1:
            assert coalition <= alone, f"{set(coalition)} cannot read alone, so it is no coalition"
        else:
            assert not coalition & alone, f"{set(coalition)} is not minimal: {set(coalition & alone)} reads alone"
    return {c for c in found if len(c) > 1}


def keys_of(subjects: frozenset[str] | Sequence[str]) -> list[str]:
    return [key for subject in sorted(subjects) for key in SUBJECT_KEYS[subject]]


WHO_SAMPLE = ("secrets/hosts/web1/ssh.yaml", "secrets/hosts/web1/app.env", "secrets/hosts/db1/db.ini",
              "secrets/hosts/db1/tls.key", "secrets/shared/api.json", "secrets/ca/root.yaml", "secrets/ca/root.json")


@pytest.mark.parametrize("path", WHO_SAMPLE)
def test_who_says_alone_exactly_when_sops_decrypts_with_that_subjects_keys(fleet: Fleet, path: str) -> None:
    secret = BY_PATH[path]
    data = who(fleet, path)
    assert data["source"] == "file"
    if secret.threshold is None:
        assert data["threshold"] in (None, 1)
    else:
        assert data["threshold"] == secret.threshold
    check_groups(fleet, data, secret.groups)
    readers = {r["subject"]: r for r in data["readers"]}
    assert {s: r["alone"] for s, r in readers.items()} == expected_alone(secret.groups, secret.threshold)
    for subject, reader in readers.items():
        in_file = {name for group in secret.groups for name in group if subject_of(name) == subject}
        assert set(reader["keys"]) == in_file, reader
    for subject, names in SUBJECT_KEYS.items():
        alone = subject in readers and readers[subject]["alone"]
        result = fleet.decrypt(path, names)
        assert result.returncode == (0 if alone else SOPS_NO_KEY), (
            f"who says {subject} {'can' if alone else 'cannot'} read {path} alone; sops exited "
            f"{result.returncode}: {result.stderr.decode(errors='replace')[-300:]}")


def test_who_lists_the_shamir_coalitions_that_really_decrypt(fleet: Fleet) -> None:
    path = "secrets/ca/root.yaml"
    data = who(fleet, path)
    assert {r["subject"] for r in data["readers"] if r["alone"]} == {"key:recovery"}
    pairs = coalitions(data)
    assert pairs == CA_PAIRS
    for coalition in pairs:
        result = fleet.decrypt(path, keys_of(coalition))
        assert result.returncode == 0, f"coalition {sorted(coalition)}: {result.stderr.decode(errors='replace')}"


def test_two_keys_of_one_group_are_one_share(copy: Fleet) -> None:
    path = "secrets/ca/pair.yaml"
    groups = (("alice-2026", "bob-2026"), ("db1-host",), ("carol-ci",))
    copy.encrypt(path, plaintext("yaml", "pair"), rules_config(copy.recipients_of(groups), 2))
    data = who(copy, path)
    check_groups(copy, data, groups)
    assert {r["subject"]: r["alone"] for r in data["readers"]} == {ALICE: False, BOB: False, DB1: False,
                                                                   CAROL: False}
    pairs = coalitions(data)
    assert pairs == {frozenset(p) for p in ((ALICE, DB1), (ALICE, CAROL), (BOB, DB1), (BOB, CAROL), (DB1, CAROL))}
    for coalition in pairs:
        assert copy.decrypt(path, keys_of(coalition)).returncode == 0, sorted(coalition)
    assert copy.decrypt(path, keys_of([ALICE, BOB])).returncode == SOPS_NO_KEY


def test_who_answers_from_the_policy_for_a_file_not_written_yet(fleet: Fleet) -> None:
    host_file, ca_file = "secrets/hosts/db1/new.yaml", "secrets/ca/new.json"
    data = who(fleet, host_file)
    assert data["source"] == "policy"
    check_groups(fleet, data, HOST_DB1)
    assert {r["subject"]: r["alone"] for r in data["readers"]} == {"key:recovery": True, ALICE: True, DB1: True}
    data = who(fleet, ca_file)
    assert data["source"] == "policy"
    assert data["threshold"] == 2
    check_groups(fleet, data, CA)
    assert {r["subject"] for r in data["readers"] if r["alone"]} == {"key:recovery"}
    assert coalitions(data) == CA_PAIRS
    assert not (fleet.root / host_file).exists() and not (fleet.root / ca_file).exists()


def access(fleet: Fleet, selector: str) -> dict[str, dict]:
    run = sopsctl(fleet, "access", selector)
    run.expect_code(0)
    assert run.data.get("subject") == selector
    entries: dict[str, dict] = {}
    for entry in run.data["files"]:
        assert {"path", "alone", "direct", "via"} <= entry.keys(), entry
        assert entry["path"] not in entries, f"{entry['path']} is listed twice"
        entries[entry["path"]] = entry
    return entries


def test_access_for_bob_is_exactly_what_his_key_decrypts(fleet: Fleet) -> None:
    entries = access(fleet, BOB)
    assert sorted(entries) == ["secrets/home/bob/token.yaml"]
    entry = entries["secrets/home/bob/token.yaml"]
    assert (entry["alone"], entry["direct"], entry["via"]) == (True, True, [])
    for secret in SECRETS:
        readable = secret.path in entries and entries[secret.path]["alone"]
        result = fleet.decrypt(secret.path, SUBJECT_KEYS[BOB])
        assert result.returncode == (0 if readable else SOPS_NO_KEY), secret.path


def test_access_for_web1_includes_what_carols_key_opens(fleet: Fleet) -> None:
    entries = access(fleet, WEB1)
    direct = {"secrets/hosts/web1/ssh.yaml", "secrets/hosts/web1/app.env", "secrets/shared/api.json", KEY_BEARING}
    assert sorted(entries) == sorted(direct | {BOB_KEY_HOLDER})
    for path in direct:
        assert (entries[path]["alone"], entries[path]["direct"], entries[path]["via"]) == (True, True, []), path
    assert (entries[BOB_KEY_HOLDER]["direct"], entries[BOB_KEY_HOLDER]["via"]) == (False, [KEY_BEARING])
    carol_key = fleet.decrypt(KEY_BEARING, SUBJECT_KEYS[WEB1], extract=f'["{CAROL_KEY_FIELD}"]')
    assert carol_key.returncode == 0, carol_key.stderr
    for secret in SECRETS:
        own = fleet.decrypt(secret.path, SUBJECT_KEYS[WEB1]).returncode
        assert own == (0 if secret.path in direct else SOPS_NO_KEY), secret.path
        if secret.path not in direct:  # with everything web1 can get hold of
            result = fleet.decrypt(secret.path, SUBJECT_KEYS[WEB1], [carol_key.stdout.decode()])
            assert result.returncode == (0 if secret.path in entries else SOPS_NO_KEY), secret.path
