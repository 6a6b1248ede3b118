"""`sopsctl matrix` on the real fleet: formats, -o writes atomically, exit codes 0, 2 and 3."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from sopsctl.cli import main

POLICY = Path(__file__).resolve().parents[1] / "fixtures" / "real-fleet-policy.yaml"


@pytest.fixture
def fleet(real_fleet: Path, tmp_path: Path) -> Path:
    """The fleet's head, with the step-ca secrets and shared.yaml as they were in the 2026-01-21 drift."""
    root = tmp_path / "fleet"
    shutil.copytree(real_fleet / "head", root)
    shutil.copytree(real_fleet / "drift-2026-01-21" / "secrets", root / "secrets", dirs_exist_ok=True)
    (root / "policies").mkdir()
    shutil.copy(POLICY, root / "policies" / "fleet.yaml")
    return root


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_names_every_kind_of_cell_and_exits_0_despite_findings(fleet: Path, capsys) -> None:
    code, out, err = run(["matrix", "--format", "json", "--root", str(fleet)], capsys)
    assert code == 0 and err == ""  # not a checking command: the drift is shown, not an exit status
    data = json.loads(out)
    cells = {(c["path"], c["subject"]): c["access"] for c in data["cells"]}
    step_ca = "secrets/clusters/local/step-ca-keys.enc.yaml"
    assert cells[(step_ca, "host:orb-nixos")] == "unexpected"  # a retired host still a recipient
    assert cells[(step_ca, "host:stibnite")] == "unexpected"
    assert cells[("secrets/shared.yaml", "identity:janettesmith")] == "missing"
    assert cells[("secrets/home-manager/users/raquel/secrets.yaml", "identity:raquel")] == "direct"
    assert cells[("secrets/users/admin-user/signing-key.yaml", "key:cinnabar")] == "transitive"
    # clan vars are rows too: the drift the fixture's README lists shows in the same matrix
    assert cells[("vars/per-machine/electrum/zfs/key/secret", "key:electrum")] == "unexpected"
    assert cells[("vars/per-machine/cinnabar/user-password-root/user-password-hash/secret", "key:cinnabar")] \
        == "missing"
    subjects = data["subjects"]
    assert subjects[0].startswith("identity:")
    # recipients no policy key knows come last: two test-era keys and clan's own stibnite machine key
    raw = [s for s in subjects if s.startswith("age1")]
    assert subjects[-len(raw):] == raw and subjects[-len(raw) - 1].startswith("key:")
    assert {r[:9] for r in raw} == {"age1yvz2w", "age1ka74f", "age1uauyt"}
    clan_files = [f for f in data["files"] if f.startswith(("sops/", "vars/"))]
    assert "secrets/services/.keep" not in data["files"] and len(data["files"]) == 18 + len(clan_files) == 31


def test_text_is_the_default_and_csv_is_long_format(fleet: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(fleet / "secrets")  # the root is found by walking up
    code, out, _ = run(["matrix"], capsys)
    assert code == 0 and out.startswith("legend: D direct")
    code, out, _ = run(["matrix", "--format", "csv"], capsys)
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0 and rows[0] == ["path", "subject", "access"]
    assert ["secrets/shared.yaml", "identity:janettesmith", "missing"] in rows


def test_o_writes_the_html_page_and_prints_nothing_on_stdout(fleet: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "matrix.html"
    code, out, err = run(["matrix", "--format", "html", "-o", str(target), "--root", str(fleet)], capsys)
    assert code == 0 and out == ""
    assert "wrote" in err and str(target) in err
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<tr data-subject="identity:raquel">' in page
    assert list(tmp_path.glob(".*.sopsctl-tmp")) == []  # the atomic write left no temp file


def test_o_replaces_an_existing_file(fleet: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "matrix.csv"
    target.write_text("old")
    assert run(["matrix", "--format", "csv", "--output", str(target), "--root", str(fleet)], capsys)[0] == 0
    assert target.read_text().startswith("path,subject,access\n")


def test_o_into_a_missing_directory_exits_3_with_one_line(fleet: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run(["matrix", "-o", str(tmp_path / "nope" / "m.txt"), "--root", str(fleet)], capsys)
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "directory does not exist" in err and "Traceback" not in err


def test_an_unknown_format_is_a_usage_error(fleet: Path, capsys) -> None:
    code, out, err = run(["matrix", "--format", "sarif", "--root", str(fleet)], capsys)
    assert code == 2 and out == "" and "text, csv, json, html" in err


def test_a_policy_that_does_not_load_exits_3(fleet: Path, capsys) -> None:
    (fleet / "policies" / "fleet.yaml").write_text("version: 1\nkeys: [not, a, mapping]\n")
    code, out, err = run(["matrix", "--root", str(fleet)], capsys)
    assert code == 3 and out == "" and "fleet.yaml" in err
