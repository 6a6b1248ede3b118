"""`sopsctl diff`: access changes as a reviewer would write them, checked against the real fleet's history."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sopsctl.cli import main

FLEET_POLICY = Path(__file__).parent / "fixtures" / "real-fleet-policy.yaml"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fleet(real_fleet: Path, tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    shutil.copytree(real_fleet / "head", root, symlinks=True)
    (root / "policies").mkdir()
    shutil.copy(FLEET_POLICY, root / "policies" / "fleet.yaml")
    return root


def _history(real_fleet: Path) -> dict[str, Path]:
    return {p.name[:2]: p for p in sorted((real_fleet / "history" / "sops-yaml").glob("*.yaml"))}


def _diff(root: Path, old: Path, new: Path, capsys) -> dict:
    shutil.copy(new, root / ".sops.yaml")
    assert main(["diff", "--root", str(root), "--against", str(old), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    return {s["subject"]: (set(s["gains"]), set(s["loses"])) for s in report["subjects"]} | {
        "keys": (set(report["keys_added"]), set(report["keys_removed"]))}


@pytest.mark.parametrize(("old", "new", "subject", "gains", "loses"), [
    # 2025-11-27: janettesmith joins the shared rule and gets her own home-manager rule
    ("08", "09", "identity:janettesmith",
     {"secrets/shared.yaml", "secrets/test.yaml", "secrets/home-manager/users/janettesmith/secrets.yaml"}, set()),
    ("09", "10", "identity:christophersmith",
     {"secrets/shared.yaml", "secrets/test.yaml", "secrets/home-manager/users/christophersmith/secrets.yaml"},
     set()),
    # 2026-01-21: the clusters rule drops the fallback's host keys, then gains the CI key
    ("12", "13", "host:stibnite", set(), {"secrets/clusters/local/argocd-repo-credentials.enc.yaml",
                                         "secrets/clusters/local/step-ca-keys.enc.yaml",
                                         "secrets/clusters/local/step-ca-sopssecret.enc.yaml"}),
    ("13", "14", "identity:ci", {"secrets/clusters/local/argocd-repo-credentials.enc.yaml",
                                 "secrets/clusters/local/step-ca-keys.enc.yaml",
                                 "secrets/clusters/local/step-ca-sopssecret.enc.yaml"}, set()),
    # 2026-07-29: pyrite is added to the bridge rule
    ("18", "19", "key:pyrite", {"secrets/bridge/crs58-age-key.enc", "secrets/bridge/tara-age-key.enc"}, set()),
])
def test_history_diffs_name_who_gains_and_loses_what(fleet: Path, real_fleet: Path, capsys, old, new, subject,
                                                     gains, loses) -> None:
    history = _history(real_fleet)
    changes = _diff(fleet, history[old], history[new], capsys)
    assert changes[subject] == (gains, loses)


def test_history_diff_names_keys_that_appear_and_an_unchanged_step_is_empty(fleet: Path, real_fleet: Path,
                                                                           capsys) -> None:
    history = _history(real_fleet)
    assert _diff(fleet, history["18"], history["19"], capsys)["keys"] == ({"key:pyrite"}, set())
    assert _diff(fleet, history["11"], history["12"], capsys) == {"keys": (set(), set())}
    shutil.copy(history["09"], fleet / ".sops.yaml")
    assert main(["diff", "--root", str(fleet), "--against", str(history["08"])]) == 0
    assert "identity:janettesmith gains secrets/shared.yaml" in capsys.readouterr().out
    assert main(["diff", "--root", str(fleet), "--against", str(history["08"]), "--exit-code"]) == 1


def test_policy_against_a_git_revision_and_generate_check(tmp_path: Path, capsys) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "policies", root / "policies")
    (root / "secrets").mkdir()
    (root / "secrets" / "shared.yaml").write_text("a: b\n")
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    assert main(["generate", "--root", str(root)]) == 0
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
    classes = root / "policies" / "classes.yaml"
    classes.write_text(classes.read_text().replace("readers: [role:admin, hosts]",
                                                   'readers: [role:admin, hosts, "identity:raquel"]'))
    capsys.readouterr()
    assert main(["diff", "--root", str(root), "--against", "HEAD"]) == 0
    assert capsys.readouterr().out.startswith("identity:raquel gains secrets/shared.yaml\n")
    assert main(["generate", "--check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "+          - *raquel" in out and "access changes:\nidentity:raquel gains secrets/shared.yaml" in out
