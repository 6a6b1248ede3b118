"""The atomic write helper: old or new, never torn; modes kept; failures are one clear line and leave no temp file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sopsctl import fsutil
from sopsctl.errors import InputError


def test_replaces_content_and_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "f.yaml"
    target.write_bytes(b"old")
    target.chmod(0o640)
    fsutil.atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [target]


def test_exclusive_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "key.txt"
    fsutil.atomic_write(target, b"secret", mode=0o600, exclusive=True)
    assert target.stat().st_mode & 0o777 == 0o600
    with pytest.raises(InputError, match="already exists"):
        fsutil.atomic_write(target, b"other", exclusive=True)
    assert target.read_bytes() == b"secret"


def test_a_failing_write_is_one_line_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f.yaml"
    target.write_bytes(b"old")

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil.os, "replace", full_disk)
    with pytest.raises(InputError, match=r"f\.yaml: cannot write: No space left on device"):
        fsutil.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing" / "f", "its directory does not exist"),
    (lambda p: p, "is a directory"),
])
def test_unwritable_targets_are_one_line(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        fsutil.atomic_write(make(tmp_path), b"x")
