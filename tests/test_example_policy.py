"""The example fleet in policies/: it lints clean, and .sops.yaml.example is exactly what it generates."""

from __future__ import annotations

from pathlib import Path

from sopsctl import ops
from sopsctl.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_example_config_is_current() -> None:
    repo = ops.open_repo(REPO, REPO)
    text, _ = ops.generated_config(repo, ops.load(repo))
    assert (REPO / ".sops.yaml.example").read_text() == text, (
        "regenerate it: sopsctl generate --output .sops.yaml.example")


def test_example_policy_lints_clean(capsys) -> None:
    assert main(["lint", "--root", str(REPO), "--strict"]) == 0
    assert "policy ok" in capsys.readouterr().out


def test_example_fleet_follows_the_user_types() -> None:
    repo = ops.open_repo(REPO, REPO)
    policy = ops.load(repo)
    _, generated = ops.generated_config(repo, policy)
    by_label = {r.label(): {k.name for g in r.key_groups for k in g} for r in generated.rules}
    # an admin reads the system secrets of the hosts they administer; so does the host
    assert by_label["host (host=blackphos)"] == {"recovery", "blackphos", "cameron"}
    # a non-admin reads only their own personal secrets, plus the recovery key
    assert by_label["home (account=raquel, identity=raquel)"] == {"recovery", "raquel"}
    readable_by_raquel = [label for label, keys in by_label.items() if "raquel" in keys]
    assert readable_by_raquel == ["home (account=raquel, identity=raquel)"]
    # cameron is one person with one key under two account names
    assert by_label["home (account=crs58, identity=cameron)"] == by_label["home (account=cameron, identity=cameron)"]
