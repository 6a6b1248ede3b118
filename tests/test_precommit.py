"""The hooks in .pre-commit-hooks.yaml, run by pre-commit itself against a temp repository.

pre-commit clones the hook repository at a committed revision and pip-installs it into a
fresh virtualenv, so the hook repository here is a temp git repo holding this checkout's
working-tree package, pyproject.toml, README.md and .pre-commit-hooks.yaml (committed
there, so uncommitted work in this checkout is what gets tested). Needs the package index.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
HOOK_IDS = ["sopsctl-generate-check", "sopsctl-lint", "sopsctl-audit", "sopsctl-rekey-dry-run"]

GIT_ENV = {
    "GIT_AUTHOR_NAME": "sopsctl tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "sopsctl tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _commit_all(repo: Path) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--no-verify", "-m", "snapshot")
    return _git(repo, "rev-parse", "HEAD")


def _hook_repo(dest: Path) -> str:
    """A git repo with what `pip install .` and pre-commit need from this checkout; its HEAD."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(
        REPO / "sopsctl",
        dest / "sopsctl",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    _git(dest, "init", "-q")
    return _commit_all(dest)


def _pre_commit(repo: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files", "--color", "never"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _status(output: str, hook_name: str) -> str:
    """`Passed`, `Failed` or `Skipped` for the hook whose name starts with hook_name."""
    match = re.search(rf"^{re.escape(hook_name)}.*?(Passed|Failed|Skipped)$", output, re.M)
    assert match, f"no status line for {hook_name!r} in:\n{output}"
    return match.group(1)


def test_hooks_file_declares_the_four_hooks() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert [hook["id"] for hook in hooks] == HOOK_IDS
    for hook in hooks:
        assert hook["language"] == "python"
        assert hook["pass_filenames"] is False
        assert hook["entry"].startswith("sopsctl ")
        assert hook.get("always_run") or re.match(hook["files"], ".sops.yaml")
        assert not hook.get("always_run") or "files" not in hook
    entries = {hook["id"]: hook["entry"] for hook in hooks}
    assert entries["sopsctl-generate-check"] == "sopsctl generate --check"
    assert entries["sopsctl-rekey-dry-run"] == "sopsctl rekey --dry-run"
    policy_files = [f"policies/{p.name}" for p in (REPO / "policies").glob("*.yaml")]
    assert policy_files and all(re.match(hooks[0]["files"], f) for f in policy_files)


@pytest.mark.slow
def test_hooks_pass_on_a_clean_repo_and_fail_on_a_stale_sops_yaml(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is required")
    pytest.importorskip("pre_commit", reason="install the test extra (pip install -e '.[test]')")
    rev = _hook_repo(tmp_path / "hooks")

    work = tmp_path / "work"
    work.mkdir()
    _git(work, "init", "-q")
    shutil.copytree(REPO / "policies", work / "policies")
    (work / ".gitignore").write_text("/.sopsctl.lock\n")
    sopsctl = Path(sys.executable).with_name("sopsctl")  # this checkout's, in the test venv
    subprocess.run([str(sopsctl), "generate"], cwd=work, check=True, capture_output=True)
    assert (work / ".sops.yaml").is_file()
    config = {
        "repos": [
            {
                "repo": str(tmp_path / "hooks"),
                "rev": rev,
                "hooks": [{"id": hook_id} for hook_id in HOOK_IDS],
            }
        ]
    }
    (work / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _commit_all(work)

    home = tmp_path / "pre-commit-home"
    clean = _pre_commit(work, home)
    out = clean.stdout + clean.stderr
    assert clean.returncode == 0, out
    for name in (
        "sopsctl generate --check",
        "sopsctl lint",
        "sopsctl audit",
        "sopsctl rekey --dry-run",
    ):
        assert _status(out, name) == "Passed", out

    # One byte of .sops.yaml changed: the first rule's path regex no longer matches the policy.
    sops_yaml = work / ".sops.yaml"
    text = sops_yaml.read_text()
    assert "'^secrets/" in text
    sops_yaml.write_text(text.replace("'^secrets/", "'^secretZ/", 1))

    stale = _pre_commit(work, home)
    out = stale.stdout + stale.stderr
    assert stale.returncode != 0, out
    assert _status(out, "sopsctl generate --check") == "Failed", out
    assert _status(out, "sopsctl lint") == "Passed", out
    assert _status(out, "sopsctl audit") == "Failed", out  # its stale-config finding
    assert _status(out, "sopsctl rekey --dry-run") == "Passed", out  # no secrets to re-key
    assert ".sops.yaml" in out and "stale" in out.lower(), out
    assert "secretZ" in out, out  # the unified diff shows the changed line
