"""Clan trees: reading key.json, groups and links (real and flattened), judging secrets by their links, clan keys in the policy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl import ops
from sopsctl.audit import KeyIndex
from sopsctl.clan import find_clan_root, read_key_json, read_tree
from sopsctl.clanaudit import (
    ClanGroup,
    ClanSecret,
    ClanTree,
    grants,
    lint_clan,
    rekey_rules,
    secret_findings,
    tree_findings,
)
from sopsctl.errors import InputError, PolicyError
from sopsctl.model import FileKey, SopsMetadata
from sopsctl.policy import load_policy

from .policy_helpers import AGE, SMALL_POLICY

# Throw-away recipients for clan users and machines (private halves discarded).
M1 = "age1hjqcsaghmkyw7gatvd8vyenavg965djsnczsxr479gvk2l42wfzql85sq6"
M2 = "age1r8xxneu8eaj4xk3dgapltfd4t68qhate4klmhx0qtcdph8hnpppszxksua"
STRAY = "age1hf5mc673hn0cgu2m349lv7lwl2qch8f3mxzq26z3k3cgvvltr9fs8efdac"


def meta(*recipients: str) -> SopsMetadata:
    return SopsMetadata((tuple(FileKey("age", r) for r in recipients),))


def policy_with(extra_keys: str = "", hosts: str = "", settings_text: str = "") -> str:
    text = SMALL_POLICY
    if extra_keys:
        text = text.replace("keys:\n", "keys:\n" + extra_keys, 1)
    if hosts:
        text = text.replace("hosts:\n", "hosts:\n" + hosts, 1)
    if settings_text:
        text = text.replace("settings:\n", "settings:\n" + settings_text, 1)
    return text


POLICY = load_policy([("p.yaml", policy_with(
    f"  m1: {{age: {M1}}}\n  m2: {{age: {M2}, status: retired}}\n",
    "  m1: {platform: nixos, keys: [m1]}\n  m2: {platform: nixos, keys: [m2]}\n").encode())])
INDEX = KeyIndex.build(POLICY)
TREE = ClanTree(
    "",
    users={"alice": (AGE["alice"],), "bob": (AGE["bob"],), "carol": (AGE["carol"],)},
    machines={"m1": (M1,), "m2": (M2,)},
    groups={"admins": ClanGroup(users=("alice", "ghost")), "fleet": ClanGroup(machines=("m1",))},
)


def drift(findings) -> set[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    return {(f.kind, f.subject) for f in findings}


def judge(secret: ClanSecret, *recipients: str, tree: ClanTree = TREE):  # type: ignore[no-untyped-def]
    from sopsctl.clanaudit import clan_names

    return secret_findings(tree, secret, meta(*recipients), INDEX, clan_names(tree))


# -- what links grant ---------------------------------------------------------------------------------


def test_users_machines_and_group_members_are_granted_and_dangling_links_are_named() -> None:
    secret = ClanSecret("sops/secrets/db/secret", users=("bob", "zed"), machines=("m1",), groups=("admins", "gone"))
    granted = grants(TREE, secret)
    assert set(granted.recipients) == {AGE["bob"], M1, AGE["alice"]}
    assert granted.recipients[AGE["alice"]] == ("group admins (user alice)",)
    assert granted.dangling == ("users/zed", "groups/gone")


def test_an_in_sync_secret_has_no_finding() -> None:
    secret = ClanSecret("sops/secrets/db/secret", users=("alice",), groups=("fleet",))
    assert judge(secret, AGE["alice"], M1) == []
    assert judge(secret, M1, AGE["alice"]) == []  # order does not matter


def test_each_kind_of_drift_gives_one_finding_with_the_policy_subject() -> None:
    secret = ClanSecret("vars/shared/gen/file/secret", users=("alice", "bob"), machines=("m1",))
    assert drift(judge(secret, AGE["alice"], M1)) == {("missing-reader", "identity:bob")}
    assert drift(judge(secret, AGE["alice"], AGE["bob"], M1, AGE["recovery"])) == {
        ("unexpected-reader", "key:recovery")}
    assert drift(judge(secret, AGE["alice"], AGE["bob"], M1, STRAY)) == {("unknown-recipient", STRAY)}
    # carol is a clan user the policy does not know: named by recipient, but known to clan, so unexpected
    assert drift(judge(secret, AGE["alice"], AGE["bob"], M1, AGE["carol"])) == {
        ("unexpected-reader", AGE["carol"])}


def test_a_linked_retired_host_is_not_expected_and_only_retired_when_present() -> None:
    secret = ClanSecret("vars/shared/gen/file/secret", users=("alice",), machines=("m2",))
    assert judge(secret, AGE["alice"]) == []  # retirement beats the link: nothing missing
    findings = judge(secret, AGE["alice"], M2)
    assert drift(findings) == {("retired-recipient", "key:m2")}


def test_a_var_of_a_machine_clan_no_longer_has_is_orphaned_and_nothing_else() -> None:
    secret = ClanSecret("vars/per-machine/m9/gen/file/secret", users=("alice",), machines=("m9",), machine="m9")
    findings = judge(secret, STRAY)
    assert [(f.kind, f.severity) for f in findings] == [("orphaned", "warning")]
    assert "m9" in findings[0].message


def test_a_dangling_user_link_is_orphaned_not_missing() -> None:
    secret = ClanSecret("sops/secrets/db/secret", users=("alice", "zed"))
    findings = judge(secret, AGE["alice"])
    assert [(f.kind, f.subject) for f in findings] == [("orphaned", None)]
    assert "users/zed" in findings[0].message and findings[0].klass == "clan"


def test_a_group_link_to_a_user_gone_is_reported_once_for_the_group() -> None:
    findings = tree_findings(TREE)
    assert [(f.kind, f.path) for f in findings] == [("orphaned", "sops/groups/admins/users/ghost")]


def test_rekey_rules_give_the_links_recipients_without_retired_keys_and_refuse_orphans() -> None:
    tree = ClanTree("", TREE.users, TREE.machines, TREE.groups, (
        ClanSecret("sops/secrets/db/secret", users=("bob",), machines=("m1", "m2")),
        ClanSecret("vars/per-machine/m9/g/f/secret", machine="m9"),
    ))
    rules = rekey_rules(tree, INDEX)
    rule = rules["sops/secrets/db/secret"]
    assert not isinstance(rule, str)
    assert [(k.recipient, k.name) for k in rule.key_groups[0]] == [(AGE["bob"], "bob"), (M1, "m1")]
    assert isinstance(rules["vars/per-machine/m9/g/f/secret"], str)


NAMES = ["alice", "bob", "carol"]
RECIPIENTS = [AGE["alice"], AGE["bob"], AGE["carol"], M1, M2, STRAY, AGE["recovery"]]


@settings(max_examples=200, deadline=None)
@given(users=st.lists(st.sampled_from([*NAMES, "zed"]), unique=True),
       machines=st.lists(st.sampled_from(["m1", "m2"]), unique=True),
       groups=st.lists(st.sampled_from(["admins", "fleet"]), unique=True),
       present=st.lists(st.sampled_from(RECIPIENTS), unique=True, min_size=1))
def test_findings_are_the_difference_between_links_and_recipients_and_rekey_closes_it(
        users: list[str], machines: list[str], groups: list[str], present: list[str]) -> None:
    secret = ClanSecret("sops/secrets/x/secret", tuple(users), tuple(machines), tuple(groups))
    tree = ClanTree("", TREE.users, TREE.machines, TREE.groups, (secret,))
    granted = set(grants(tree, secret).recipients)
    expected = {r for r in granted if INDEX.key_of(r) not in INDEX.retired}
    findings = judge(secret, *present, tree=tree)
    missing = {f.subject for f in findings if f.kind == "missing-reader"}
    extra = {f.subject for f in findings if f.kind in ("unexpected-reader", "unknown-recipient", "retired-recipient")}
    assert missing == {INDEX.subject(r) for r in expected - set(present)}
    assert extra == {INDEX.subject(r) for r in set(present) - expected}
    assert sum(f.kind == "orphaned" for f in findings) == ("zed" in users)
    # one cause, one finding: no subject is both missing and extra
    assert not missing & extra
    # what rekey writes (the rule's recipients) leaves no drift
    rule = rekey_rules(tree, INDEX)[secret.path]
    assert not isinstance(rule, str)
    after = judge(secret, *[k.recipient for k in rule.key_groups[0]], tree=tree) if rule.key_groups[0] else []
    assert {f.kind for f in after} <= {"orphaned"}


# -- reading a tree from disk ---------------------------------------------------------------------------


def test_key_json_is_one_object_or_a_list_of_age_keys() -> None:
    assert read_key_json(b'{"publickey": " age1x ", "type": "age"}', "k") == ("age1x",)
    assert read_key_json(json.dumps([{"publickey": "age1a", "type": "age"}, {"publickey": "F00", "type": "pgp"},
                                     {"publickey": "age1b"}]).encode(), "k") == ("age1a", "age1b")
    for bad in (b"{", b"[]", b'{"type": "age"}', b'[{"publickey": "F00", "type": "pgp"}]', b'"age1x"'):
        with pytest.raises(ValueError, match="^k: "):
            read_key_json(bad, "k")


def test_the_real_fleet_tree_with_flattened_links(real_fleet: Path) -> None:
    """The fixture's links were flattened into small files holding the target: read like symlinks."""
    tree = read_tree(real_fleet / "head", None)
    assert tree is not None and tree.root == "" and tree.problems == ()
    assert set(tree.users) == {"crs58", "cameron", "raquel", "janettesmith", "christophersmith"}
    assert tree.users["crs58"] == tree.users["cameron"]  # one person, two clan users, one key
    assert len(tree.machines) == 9 and len(tree.secrets) == 13
    by_path = tree.by_path()
    tara = by_path["vars/shared/user-password-tara/user-password-hash/secret"]
    assert (tara.users, tara.machines, tara.machine) == (("cameron",), ("galena", "scheelite"), None)
    zfs = by_path["vars/per-machine/electrum/zfs/key/secret"]
    assert (zfs.users, zfs.machines, zfs.machine, zfs.kind) == (("crs58",), (), "electrum", "var")
    assert by_path["sops/secrets/tf-passphrase/secret"].kind == "secret"


