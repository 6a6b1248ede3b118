"""batch.rewrite_batch: what is written, what is reported, and what stays untouched, on one core or several."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopsctl import fsutil
from sopsctl.batch import rewrite_batch


def _repo(tmp_path: Path, count: int) -> list[str]:
    relatives = []
    for index in range(count):
        relative = f"secrets/d{index % 3}/f{index:03d}.yaml"
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"old %d" % index)
        relatives.append(relative)
    return relatives


def _temps(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


def _new(relative: str) -> bytes:
    return b"new " + relative.encode()


@pytest.mark.parametrize("workers", [1, 2])
def test_every_computed_file_is_written_and_each_refusal_keeps_its_own_reason(tmp_path: Path,
                                                                             workers: int) -> None:
    relatives = _repo(tmp_path, 100)
    steps = []

    def compute(relative: str) -> tuple[bytes | None, str | None]:
        if relative.endswith(("7.yaml",)):
            return None, f"{relative} refused"
        return _new(relative), None

    written, failed = rewrite_batch(tmp_path, relatives, compute, workers=workers, progress=steps.append)
    refused = [r for r in relatives if r.endswith("7.yaml")]
    assert written == sorted(set(relatives) - set(refused))
    assert failed == sorted((r, f"{r} refused") for r in refused)
    assert sum(steps) == len(relatives)
    for relative in relatives:
        assert (tmp_path / relative).read_bytes() == (b"old %d" % relatives.index(relative) if relative in refused
                                                      else _new(relative))
    assert not _temps(tmp_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_that_cannot_be_staged_stops_the_whole_batch(tmp_path: Path, workers: int) -> None:
    relatives = _repo(tmp_path, 100)
    relatives[55] = "secrets/missing-folder/f055.yaml"  # its temp file cannot be created
    written, failed = rewrite_batch(tmp_path, relatives, lambda r: (_new(r), None), workers=workers)
    assert written == []
    assert [path for path, _ in failed] == sorted(relatives)
    assert all(reason.startswith("not written: cannot write: No such file") for _, reason in failed)
    assert all((tmp_path / r).read_bytes() == b"old %d" % i for i, r in enumerate(relatives) if i != 55)
    assert not _temps(tmp_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_while_computing_changes_nothing_and_leaves_no_temp_file(tmp_path: Path, workers: int) -> None:
    relatives = _repo(tmp_path, 100)

    def compute(relative: str) -> tuple[bytes | None, str | None]:
        if relative.endswith("f090.yaml"):
            raise RuntimeError("a bug")
        return _new(relative), None

    with pytest.raises(RuntimeError, match="a bug"):
        rewrite_batch(tmp_path, relatives, compute, workers=workers)
    assert all((tmp_path / r).read_bytes() == b"old %d" % i for i, r in enumerate(relatives))
    assert not _temps(tmp_path)


def test_results_a_worker_staged_but_the_caller_never_read_are_removed_when_the_batch_stops(tmp_path: Path) -> None:
    """The caller fails while the worker's temp-file names still sit unread in its pipe: those go too."""
    import os
    import time

    relatives = _repo(tmp_path, 200)
    caller = os.getpid()

    def compute(relative: str) -> tuple[bytes | None, str | None]:
        if os.getpid() == caller:
            time.sleep(0.3)  # meanwhile the worker stages many files and sends their names
            raise RuntimeError("the caller fails")
        return _new(relative), None

    with pytest.raises(RuntimeError, match="the caller fails"):
        rewrite_batch(tmp_path, relatives, compute, workers=2)
    assert all((tmp_path / r).read_bytes() == b"old %d" % i for i, r in enumerate(relatives))
    assert not _temps(tmp_path)


def test_a_temp_file_left_by_a_dead_worker_is_replaced_not_left_beside(tmp_path: Path) -> None:
    """The caller stages again what a worker staged before dying: same name, new content, one temp file."""
    target = tmp_path / "secret.yaml"
    target.write_bytes(b"old")
    writer = fsutil.BatchWriter()
    first = writer.stage(target, b"from the worker that died", 7)
    again = writer.stage(target, b"from the caller", 7)
    assert again == first and Path(again).read_bytes() == b"from the caller"
    writer.staged(target, again)
    assert writer.finish() == ([str(target)], None)
    assert target.read_bytes() == b"from the caller" and not _temps(tmp_path)


def test_a_temp_file_a_dying_worker_never_reported_is_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker stages a file and dies before saying so; the caller's redo of that file declines it.
    The worker's temp file (named with the batch's token) is removed all the same."""
    import os

    relatives = _repo(tmp_path, 100)
    caller, died = os.getpid(), tmp_path / "died"
    real_stage = fsutil.BatchWriter.stage

    def stage_then_die(self, path, data, number):  # type: ignore[no-untyped-def]
        name = real_stage(self, path, data, number)
        if os.getpid() != caller:
            (tmp_path / "dying").write_text(str(number))
            os.replace(tmp_path / "dying", died)  # whole, or not yet there: the caller reads it meanwhile
            os._exit(9)
        return name

    def compute(relative: str) -> tuple[bytes | None, str | None]:
        if died.exists() and relative == relatives[int(died.read_text())]:
            return None, "declined on the second try"
        return _new(relative), None

    monkeypatch.setattr(fsutil.BatchWriter, "stage", stage_then_die)
    written, failed = rewrite_batch(tmp_path, relatives, compute, workers=2)
    assert died.exists(), "the worker staged nothing: the case under test did not happen"
    lost = relatives[int(died.read_text())]
    assert failed == [(lost, "declined on the second try")] and lost not in written
    assert not _temps(tmp_path)
