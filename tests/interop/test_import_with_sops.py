"""Interop: the real sops binary picks the same recipients under an imported-and-regenerated .sops.yaml as under the original."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sopsctl.cli import main

pytestmark = pytest.mark.interop

PATHS = ["secrets/users/admin-user/signing-key.yaml", "secrets/users/raquel-user/new.yaml",
         "secrets/home-manager/users/tara/secrets.yaml", "secrets/bridge/new-key.enc",
         "secrets/hosts/orb-nixos/x.yaml", "secrets/clusters/local/new.enc.yaml", "secrets/services/a.yaml",
         "secrets/shared.yaml", "secrets/other.yaml", "elsewhere/x.yaml"]


def _recipients(sops: Path, root: Path, path: str) -> list[str] | None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"a: b\n" if path.endswith(".yaml") else b"raw")
    env = {**os.environ, "SOPS_AGE_KEY_FILE": os.devnull}
    result = subprocess.run([str(sops), "encrypt", path], cwd=root, env=env, capture_output=True, timeout=60)
    if result.returncode != 0:
        assert b"no matching creation rules" in result.stderr
        return None
    text = result.stdout
    if path.endswith(".yaml"):
        import yaml

        meta = yaml.safe_load(text)["sops"]
    else:
        meta = json.loads(text)["sops"]
    return sorted(entry["recipient"] for entry in meta["age"])


def test_sops_sees_the_same_rules_after_import_and_generate(real_fleet: Path, sops_bin: Path, tmp_path: Path,
                                                           capsys) -> None:
    original = tmp_path / "original"
    regenerated = tmp_path / "regenerated"
    original.mkdir()
    (regenerated / "policies").mkdir(parents=True)
    (original / ".sops.yaml").write_bytes((real_fleet / "head" / ".sops.yaml").read_bytes())
    assert main(["import", str(original / ".sops.yaml"), "-o", str(regenerated / "policies" / "fleet.yaml")]) == 0
    assert main(["generate", "--root", str(regenerated)]) == 0
    capsys.readouterr()
    compared = 0
    for path in PATHS:
        before, after = _recipients(sops_bin, original, path), _recipients(sops_bin, regenerated, path)
        assert before == after, path
        compared += before is not None
    assert compared >= 8