def build(root: Path) -> Path:
    """A small clan tree with real relative symlinks, as clan writes it."""
    for kind, name, recipient in (("users", "alice", AGE["alice"]), ("users", "bob", AGE["bob"]),
                                  ("machines", "m1", M1)):
        (root / "sops" / kind / name).mkdir(parents=True)
        (root / "sops" / kind / name / "key.json").write_text(json.dumps({"publickey": recipient, "type": "age"}))
    (root / "sops" / "groups" / "admins" / "users").mkdir(parents=True)
    os.symlink("../../../users/alice", root / "sops" / "groups" / "admins" / "users" / "alice")
    secret = root / "sops" / "secrets" / "db"
    (secret / "users").mkdir(parents=True)
    (secret / "groups").mkdir()
    (secret / "secret").write_text("{}")
    os.symlink("../../../users/bob", secret / "users" / "bob")
    os.symlink("../../../groups/admins", secret / "groups" / "admins")
    var = root / "vars" / "per-machine" / "m1" / "users" / "password"  # a generator named like a links folder
    (var / "machines").mkdir(parents=True)
    (var / "secret").write_text("{}")
    (var / "value").write_text("public")
    os.symlink("../../../../../../sops/machines/m1", var / "machines" / "m1")
    os.symlink(str(root.parent), root / "vars" / "escape")  # a link out of the tree is never walked
    return root


