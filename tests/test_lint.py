"""Policy lint: lockout risk, exact unreachability for globs, overlaps, unused keys and vacuous selectors."""

from __future__ import annotations

import json
from pathlib import Path

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
