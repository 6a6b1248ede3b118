"""The README is honest: its two set-up commands are what CI runs, and the main job works from a fresh copy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [block.strip() for block in blocks]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    commands = _commands()
    assert len(commands) == 2
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()


@pytest.mark.slow
def test_main_job_command_runs_on_a_fresh_copy(tmp_path: Path) -> None:
    """Runs the README's first command verbatim in a copy of the repo without a venv."""
    copy = tmp_path / "sopsctl"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [f for f in tracked.decode().split("\0") if f]
    if not files:  # not a git checkout: copy the tree minus build products
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info"))
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    result = subprocess.run(["bash", "-c", _commands()[0]], cwd=copy, env=env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode() == (REPO / ".sops.yaml.example").read_text()