def test_a_tree_with_real_symlinks(tmp_path: Path) -> None:
    tree = read_tree(build(tmp_path / "repo"), None)
    assert tree is not None
    assert tree.groups["admins"].users == ("alice",)
    db, var = tree.by_path()["sops/secrets/db/secret"], tree.by_path()["vars/per-machine/m1/users/password/secret"]
    assert (db.users, db.groups) == (("bob",), ("admins",))
    assert (var.machines, var.machine) == (("m1",), "m1")
    assert [s.path for s in tree.secrets] == [db.path, var.path]
    assert set(grants(tree, db).recipients) == {AGE["bob"], AGE["alice"]}


def test_the_clan_root_is_found_on_its_own_or_where_settings_say(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    assert find_clan_root(repo, None) is None
    build(repo / "infra")
    assert find_clan_root(repo, None) is None  # not at the root: only settings.clan_root finds it
    assert find_clan_root(repo, "infra") == (repo / "infra").resolve()
    tree = read_tree(repo, "infra")
    assert tree is not None and tree.root == "infra" and tree.secrets[0].path.startswith("infra/sops/")
    with pytest.raises(InputError, match="no such folder"):
        find_clan_root(repo, "missing")


def test_an_unreadable_key_json_is_an_unreadable_finding(tmp_path: Path) -> None:
    root = build(tmp_path / "repo")
    (root / "sops" / "users" / "bob" / "key.json").write_text("{not json")
    tree = read_tree(root, None)
    assert tree is not None and "bob" not in tree.users
    assert [(f.kind, f.path) for f in tree_findings(tree)] == [("unreadable", "sops/users/bob/key.json")]


# -- clan keys in the policy --------------------------------------------------------------------------------


def repo_with(tmp_path: Path, policy: str) -> ops.Repo:
    root = build(tmp_path / "repo")
    (root / "policies").mkdir()
    (root / "policies" / "p.yaml").write_text(policy)
    return ops.open_repo(root, root)


def test_a_key_may_take_its_recipient_from_clan(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, policy_with("  m1: {clan_machine: m1}\n  carol: {clan_user: carol}\n",
                                           "  m1: {platform: nixos, keys: [m1]}\n"))
    (repo.root / "sops" / "users" / "carol").mkdir()
    (repo.root / "sops" / "users" / "carol" / "key.json").write_text(json.dumps([{"publickey": AGE["carol"]}]))
    policy = ops.load(repo)
    assert policy.keys["m1"].age == M1 and policy.keys["m1"].clan_machine == "m1"
    assert policy.keys["carol"].age == AGE["carol"]


def test_a_clan_key_clan_does_not_have_is_a_policy_error_at_its_line(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, policy_with("  m7: {clan_machine: m7}\n"))
    with pytest.raises(PolicyError, match=r"p\.yaml:\d+.*key 'm7': clan has no machine 'm7'"):
        ops.load(repo)


def test_a_key_cannot_name_both_a_clan_user_and_machine() -> None:
    with pytest.raises(PolicyError, match="clan_user or clan_machine, not both"):
        load_policy([("p.yaml", policy_with("  x: {clan_user: a, clan_machine: b}\n").encode())])


def test_settings_clan_root_stays_inside_the_repository() -> None:
    for bad in ("../elsewhere", "/abs"):
        with pytest.raises(PolicyError, match="clan_root must be a folder inside the repository"):
            load_policy([("p.yaml", policy_with(settings_text=f"  clan_root: {bad}\n").encode())])


def test_lint_names_a_stale_key_and_clan_entities_without_owner(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, policy_with(f"  m1: {{age: {M2}, clan_machine: m1}}\n",
                                           "  m1: {platform: nixos, keys: [m1]}\n"))
    policy = ops.load(repo)
    tree = ops.clan_tree(repo, policy)
    problems = lint_clan(policy, tree, KeyIndex.build(policy))
    messages = [(p.severity, p.message) for p in problems]
    assert any(s == "error" and "key 'm1' says " + M2 in m and "stale" in m for s, m in messages)
    # m1's clan key is not the policy's (stale), so clan machine m1 has no owner either; alice and bob do
    assert sorted(m.split("'")[1] for s, m in messages if s == "warning") == ["m1"]
    assert any(p.code == "clan" for p in ops.lint(repo))


def test_secrets_dirs_never_hand_clan_files_to_the_sops_yaml_side(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, policy_with(settings_text="  secrets_dirs: [sops, vars, secrets]\n"))
    policy = ops.load(repo)
    listed = ops.secrets_files(repo, policy)
    assert not [p for p in listed if p.startswith(("sops/", "vars/"))]
    assert ops.selected_files(repo, policy, [repo.root / "sops"]) == ["sops/secrets/db/secret"]
    shutil.rmtree(repo.root / "sops")
    assert ops.clan_tree(repo, ops.load(repo)) is None


def test_retiring_a_host_lists_the_clan_vars_it_stops_reading(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from sopsctl.cli import main

    repo = repo_with(tmp_path, policy_with("  m1: {clan_machine: m1}\n", "  m1: {platform: nixos, keys: [m1]}\n"))
    assert main(["generate", "--root", str(repo.root)]) == 0
    capsys.readouterr()
    assert main(["host", "retire", "m1", "--dry-run", "--root", str(repo.root)]) == 0
    out = capsys.readouterr().out
    assert "vars/per-machine/m1/users/password/secret: loses host:m1" in out
    assert "sops/secrets/db/secret" not in out  # its links never granted m1


def test_who_on_a_clan_secret_not_made_yet_says_links_decide(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sopsctl.cli import main

    repo = repo_with(tmp_path, policy_with())
    monkeypatch.chdir(repo.root)
    assert main(["who", "sops/secrets/new/secret"]) == 3
    assert "the links beside a secret decide who reads it" in capsys.readouterr().err


def test_import_names_clan_keys_and_lint_then_sees_clan_move_on(real_fleet: Path, tmp_path: Path, capsys,  # type: ignore[no-untyped-def]
                                                                 monkeypatch) -> None:
    from sopsctl.cli import main

    root = tmp_path / "fleet"
    shutil.copytree(real_fleet / "head", root)
    for path in [root, *root.rglob("*")]:  # the shared fixture is read-only
        path.chmod(path.stat().st_mode | 0o200)
    monkeypatch.chdir(root)
    (root / "policies").mkdir()
    assert main(["import", "-o", "policies/fleet.yaml"]) == 0
    assert "key 'cinnabar': clan machine cinnabar's key" in capsys.readouterr().err
    policy = ops.load(ops.open_repo(root))
    assert policy.keys["cinnabar"].clan_machine == "cinnabar"
    assert policy.keys["admin-user"].clan_user is None  # crs58 and cameron share it: neither is named
    assert main(["lint"]) == 1  # an imported policy has lockout risks; nothing about clan keys being stale
    assert "stale" not in capsys.readouterr().out
    # clan gives cinnabar a new machine key: the policy's copy is now stale, and lint says so
    (root / "sops" / "machines" / "cinnabar" / "key.json").write_text(json.dumps({"publickey": M1, "type": "age"}))
    assert main(["lint"]) == 1
    assert f"key 'cinnabar' says age1j3wqa539kjrdtthzm8qep0f2llsycs5wz8g0v7596jrkj60qjdnq4acjaj but clan's machine " \
           f"'cinnabar' has {M1}" in capsys.readouterr().out


def test_clan_folders_that_are_links_out_of_the_tree_are_not_read(tmp_path: Path) -> None:
    outside = build(tmp_path / "outside")
    root = tmp_path / "repo"
    (root / "sops").mkdir(parents=True)
    for name in ("users", "machines", "groups", "secrets"):
        os.symlink(outside / "sops" / name, root / "sops" / name)
    os.symlink(outside / "vars", root / "vars")
    tree = read_tree(root, None)
    assert tree is not None
    assert (dict(tree.users), dict(tree.machines), dict(tree.groups), tree.secrets) == ({}, {}, {}, ())


def test_diff_between_policies_names_the_clan_vars_a_retirement_moves(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from sopsctl.cli import main

    before = policy_with("  m1: {clan_machine: m1}\n", "  m1: {platform: nixos, keys: [m1]}\n")
    repo = repo_with(tmp_path, before)
    (tmp_path / "before.yaml").write_text(before)
    (repo.root / "policies" / "p.yaml").write_text(before.replace("keys: [m1]}", "keys: [m1], status: retired}"))
    assert main(["diff", "--against", str(tmp_path / "before.yaml"), "--root", str(repo.root)]) == 0
    out = capsys.readouterr().out
    assert "vars/per-machine/m1/users/password/secret" in out and "host:m1" in out
