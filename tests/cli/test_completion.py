"""Shell completion offers names from the policy of the repository the shell is in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _complete(cwd: Path, words: str) -> list[str]:
    env = {**os.environ, "_SOPSCTL_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    result = subprocess.run([sys.executable, "-m", "sopsctl"], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=60)
    return result.stdout.split()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    hosts = tmp_path / "policies" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("galena: {platform: nixos, keys: [galena], users: {cameron: admin}}",
                                               "galena: {platform: nixos, keys: [galena], users: {cameron: admin}, "
                                               "status: retired}"))
    return tmp_path


def test_host_names_complete_and_retired_ones_are_not_offered(repo: Path) -> None:
    assert _complete(repo, "sopsctl host retire s") == ["scheelite", "stibnite"]
    assert _complete(repo, "sopsctl host retire g") == []  # galena is retired already
    assert _complete(repo, "sopsctl host set-key ar") == ["argentum"]


def test_identities_keys_and_selectors_complete(repo: Path) -> None:
    assert _complete(repo, "sopsctl identity retire ra") == ["raquel"]
    assert _complete(repo, "sopsctl key retire rec") == ["recovery"]
    assert _complete(repo, "sopsctl access identity:c") == ["identity:cameron", "identity:christophersmith"]
    assert "role:admin" in _complete(repo, "sopsctl access role:")


def test_outside_a_repository_completion_offers_nothing_and_does_not_fail(tmp_path: Path) -> None:
    assert _complete(tmp_path, "sopsctl host retire s") == []
