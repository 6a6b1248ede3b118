"""The html `matrix` page in a real browser: headless Chromium renders it, and the filter box narrows it."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from sopsctl.cli import main

POLICY = Path(__file__).resolve().parent / "fixtures" / "real-fleet-policy.yaml"
# Debian's chromium, headless as root, with nothing fetched from the network on start.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROW = re.compile(r'<tr data-subject="([^"]*)"([^>]*)>')

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium not found under CI: .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium); .ci/run installs it")
    return path


@pytest.fixture
def page(real_fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    root = tmp_path / "fleet"
    shutil.copytree(real_fleet / "head", root)
    (root / "policies").mkdir()
    shutil.copy(POLICY, root / "policies" / "fleet.yaml")
    target = tmp_path / "page.html"
    assert main(["matrix", "--format", "html", "-o", str(target), "--root", str(root)]) == 0
    capsys.readouterr()
    return target


def browse(chromium: str, tmp_path: Path, *args: str) -> str:
    profile = tempfile.mkdtemp(prefix="profile-", dir=tmp_path)  # a fresh one per run
    result = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def visible_rows(dom: str) -> list[str]:
    rows = ROW.findall(dom)
    assert rows, "no matrix rows in the dumped DOM"
    return [subject for subject, attrs in rows if not re.search(r"\bhidden\b|display:\s*none", attrs)]


def test_chromium_renders_the_page_to_a_screenshot(chromium: str, page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    browse(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1400,900", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (1400, 900)
    assert len(data) > 20_000  # a blank 1400×900 page compresses to a few kB; the matrix is far more


def test_filter_from_the_url_narrows_the_matrix_to_one_identity(chromium: str, page: Path, tmp_path: Path) -> None:
    everyone = visible_rows(browse(chromium, tmp_path, "--dump-dom", page.as_uri()))
    # unfiltered, the script hides nothing: 17 policy subjects and 3 recipients only clan vars name
    assert "identity:raquel" in everyone and len(everyone) == 20
    dom = browse(chromium, tmp_path, "--dump-dom", page.as_uri() + "#filter=raquel")
    assert visible_rows(dom) == ["identity:raquel"]
    assert len(ROW.findall(dom)) == 20  # the others are hidden, not removed
    assert '<span id="shown">1 of 20 subjects</span>' in dom
