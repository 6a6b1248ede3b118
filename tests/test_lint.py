"""Policy lint: lockout risk, exact unreachability for globs, overlaps, unused keys and vacuous selectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sopsctl.cli import main
from sopsctl.engine import build_rules
from sopsctl.lint import lint_policy
from sopsctl.policy import load_policy

from .policy_helpers import SMALL_POLICY, policy_sources


def _codes(text: str) -> dict[str, list[str]]:
    policy = load_policy(policy_sources(text))
    found: dict[str, list[str]] = {}
    for problem in lint_policy(policy, build_rules(policy)):
        found.setdefault(problem.code, []).append(problem.message)
    return found


def _add_class(text: str, body: str) -> str:
    return text + body


def test_the_small_policy_is_clean() -> None:
    assert _codes(SMALL_POLICY) == {}


def test_a_class_covered_by_earlier_globs_together_is_unreachable() -> None:
    text = SMALL_POLICY.replace("  - name: shared\n", (
        "  - name: top\n    path: secrets/split/*\n    readers: [role:admin]\n"
        "  - name: deeper\n    path: secrets/split/*/**\n    readers: [role:admin]\n"
        "  - name: split\n    path: secrets/split/**\n    readers: [role:admin]\n"
        "  - name: shared\n"))
    codes = _codes(text)
    assert list(codes) == ["unreachable"]
    assert "class split can never apply" in codes["unreachable"][0]
    assert "top" in codes["unreachable"][0] and "deeper" in codes["unreachable"][0]


def test_a_class_only_partly_covered_is_reachable() -> None:
    text = SMALL_POLICY.replace("  - name: shared\n", (
        "  - name: yaml-only\n    path: secrets/split/*.yaml\n    readers: [role:admin]\n"
        "  - name: split\n    path: secrets/split/**\n    readers: [role:admin]\n"
        "  - name: shared\n"))
    assert "unreachable" not in _codes(text)


def test_unanchored_path_regex_shadows_later_globs() -> None:
    text = SMALL_POLICY.replace("  - name: home\n", (
        "  - name: everything-yaml\n    path_regex: \\.yaml$\n    readers: [role:admin]\n"
        "  - name: home\n"))
    codes = _codes(text)
    assert any("class shared can never apply" in m for m in codes.get("unreachable", [])) is False
    # secrets/shared.yaml is taken by the regex, but secrets/services/** still reaches `shared`
    text2 = text.replace("paths: [secrets/shared.yaml, secrets/services/**]", "paths: [secrets/shared.yaml]")
    assert any("class shared can never apply" in m for m in _codes(text2)["unreachable"])


def test_overlapping_instances_of_one_class_warn_with_an_example_path() -> None:
    text = SMALL_POLICY.replace("path: secrets/home/{account}/**",
                                "paths: ['secrets/home/{account}/**', 'secrets/common/{account}*.yaml']")
    codes = _codes(text)
    assert list(codes) == ["overlap"]
    (overlap,) = codes["overlap"]
    assert "(account=al, identity=alice)" in overlap and "(account=alice, identity=alice)" in overlap
    assert "'secrets/common/alice" in overlap


def test_lockout_risk_when_no_admin_and_no_always_reader_can_read_alone() -> None:
    text = SMALL_POLICY.replace("always_readers: [key:recovery]", "always_readers: []") + (
        "  - name: split\n    path: secrets/split/**\n"
        "    key_groups: [[role:admin], [host:db1]]\n    threshold: 2\n"
        "  - name: bob-only\n    path: secrets/bob/**\n    readers: [identity:bob]\n")
    lockouts = _codes(text)["lockout-risk"]
    assert len(lockouts) == 3  # split, bob-only and home for bob
    assert any("class split" in m for m in lockouts) and any("class bob-only" in m for m in lockouts)


def test_unused_keys_identities_without_keys_and_vacuous_selectors_warn() -> None:
    text = SMALL_POLICY.replace("keys:\n", "keys:\n  spare: age1lx2exccsuyt8h63wyujktv3nqhctct0vky7yyqats57g44jcfsfqg359f7x\n", 1)
    text = SMALL_POLICY.replace("readers: [role:admin, hosts]", "readers: [role:admin, role:wizard, platform:bsd]")
    text = text.replace("bob: {role: user, keys: [bob]}", "bob: {role: user, keys: []}")
    codes = _codes(text)
    assert codes["unknown-role"] and codes["unknown-platform"]
    assert any("identity 'bob' has no active key" in m for m in codes["no-key"])
    assert any("key 'bob'" in m for m in codes["unused-key"])


def test_lint_cli_reports_load_problems_as_findings_exit_1_and_json(tmp_path: Path, capsys) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.yaml").write_text(SMALL_POLICY.replace("keys: [bob]", "keys: [bobby]"))
    assert main(["lint", "--root", str(tmp_path)]) == 1
    assert "policies/a.yaml:13: error: identity 'bob' lists key 'bobby'" in capsys.readouterr().out
    assert main(["lint", "--root", str(tmp_path), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["problems"][0] | {"message": None} == {
        "code": "reference", "severity": "error", "file": "policies/a.yaml", "line": 13, "message": None}


def test_lint_strict_fails_on_warnings_and_sees_nested_configs(tmp_path: Path, capsys) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.yaml").write_text(SMALL_POLICY)
    (tmp_path / "secrets" / "team").mkdir(parents=True)
    (tmp_path / "secrets" / "team" / ".sops.yaml").write_text("creation_rules: []\n")
    assert main(["lint", "--root", str(tmp_path)]) == 0
    assert "secrets/team/.sops.yaml: a nested .sops.yaml" in capsys.readouterr().out
    assert main(["lint", "--root", str(tmp_path), "--strict"]) == 1


# -- the schema check: every violation of every file in one run, each at its line -------------------

BROKEN_KEYS = """\
version: "1"
keys:
  recovery:
    note: no recipient
  bad name: age1x
  ops: {pgp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4, age: age1x}
  clan: {clan_user: alice, clan_machine: cinnabar}
