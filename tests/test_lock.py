"""One writer per repository: a second sopsctl that would change files stops with one clear line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sopsctl.cli import main
from sopsctl.errors import InputError
from sopsctl.fsutil import LOCK_NAME, repo_lock

from .policy_helpers import SMALL_POLICY

HOLD = """
import sys, time
from pathlib import Path
from sopsctl.fsutil import repo_lock
with repo_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(30)
"""


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path, capsys) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(SMALL_POLICY)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert main(["generate", "--root", str(tmp_path)]) == 3
        err = capsys.readouterr().err
        assert f"another sopsctl (pid {holder.pid}) is changing this repository" in err
        assert not (tmp_path / ".sops.yaml").exists()
        assert main(["generate", "--root", str(tmp_path), "--output", "-"]) == 0  # reading needs no lock
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    assert main(["generate", "--root", str(tmp_path)]) == 0  # a killed holder leaves no stale lock
    assert (tmp_path / ".sops.yaml").exists()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    with repo_lock(tmp_path), pytest.raises(InputError), repo_lock(tmp_path):
        pass
    assert (tmp_path / LOCK_NAME).exists()
    with repo_lock(tmp_path):  # released: it can be taken again
        pass
