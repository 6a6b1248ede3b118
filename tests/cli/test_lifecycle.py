"""Life events: the policy is edited in place (comments and order kept), .sops.yaml regenerated, changes listed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sopsctl.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    assert main(["generate", "--root", str(tmp_path)]) == 0
    for path in ("secrets/hosts/cinnabar/x.yaml", "secrets/shared.yaml", "secrets/hosts/newbox/wifi.yaml",
                 "secrets/home-manager/users/raquel/s.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("a: b\n")
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _host_key(tmp_path: Path, name: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f",
                    str(tmp_path / name)], check=True)
    return tmp_path / f"{name}.pub"


def test_host_add_edits_the_policy_keeps_comments_and_regenerates(repo: Path, tmp_path: Path, capsys) -> None:
    before = (repo / "policies" / "hosts.yaml").read_text()
    pub = _host_key(tmp_path, "newbox")
    code = main(["host", "add", "newbox", "--ssh-key-file", str(pub), "--platform", "nixos",
                 "--user", "cameron=admin", "--root", str(repo)])
    out = capsys.readouterr().out
    assert code == 0
    after = (repo / "policies" / "hosts.yaml").read_text()
    assert after.startswith(before)  # comments, order and style of every other line kept
    assert after[len(before):] == "  newbox: {platform: nixos, keys: [newbox], users: {cameron: admin}}\n"
    assert '  newbox: {ssh: "ssh-ed25519 AAAA' in (repo / "policies" / "keys.yaml").read_text()
    assert "secrets/hosts/newbox/wifi.yaml: gains host:newbox, identity:cameron, key:recovery" in out
    assert main(["generate", "--check", "--root", str(repo)]) == 0
    assert main(["lint", "--root", str(repo), "--strict"]) == 0


def test_dry_run_changes_nothing_and_shows_the_edit(repo: Path, tmp_path: Path, capsys) -> None:
    pub = _host_key(tmp_path, "newbox")
    snapshot = _snapshot(repo)
    assert main(["host", "add", "newbox", "--ssh-key-file", str(pub), "--root", str(repo), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+++ b/policies/hosts.yaml" in out and "+  newbox: {keys: [newbox]}" in out
    assert "would change" in out
    assert _snapshot(repo) == snapshot


def test_host_retire_lists_lost_readers_and_orphaned_secrets(repo: Path, capsys) -> None:
    assert main(["host", "retire", "cinnabar", "--root", str(repo)]) == 0
    captured = capsys.readouterr()
    assert "secrets/shared.yaml: loses host:cinnabar" in captured.out
    assert "secrets/hosts/cinnabar/x.yaml: loses" in captured.out and "no class governs it any more" in captured.out
    assert "does not revoke" in captured.err
    assert "cinnabar: {platform: nixos, keys: [cinnabar], users: {cameron: admin}, status: retired}" in \
        (repo / "policies" / "hosts.yaml").read_text()


def test_host_set_key_retires_the_old_key(repo: Path, tmp_path: Path, capsys) -> None:
    pub = _host_key(tmp_path, "cinnabar-new")
    assert main(["host", "set-key", "cinnabar", "--ssh-key-file", str(pub), "--root", str(repo)]) == 0
    keys = (repo / "policies" / "keys.yaml").read_text()
    assert "status: retired" in keys.split("cinnabar:")[1].splitlines()[0]
    hosts = (repo / "policies" / "hosts.yaml").read_text()
    assert "keys: [cinnabar, cinnabar-" in hosts
    assert "secrets/hosts/cinnabar/x.yaml: gains host:cinnabar" not in capsys.readouterr().out


def test_identity_add_and_retire(repo: Path, capsys) -> None:
    age = "age1xz7gmqx7m0pn8u2nq8x05efq6dj52ym6c9gat5xj4am6x9sauq6sfzd2fn"
    assert main(["identity", "add", "tara", "--role", "user", "--age", age, "--root", str(repo)]) == 0
    people = (repo / "policies" / "people.yaml").read_text()
    assert "  tara: {role: user, keys: [tara]}" in people
    assert main(["identity", "retire", "raquel", "--root", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "secrets/home-manager/users/raquel/s.yaml: loses identity:raquel" in out


def test_a_change_that_locks_admins_out_is_refused_without_force(repo: Path, capsys) -> None:
    snapshot = _snapshot(repo)
    assert main(["key", "retire", "recovery", "--root", str(repo)]) == 3
    assert "lockout-risk" in capsys.readouterr().err
    assert _snapshot(repo) == snapshot
    assert main(["key", "retire", "recovery", "--root", str(repo), "--force"]) == 0
    assert "recovery: {age:" in (repo / "policies" / "keys.yaml").read_text()
    assert "status: retired" in (repo / "policies" / "keys.yaml").read_text()


@pytest.mark.parametrize("args", [
    ["host", "add", "x", "--age", "age1notvalid"],
    ["host", "add", "x", "--ssh-key", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ"],
    ["host", "add", "stibnite", "--age", "age1xz7gmqx7m0pn8u2nq8x05efq6dj52ym6c9gat5xj4am6x9sauq6sfzd2fn"],
    ["host", "retire", "nope"],
    ["identity", "add", "x", "--role", "user"],
])
def test_bad_input_exits_3_or_2_and_changes_nothing(repo: Path, args: list[str], capsys) -> None:
    snapshot = _snapshot(repo)
    code = main([*args, "--root", str(repo)])
    assert code in (2, 3)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("sopsctl: error:")
    assert _snapshot(repo) == snapshot