identities:
  alice: {role: admin, accounts: ["al ice"], keys: true, email: a@example.org}
"""
BROKEN_CLASSES = """\
settings:
  colour: blue
  host_key_form: pgp
hosts:
  web: {users: [alice]}
classes:
  - name: home
    path: secrets/home/**
    paths: [secrets/other/**]
    readers: ["person:alice", 5]
    threshold: 2
  - path: secrets/nameless/**
  - home
"""
EXPECTED_VIOLATIONS = [
    "policies/a.yaml:1: error: version must be an integer, not a string [schema]",
    "policies/a.yaml:3: error: keys.recovery: needs one of age, ssh, pgp, clan_user, clan_machine [schema]",
    "policies/a.yaml:5: error: keys: name 'bad name' may only use letters, digits, '.', '_' and '-', "
    "starting with a letter or digit [schema]",
    "policies/a.yaml:6: error: keys.ops: age and pgp cannot be given together (choose one) [schema]",
    "policies/a.yaml:7: error: keys.clan: clan_machine and clan_user cannot be given together (choose one) [schema]",
    "policies/a.yaml:9: error: identities.alice.accounts[0]: 'al ice' may only use letters, digits, '.', '_' "
    "and '-', starting with a letter or digit [schema]",
    "policies/a.yaml:9: error: identities.alice.keys must be a string or a list, not a boolean [schema]",
    "policies/a.yaml:9: error: identities.alice: unknown field 'email' (expected one of: role, accounts, keys, "
    "status, note) [schema]",
    "policies/b.yaml:2: error: settings: unknown field 'colour' (expected one of: secrets_dirs, always_readers, "
    "fallback, host_key_form, ignore, clan_root) [schema]",
    "policies/b.yaml:3: error: settings.host_key_form must be one of: age, ssh (not 'pgp') [schema]",
    "policies/b.yaml:5: error: hosts.web.users must be a mapping, not a list [schema]",
    "policies/b.yaml:7: error: classes[0]: path and paths cannot be given together (choose one) [schema]",
    "policies/b.yaml:10: error: classes[0].readers[0]: 'person:alice' is not a selector (expected identity:N, "
    "host:N, key:N, group:N, role:R, platform:P, admins-of:HOST, users-of:HOST, primary-of:HOST, "
    "hosts-of:IDENTITY, or hosts (all active hosts)) [schema]",
    "policies/b.yaml:10: error: classes[0].readers[1] must be a string, not 5 [schema]",
    "policies/b.yaml:11: error: classes[0]: 'threshold' needs 'key_groups' [schema]",
    "policies/b.yaml:12: error: classes[1]: missing 'name' [schema]",
    "policies/b.yaml:12: error: classes[1]: needs one of readers, key_groups [schema]",
    "policies/b.yaml:13: error: classes[2] must be a mapping, not a string [schema]",
]


def _broken_repo(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.yaml").write_text(BROKEN_KEYS)
    (tmp_path / "policies" / "b.yaml").write_text(BROKEN_CLASSES)
    return tmp_path


def test_lint_reports_every_schema_violation_of_every_file_with_its_line(tmp_path: Path, capsys) -> None:
    root = _broken_repo(tmp_path)
    assert main(["lint", "--root", str(root)]) == 1  # findings, as for any policy that does not load
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    schema_lines = [line for line in lines if line.endswith("[schema]")]
    assert schema_lines == EXPECTED_VIOLATIONS
    assert lines[-1] == f"{len(lines) - 1} error(s), 0 warning(s)"
    assert captured.err == ""  # no traceback, nothing else


def test_lint_json_carries_every_schema_violation(tmp_path: Path, capsys) -> None:
    root = _broken_repo(tmp_path)
    assert main(["lint", "--root", str(root), "--format", "json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    schema = [(p["file"], p["line"]) for p in problems if p["code"] == "schema"]
    expected = [(line.split(":")[0], int(line.split(":")[1])) for line in EXPECTED_VIOLATIONS]
    assert schema == expected


def test_lint_checks_a_single_policy_file_and_says_each_mistake_once(tmp_path: Path, capsys) -> None:
    # the loader refuses this key at its first error; the schema check names the same line: one report
    text = SMALL_POLICY.replace("  bob: {age: ", "  bob: {colour: blue, age: ")
    (tmp_path / "policy.yaml").write_text(text)
    (tmp_path / ".sops.yaml").write_text("")
    assert main(["lint", "--root", str(tmp_path), "--policy", str(tmp_path / "policy.yaml")]) == 1
    out = capsys.readouterr().out
    assert out.count("policy.yaml:7: ") == 1, out
    assert "policy.yaml:7: error: keys.bob: unknown field 'colour'" in out


def test_lint_keeps_loader_findings_the_schema_cannot_see(tmp_path: Path, capsys) -> None:
    text = SMALL_POLICY.replace("keys: [bob]", "keys: [bobby]").replace("version: 1", "version: 2")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.yaml").write_text(text)
    assert main(["lint", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "policies/a.yaml:1: error: version must be 1, not 2 [schema]" in out
    assert "policies/a.yaml:13: error: identity 'bob' lists key 'bobby'" in out


@pytest.mark.parametrize("text", [
    "a: &a [*a, *a]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: &d [*c, *c]\ne: [*d, *d, *d]\n",
    "keys: &k\n  x: *k\n",
    "keys: " + "[" * 400 + "]" * 400 + "\n",
    "keys: !!binary aGVsbG8=\nhosts: !custom {a: 1}\n",
    "version: 1\n\x00",
    "[1, 2]\n",
    "? [a, b]\n: c\n<<: {d: 1}\n",
])
def test_lint_survives_hostile_yaml_without_a_traceback(tmp_path: Path, capsys, text: str) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.yaml").write_text(text)
    assert main(["lint", "--root", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "internal error" not in captured.err and "Traceback" not in captured.err
    assert "policies/a.yaml:" in captured.out


def test_jsonschema_is_imported_by_lint_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    probe = ("import sys\nfrom sopsctl.cli import main\n"
             "for args in (['--help'], ['generate', '--root', sys.argv[1], '--policy', sys.argv[2]],"
             " ['generate', '--check', '--root', sys.argv[1], '--policy', sys.argv[2]], ['schema']):\n"
             "    main(args)\n"
             "    assert 'jsonschema' not in sys.modules, args\n"
             "main(['lint', '--root', sys.argv[1], '--policy', sys.argv[2]])\n"
             "assert 'jsonschema' in sys.modules\n")
    subprocess.run([sys.executable, "-c", probe, str(tmp_path), str(root / "policies")],
                   check=True, capture_output=True, cwd=tmp_path)
