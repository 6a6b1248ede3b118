"""Offboarding that revokes: `host retire --rotate` leaves the retired key unable to open anything, with real sops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sopsctl.cli import main
from sopsctl.datakey import recover
from sopsctl.formats import detect_format, read_metadata
from sopsctl.identities import load_identities

from .audit_fleet import KEY_BEARING, SECRETS, SOPS_NO_KEY, build_fleet

pytestmark = pytest.mark.interop


def _data_key(fleet, path: str, key_file: Path) -> bytes:
    data = (fleet.root / path).read_bytes()
    metadata = read_metadata(data, detect_format(path), full=True)
    return recover(metadata, load_identities({}, fleet.root, [key_file])).key


def test_host_retire_rotate_revokes_and_lists_what_to_change(tmp_path: Path, sops_bin: Path, capsys) -> None:
    fleet = build_fleet(tmp_path / "fleet", sops_bin)
    recovery = fleet.key_file(["recovery"])
    exposed = ["secrets/shared/api.json", KEY_BEARING]  # web1 reads these (its own host files go away)
    before = {path: _data_key(fleet, path, recovery) for path in exposed}
    for path in exposed:
        assert fleet.decrypt(path, ["web1-host"]).returncode == 0

    code = main(["host", "retire", "web1", "--rotate", "--identity", str(recovery), "--root", str(fleet.root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "host:web1 could read" in out and "change them at their source" in out
    assert all(path in out for path in exposed)
    assert f"the private key in {KEY_BEARING} (carol-ci) is compromised too" in out

    own = [s.path for s in SECRETS if s.path.startswith("secrets/hosts/web1/")]
    for path in own:  # its own secrets have no class any more: listed, to delete or re-home
        assert f"{path}: loses" in out and "no class governs it any more" in out
    for secret in SECRETS:  # the retired key opens nothing else any more
        if secret.path not in own:
            result = fleet.decrypt(secret.path, ["web1-host"])
            assert result.returncode == SOPS_NO_KEY, (secret.path, result.stderr)
    for path in exposed:
        assert fleet.decrypt(path, ["alice-2026"]).returncode == 0  # the remaining readers still can
        assert _data_key(fleet, path, recovery) != before[path]  # a new data key: what web1 saw is dead
    assert main(["audit", "--root", str(fleet.root), "--format", "json"]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    # the audit still points at web1 only where its own, now unowned, secrets wait to be deleted
    assert {f["path"] for f in report["findings"] if f["subject"] == "host:web1"} == set(own)


def test_identity_retire_rotate_revokes_a_shamir_share_holder(tmp_path: Path, sops_bin: Path, capsys) -> None:
    fleet = build_fleet(tmp_path / "fleet", sops_bin)
    recovery = fleet.key_file(["recovery"])
    ca = [s.path for s in SECRETS if s.path.startswith("secrets/ca/")]
    before = {path: _data_key(fleet, path, recovery) for path in ca}
    for path in ca:  # carol's share and db1's share together open the CA files
        assert fleet.decrypt(path, ["carol-ci", "db1-host"]).returncode == 0

    code = main(["identity", "retire", "carol", "--rotate", "--identity", str(recovery), "--root", str(fleet.root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "identity:carol could read" in out
    for path in ca:
        assert fleet.decrypt(path, ["carol-ci", "db1-host"]).returncode == SOPS_NO_KEY, path
        assert fleet.decrypt(path, ["alice-2026", "db1-host"]).returncode == 0, path  # the others still can
        assert _data_key(fleet, path, recovery) != before[path]
    for secret in SECRETS:  # carol's key opens nothing but her own file, which is listed to delete
        if secret.path != "secrets/home/carol/deploy.env":
            assert fleet.decrypt(secret.path, ["carol-ci"]).returncode == SOPS_NO_KEY, secret.path
    assert "secrets/home/carol/deploy.env: loses identity:carol" in out
