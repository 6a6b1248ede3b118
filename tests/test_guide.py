"""docs/guide.md: every command in its ```sh blocks runs, in order, on a copy of the real fleet, with the exit code the guide gives."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

GUIDE = REPO / "docs" / "guide.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EXITS = re.compile(r"\s+#\s*exits\s+(\d+)\b.*$")


def guide_commands(text: str) -> list[tuple[str, int]]:
    """(command, expected exit code) for each line of each sh block; `# exits N: …` sets the code."""
    commands = []
    for block in _BLOCK.findall(text):
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _EXITS.search(line)
            expected = int(match.group(1)) if match else 0
            commands.append((line[: match.start()] if match else line, expected))
    return commands


def test_the_parser_reads_exit_comments() -> None:
    text = "x\n```sh\nsopsctl a\n# note\nsopsctl b   # exits 1: stale\n```\n```text\nnot run\n```\n"
    assert guide_commands(text) == [("sopsctl a", 0), ("sopsctl b", 1)]


def test_every_command_in_the_guide_runs_as_documented(real_fleet: Path, ssh_keygen: str,
                                                      tmp_path: Path) -> None:
    commands = guide_commands(GUIDE.read_text(encoding="utf-8"))
    assert len(commands) >= 10
    fleet = tmp_path / "fleet"
    shutil.copytree(real_fleet / "head", fleet)
    for path in [fleet, *fleet.rglob("*")]:  # the shared fixture is read-only
        path.chmod(path.stat().st_mode | 0o200)
    # The guide's "copy the new machine's host key to host.pub".
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", "root@newhost", "-f",
                    str(fleet / "host")], check=True, timeout=60)
    bindir = Path(sys.executable).parent
    assert (bindir / "sopsctl").exists(), f"sopsctl is not installed next to {sys.executable}"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command, expected in commands:
        result = subprocess.run(["bash", "-c", command], cwd=fleet, env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == expected, (
            f"{command!r} exited {result.returncode}, the guide says {expected}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    # What the walk-through says it did, it did.
    policy = (fleet / "policies" / "fleet.yaml").read_text(encoding="utf-8")
    assert "newhost:" in policy and "host:newhost]" in policy
    assert "status: retired" not in policy  # retirement was only previewed
    host_recipient = subprocess.run(["bash", "-c", "sopsctl keys from-ssh host.pub"], cwd=fleet, env=env,
                                    capture_output=True, text=True, check=True).stdout.strip()
    assert host_recipient.startswith("age1") and host_recipient in (fleet / ".sops.yaml").read_text()
    rekey = subprocess.run(["bash", "-c", "sopsctl rekey --dry-run"], cwd=fleet, env=env,
                           capture_output=True, text=True)
    assert "would re-key secrets/shared.yaml" in rekey.stdout
    assert "would re-key secrets/test.yaml" in rekey.stdout
    assert "would re-key vars/per-machine/electrum/zfs/key/secret" in rekey.stdout
    assert "5 file(s) would re-key" in rekey.stdout


def test_the_readme_links_the_guide() -> None:
    assert "](docs/guide.md)" in (REPO / "README.md").read_text(encoding="utf-8")
