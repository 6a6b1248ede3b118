"""Audit of the real fleet: head has no drift, a retired host shows up, the two drift snapshots show theirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sopsctl import ops

POLICY = (Path(__file__).parent / "fixtures" / "real-fleet-policy.yaml").read_text()
DRIFT_KINDS = {"missing-reader", "unexpected-reader", "unknown-recipient", "retired-recipient", "group-mismatch"}


def _audit(real_fleet: Path, tmp_path: Path, folder: str, policy: str = POLICY):
    root = tmp_path / folder
    shutil.copytree(real_fleet / folder, root, symlinks=True)
    (root / "policies").mkdir()
    (root / "policies" / "fleet.yaml").write_text(policy)
    _, report = ops.run_audit(ops.open_repo(root, root))
    return report


def _drift(report) -> set[tuple[str, str, str | None]]:
    return {(f.kind, f.path, f.subject) for f in report.findings if f.kind in DRIFT_KINDS}


def _clan(path: str) -> bool:
    return path.startswith(("sops/", "vars/"))


def test_head_has_no_drift_under_secrets(real_fleet: Path, tmp_path: Path) -> None:
    report = _audit(real_fleet, tmp_path, "head")
    files = [f for f in report.files if not _clan(f.path)]
    assert len(files) == 18  # the two .keep files are skipped
    assert sum(f.status == "encrypted" for f in files) == 18
    assert {d for d in _drift(report) if not _clan(d[1])} == set()
    kinds = {f.kind for f in report.findings if not _clan(f.path)}
    assert kinds == {"stale-config", "transitive-reader"}  # head's .sops.yaml is hand-written


def test_head_clan_vars_show_exactly_the_mismatches_the_fixture_lists(real_fleet: Path, tmp_path: Path) -> None:
    """The clan tree is found on its own (no policy edit) and judged by its links: two vars encrypted to
    test-era keys instead of their machine, one var with a machine recipient but no machine link."""
    report = _audit(real_fleet, tmp_path, "head")
    clan_files = [f for f in report.files if _clan(f.path)]
    assert len(clan_files) == 13 and {f.klass for f in clan_files} == {"clan"}
    assert all(f.status == "encrypted" for f in clan_files)
    cinnabar = "vars/per-machine/cinnabar/user-password-root/user-password-hash/secret"
    electrum = "vars/per-machine/electrum/user-password-root/user-password-hash/secret"
    assert {d for d in _drift(report) if _clan(d[1])} == {
        ("missing-reader", cinnabar, "key:cinnabar"),
        ("unknown-recipient", cinnabar, "age1yvz2wezwgtpckegv3zpmj429prn7m2hsv859w4w4dk2rtsqlmgfs444cvf"),
        ("missing-reader", electrum, "key:electrum"),
        ("unknown-recipient", electrum, "age1ka74f8f07vwmvegs8fnrpvh3t8mrxgajl3rtrajp4zlhvq42zcms9en9d8"),
        ("unexpected-reader", "vars/per-machine/electrum/zfs/key/secret", "key:electrum"),
    }
    # Besides those, only what the bridge secret implies: whoever reads crs58's age key reads crs58's vars.
    others = [f for f in report.findings if _clan(f.path) and f.kind not in DRIFT_KINDS]
    assert {f.kind for f in others} == {"transitive-reader"}
    assert {f.via for f in others} == {("secrets/bridge/crs58-age-key.enc",)}


def test_head_bridge_secrets_give_machines_the_admins_files(real_fleet: Path, tmp_path: Path) -> None:
    report = _audit(real_fleet, tmp_path, "head")
    transitive = {(f.path, f.subject): f for f in report.findings if f.kind == "transitive-reader"}
    # A clan machine reads crs58's age key, and with it everything admin-user reads.
    finding = transitive[("secrets/users/admin-user/signing-key.yaml", "key:cinnabar")]
    assert finding.via == ("secrets/bridge/crs58-age-key.enc",)
    assert "identity:cameron" in finding.message
    assert ("secrets/home-manager/users/tara/secrets.yaml", "identity:cameron") in transitive
    # Nobody is reported for what they read directly.
    assert ("secrets/bridge/crs58-age-key.enc", "key:cinnabar") not in transitive
    assert all(f.severity == "warning" for f in transitive.values())


def test_retiring_orb_nixos_reports_it_on_shared_and_test(real_fleet: Path, tmp_path: Path) -> None:
    policy = POLICY.replace("orb-nixos: {platform: orbstack, keys: [orb-nixos], users: {crs58: admin}}",
                            "orb-nixos: {platform: orbstack, keys: [orb-nixos], users: {crs58: admin}, status: retired}")
    assert policy != POLICY
    report = _audit(real_fleet, tmp_path, "head", policy)
    assert {d for d in _drift(report) if not _clan(d[1])} == {
        ("retired-recipient", "secrets/shared.yaml", "host:orb-nixos"),
        ("retired-recipient", "secrets/test.yaml", "host:orb-nixos"),
    }


def test_drift_2026_07_29(real_fleet: Path, tmp_path: Path) -> None:
    report = _audit(real_fleet, tmp_path, "drift-2026-07-29")
    assert _drift(report) == {
        ("missing-reader", "secrets/bridge/crs58-age-key.enc", "key:pyrite"),
        ("missing-reader", "secrets/bridge/tara-age-key.enc", "key:pyrite"),
        ("missing-reader", "secrets/shared.yaml", "identity:janettesmith"),
        ("missing-reader", "secrets/shared.yaml", "identity:christophersmith"),
        ("missing-reader", "secrets/test.yaml", "identity:janettesmith"),
        ("missing-reader", "secrets/test.yaml", "identity:christophersmith"),
    }


@pytest.mark.parametrize("orb_retired", [False, True])
def test_drift_2026_01_21(real_fleet: Path, tmp_path: Path, orb_retired: bool) -> None:
    # On 2026-01-21 the clusters rule did not include the CI key yet.
    policy = POLICY.replace("readers: [identity:cameron, identity:ci]\n", "readers: [identity:cameron]\n")
    if orb_retired:
        policy = policy.replace("users: {crs58: admin}}\ngroups", "users: {crs58: admin}, status: retired}\ngroups")
    assert policy.count("status: retired") == int(orb_retired)
    report = _audit(real_fleet, tmp_path, "drift-2026-01-21", policy)
    orb = ("retired-recipient" if orb_retired else "unexpected-reader")
    expected = {("missing-reader", "secrets/shared.yaml", "identity:janettesmith"),
                ("missing-reader", "secrets/shared.yaml", "identity:christophersmith")}
    for name in ("step-ca-keys", "step-ca-sopssecret"):
        path = f"secrets/clusters/local/{name}.enc.yaml"
        expected |= {("unexpected-reader", path, "host:stibnite"), ("unexpected-reader", path, "host:blackphos"),
                     (orb, path, "host:orb-nixos")}
    if orb_retired:  # shared.yaml still lists the retired host too
        expected.add(("retired-recipient", "secrets/shared.yaml", "host:orb-nixos"))
    assert _drift(report) == expected
