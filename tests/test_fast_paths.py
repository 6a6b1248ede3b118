"""The fast paths rekey and rotate take give exactly what the general code gives, and keep their checks.

- the YAML splice (one age list keeps, re-wraps, drops and appends entries) writes the same bytes
  as the general writer, over every sops file of the vectors and the real fleet;
- the YAML tree read without composing the `sops:` block has the same leaves;
- the batch write renames on threads and still reports exactly what it wrote when a rename fails;
- the cheap post-write check of a re-key and the read-back check of a rotation still catch bad results.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from sopsctl import fsutil, rotate, tree
from sopsctl.datakey import DataKeyError, check_written, recover, rewrap
from sopsctl.formats import read_metadata
from sopsctl.formats.write import list_change, replace_key_groups
from sopsctl.formats.write_yaml import splice_yaml
from sopsctl.model import FileKey
from sopsctl.workers import fork_map

from .formats.test_write import SOPS_FILES, _fake_blob, _fmt, _id

YAML_FILES = [p for p in SOPS_FILES if _fmt(p) == "yaml"]


def _changes(meta, rng: random.Random, count: int) -> list[tuple[tuple[FileKey, ...], ...]]:
    """Random one-group changes: entries kept, re-wrapped or dropped (file order kept), new ones appended."""
    out = []
    for _ in range(count):
        kept = []
        for entry in meta.groups[0]:
            roll = rng.random()
            if roll < 0.5:
                kept.append(entry)
            elif roll < 0.8:
                kept.append(entry._replace(enc=_fake_blob(f"{entry.recipient}{rng.random()}")))
        added = [FileKey("age", rng.choice([f"age1new{rng.randrange(10**6)}",
                                            f"ssh-ed25519 AAAAC3Nza{rng.randrange(1000)} x@y"]),
                         _fake_blob(str(rng.random()))) for _ in range(rng.randrange(3))]
        if kept or added:
            out.append((tuple(kept + added),))
    return out


def _fast_path_agrees(path: Path, fmt: str):  # type: ignore[no-untyped-def]
    """12 random one-group changes of the file: the fast path (given `old`) writes what the general writer
    writes, for each. Returns the file's bytes and metadata."""
    data = path.read_bytes()
    meta = read_metadata(data, fmt, full=True)
    assert meta is not None
    rng = random.Random(_id(path))
    for groups in _changes(meta, rng, 12) if len(meta.groups) == 1 else []:
        general = replace_key_groups(data, fmt, groups, None)
        assert replace_key_groups(data, fmt, groups, None, old=meta) == general
    return data, meta


@pytest.mark.parametrize("path", YAML_FILES, ids=_id)
def test_the_yaml_splice_writes_what_the_general_writer_writes(path: Path) -> None:
    data, meta = _fast_path_agrees(path, "yaml")
    # the several-group files (and any other change) go to the general writer unchanged
    assert replace_key_groups(data, "yaml", meta.groups, meta.threshold, old=meta) == data


DOTENV_FILES = [p for p in SOPS_FILES if _fmt(p) == "dotenv"]


@pytest.mark.parametrize("path", DOTENV_FILES, ids=_id)
def test_dotenv_fields_named_directly_are_what_the_general_writer_writes(path: Path) -> None:
    data, meta = _fast_path_agrees(path, "dotenv")
    # past ten entries the fields sort as text (list_10 before list_2): renumbering must agree
    more = tuple(FileKey("age", f"age1more{n}", _fake_blob(f"more{n}")) for n in range(11))
    big = replace_key_groups(data, "dotenv", (tuple(meta.groups[0]) + more,), None)
    big_meta = read_metadata(big, "dotenv", full=True)
    for groups in _changes(big_meta, random.Random(_id(path)), 30):
        assert replace_key_groups(big, "dotenv", groups, None, old=big_meta) == replace_key_groups(
            big, "dotenv", groups, None)


def test_the_splice_is_taken_for_files_sops_wrote() -> None:
    """Not a fallback every time: the common case (the 3.11 and 3.13 layouts, one group) is spliced."""
    spliced = 0
    for path in YAML_FILES:
        data = path.read_bytes()
        meta = read_metadata(data, "yaml", full=True)
        if meta is None or len(meta.groups) != 1:
            continue
        extra = FileKey("age", "age1spliced", _fake_blob("x"))
        change = list_change(meta, (tuple(meta.groups[0]) + (extra,),), None)
        spliced += change is not None and splice_yaml(data, *change) is not None
    assert spliced >= 10


def test_list_change_refuses_what_it_does_not_splice() -> None:
    a, b, c = (FileKey("age", f"age1{n}", _fake_blob(n)) for n in "abc")
    from sopsctl.model import SopsMetadata

    old = SopsMetadata(((a, b),), None, "flat", "2024-01-01T00:00:00Z", "m", "3.11.0")
    assert list_change(old, ((a, b, c),), None) == ((a, b), [(0, a), (1, b)], [c])
    assert list_change(old, ((b, a),), None) is None  # reordered
    assert list_change(old, ((c, a),), None) is None  # a new entry before a staying one
    assert list_change(old, ((a,), (b,)), 2) is None  # several groups
    assert list_change(old, ((a, FileKey("pgp", "FP", "x")),), None) is None


@pytest.mark.parametrize("path", YAML_FILES, ids=_id)
def test_yaml_leaves_without_composing_the_sops_block_are_the_same(path: Path, monkeypatch) -> None:
    data = path.read_bytes()
    meta = read_metadata(data, "yaml", full=True)
    rules = tree.Rules.from_options(meta.options if meta else ())
    try:
        fast = tree.leaves(data, "yaml", rules)
    except tree.TreeError as exc:
        fast = str(exc)
    monkeypatch.setattr(tree, "_sops_block_cut", lambda _data: None)
    try:
        whole = tree.leaves(data, "yaml", rules)
    except tree.TreeError as exc:
        whole = str(exc)
    assert fast == whole


def test_the_sops_block_is_cut_only_when_it_ends_a_single_plain_document() -> None:
    block = b"sops:\n    mac: x\n    version: 3.11.0\n"
    assert tree._sops_block_cut(b"a: 1\n" + block) == b"a: 1\n"
    assert tree._sops_block_cut(b"a: 1\n" + block + b"b: 2\n") is None
    assert tree._sops_block_cut(b"a: 1\n" + block + b"---\nc: 3\n") is None
    assert tree._sops_block_cut(b"a: 1\n" + block.replace(b"x", b"&anchor x")) is None
    assert tree.yaml_branches(block) == [tree.Branch()]


# --- the batch write ---------------------------------------------------------------------------------------


def _targets(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for index in range(count):
        path = tmp_path / f"d{index % 5}" / f"f{index}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"old %d" % index)
        path.chmod(0o640)
        paths.append(path)
    return paths


def _staged_here(paths: list[Path]) -> fsutil.BatchWriter:
    """A batch with `new N` staged for each path, in this process."""
    writer = fsutil.BatchWriter()
    for index, path in enumerate(paths):
        writer.staged(path, writer.stage(path, b"new %d" % index, index))
    return writer


def _batch(paths: list[Path]) -> tuple[list[str], tuple[str, str] | None]:
    """Stage `new N` for each path in this process, then finish the batch."""
    return _staged_here(paths).finish()


def test_a_big_batch_is_written_with_modes_kept_and_no_temp_left(tmp_path: Path) -> None:
    paths = _targets(tmp_path, 100)
    done, failure = _batch(paths)
    assert failure is None and done == [str(p) for p in paths]
    for index, path in enumerate(paths):
        assert path.read_bytes() == b"new %d" % index and path.stat().st_mode & 0o777 == 0o640
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


@pytest.mark.parametrize("fail_at", [1, 37, 100])
def test_a_rename_failing_in_a_big_batch_is_reported_exactly(tmp_path: Path, monkeypatch, fail_at: int) -> None:
    paths = _targets(tmp_path, 100)
    real = os.replace
    calls = []

    def replace(source, target):  # type: ignore[no-untyped-def]
        calls.append(target)
        if Path(target) == paths[fail_at - 1]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(source, target)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    done, failure = _batch(paths)
    monkeypatch.undo()
    assert failure is not None and failure[0] == str(paths[fail_at - 1]) and "No space" in failure[1]
    new = {str(p) for i, p in enumerate(paths) if p.read_bytes() == b"new %d" % i}
    old = {str(p) for i, p in enumerate(paths) if p.read_bytes() == b"old %d" % i}
    assert new == set(done) and len(new) + len(old) == len(paths)  # each file old or new; the report exact
    assert str(paths[fail_at - 1]) in old
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


def _open_descriptors() -> dict[str, int]:
    """This process's open descriptors and the inode each refers to."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.stat(f"/proc/self/fd/{fd}").st_ino
        except OSError:
            continue  # the descriptor listdir itself used
    return found


@pytest.mark.skipif(not hasattr(os, "O_PATH") or not os.path.isdir("/proc/self/fd"), reason="Linux only")
@pytest.mark.parametrize("fail_at", [None, 7, 45])
def test_each_replaced_file_is_held_across_its_rename_and_let_go_after(tmp_path: Path, monkeypatch,
                                                                       fail_at: int | None) -> None:
    """The old inode outlives its rename (freeing it, which may wait for the disk, happens on a close
    outside the directory lock), at most a window of them at once, and none is left open, failure or not."""
    monkeypatch.setattr(fsutil, "_HELD_AT_ONCE", 8)
    paths = _targets(tmp_path, 60)
    writer = _staged_here(paths)
    real, held_counts, missing = os.replace, [], []
    before = _open_descriptors()

    def replace(source, target):  # type: ignore[no-untyped-def]
        old, now = os.stat(target).st_ino, _open_descriptors()
        opened = {fd: inode for fd, inode in now.items() if fd not in before}
        held_counts.append(len(opened))
        if old not in opened.values():  # not an assert: the batch would report it as a rename failure
            missing.append(target)
        if fail_at is not None and Path(target) == paths[fail_at - 1]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(source, target)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    done, failure = writer.finish()
    monkeypatch.undo()
    assert len(done) == (60 if fail_at is None else fail_at - 1), failure
    assert (failure is None) == (fail_at is None)
    assert not missing, f"nothing held {missing[0]} while it was replaced"
    assert max(held_counts) <= 8 + 2  # the window, plus the one being replaced and the writer's own
    assert _open_descriptors() == before  # every hold let go, and the writer's directory handles closed
    assert all(p.read_bytes() == (b"new %d" % i if str(p) in done else b"old %d" % i) for i, p in enumerate(paths))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux only")
def test_threads_that_cannot_start_cut_no_batch_short(tmp_path: Path, monkeypatch) -> None:
    """Under a pids limit no release thread may start: every file is still renamed and every hold let go."""
    import threading

    paths = _targets(tmp_path, 600)
    writer = _staged_here(paths)
    real_start, started = threading.Thread.start, []

    def start(self):  # type: ignore[no-untyped-def]
        started.append(self)
        if len(started) > 2:
            raise RuntimeError("can't start new thread")
        return real_start(self)

    before = _open_descriptors()
    monkeypatch.setattr(threading.Thread, "start", start)
    done, failure = writer.finish()
    monkeypatch.undo()
    assert failure is None and done == [str(p) for p in paths] and len(started) > 2
    assert all(p.read_bytes() == b"new %d" % i for i, p in enumerate(paths))
    assert _open_descriptors() == before


def _staged_by_workers(paths: list[Path], workers: int = 2) -> fsutil.BatchWriter:
    """A batch whose temp files are created by forked workers (as rekey/rotate do), recorded here."""
    writer = fsutil.BatchWriter()

    def stage(numbered: tuple[int, Path]) -> tuple[str | None, str | None, int]:
        number, path = numbered
        time.sleep(0.001)  # so a worker starting late on a loaded machine still stages a share
        try:
            return writer.stage(path, b"new %d" % number, number), None, os.getpid()
        except OSError as exc:
            return None, f"cannot write: {exc.strerror}", os.getpid()

    stagers = set()
    for index, (temp, reason, pid) in fork_map(stage, list(enumerate(paths)), workers=workers, minimum=1):
        stagers.add(pid)
        if temp is None:
            writer.failed(paths[index], reason or "")
        else:
            writer.staged(paths[index], temp)
    assert workers == 1 or len(stagers) == workers  # the path under test: temp files made by other processes
    return writer


def test_a_batch_staged_by_workers_is_written_with_modes_kept_and_no_temp_left(tmp_path: Path) -> None:
    paths = _targets(tmp_path, 100)
    done, failure = _staged_by_workers(paths).finish()
    assert failure is None and sorted(done) == sorted(str(p) for p in paths)
    for index, path in enumerate(paths):
        assert path.read_bytes() == b"new %d" % index and path.stat().st_mode & 0o777 == 0o640
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


def test_a_temp_file_a_worker_cannot_write_stops_the_batch_before_any_rename(tmp_path: Path) -> None:
    paths = _targets(tmp_path, 100)
    paths[40] = tmp_path / "missing-folder" / "f40.yaml"
    done, failure = _staged_by_workers(paths).finish()
    assert done == [] and failure is not None and failure[0] == str(paths[40])
    assert all(p.read_bytes() == b"old %d" % i for i, p in enumerate(paths) if i != 40)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


def test_a_discarded_batch_leaves_every_file_old_and_no_temp(tmp_path: Path) -> None:
    paths = _targets(tmp_path, 100)
    writer = _staged_by_workers(paths)
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]  # staged: they exist
    writer.discard()
    assert writer.finish() == ([], None)
    assert all(p.read_bytes() == b"old %d" % i for i, p in enumerate(paths))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


def test_a_rename_failing_after_a_staged_batch_is_reported_exactly(tmp_path: Path, monkeypatch) -> None:
    paths = _targets(tmp_path, 100)
    real = os.replace

    def replace(source, target):  # type: ignore[no-untyped-def]
        if Path(target) == paths[63]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(source, target)

    writer = _staged_by_workers(paths)
    monkeypatch.setattr(fsutil.os, "replace", replace)  # renames happen in this process, after the workers
    done, failure = writer.finish()
    monkeypatch.undo()
    assert failure is not None and failure[0] == str(paths[63])
    new = {str(p) for i, p in enumerate(paths) if p.read_bytes() == b"new %d" % i}
    assert new == set(done) and str(paths[63]) not in new
    assert all(p.read_bytes() in (b"new %d" % i, b"old %d" % i) for i, p in enumerate(paths))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


# --- the checks that stay ----------------------------------------------------------------------------------


def _file(vectors: Path) -> tuple[bytes, object]:
    data = (vectors / "yaml" / "nested.enc.yaml").read_bytes()
    return data, read_metadata(data, "yaml", full=True)


def test_check_written_catches_entries_that_differ_from_the_plan(vectors: Path) -> None:
    from tests.test_rotate import ADMIN, identities

    data, meta = _file(vectors)
    ids = identities(vectors, ADMIN)
    recovered = recover(meta, ids)
    newcomer = FileKey("age", "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq")
    planned = rewrap(recovered, meta, (tuple(meta.groups[0]) + (newcomer,),), None)
    result = replace_key_groups(data, "yaml", planned, None, old=meta)
    written = read_metadata(result, "yaml", full=True)
    check_written(meta, planned, written, recovered, ids)  # passes without a second unwrap
    other = (tuple(e._replace(enc=_fake_blob("o")) if e.recipient == newcomer.recipient else e
                   for e in planned[0]),)
    with pytest.raises(DataKeyError, match="not the ones written"):
        check_written(meta, other, written, recovered, ids)
    dropped = (tuple(e for e in planned[0] if e.recipient != recovered.opened[0]),)
    without = read_metadata(replace_key_groups(data, "yaml", dropped, None, old=meta), "yaml", full=True)
    with pytest.raises(DataKeyError, match="do not give the data key back"):  # falls back to a real unwrap
        check_written(meta, dropped, without, recovered, ids)


def test_a_rotation_whose_result_does_not_read_back_is_refused(vectors: Path, monkeypatch) -> None:
    from tests.test_rotate import identities

    data, _ = _file(vectors)
    ids = identities(vectors)
    good = rotate.rotate_bytes(data, "yaml", ids)
    real = rotate._reencrypt
    monkeypatch.setattr(rotate, "_reencrypt", lambda *a, **k: real(*a, **k).replace("type:", "type: "))
    with pytest.raises(rotate.RotateError):
        rotate.rotate_bytes(data, "yaml", ids)
    monkeypatch.undo()
    real_replace = rotate._replace_lastmodified
    monkeypatch.setattr(rotate, "_replace_lastmodified", lambda d, o, n: real_replace(d, o, n).replace(
        n.encode(), b"2001-01-01T00:00:00Z"))
    with pytest.raises(rotate.RotateError, match="lastmodified or mac"):
        rotate.rotate_bytes(data, "yaml", ids)
    assert good != data


def test_an_exception_during_the_renames_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    paths = _targets(tmp_path, 100)
    real, calls = os.replace, []

    def replace(source, target):  # type: ignore[no-untyped-def]
        calls.append(target)
        if len(calls) == 30:
            raise MemoryError("as if the interpreter failed mid-batch")
        return real(source, target)

    writer = _staged_here(paths)
    monkeypatch.setattr(fsutil.os, "replace", replace)
    with pytest.raises(MemoryError):
        writer.finish()
    monkeypatch.undo()
    assert all(p.read_bytes() in (b"new %d" % i, b"old %d" % i) for i, p in enumerate(paths))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks here")
def test_ctrl_c_during_sync_and_renames_waits_for_them(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C pressed once the renames are under way is raised after the last one: every file is new,
    no temp file stays; a batch is never left half-renamed by a key press."""
    paths = _targets(tmp_path, 100)
    real_sync = fsutil._sync_filesystems

    def sync_then_ctrl_c(handles: dict[int, int]) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        real_sync(handles)

    writer = _staged_here(paths)
    monkeypatch.setattr(fsutil, "_sync_filesystems", sync_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        writer.finish()
    monkeypatch.undo()
    assert all(p.read_bytes() == b"new %d" % i for i, p in enumerate(paths))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux's")
def test_a_batch_is_made_durable_with_syncfs_not_sync(tmp_path: Path, monkeypatch) -> None:
    """sync(2) reports no writeback error; the batch uses syncfs(2), which does (os.sync here fails)."""
    paths = _targets(tmp_path, 20)

    def no_sync() -> None:
        raise AssertionError("os.sync was used")

    monkeypatch.setattr(fsutil.os, "sync", no_sync)
    assert _batch(paths) == ([str(p) for p in paths], None)


def test_a_writeback_error_stops_the_batch_before_any_rename(tmp_path: Path, monkeypatch) -> None:
    paths = _targets(tmp_path, 20)

    def failed_writeback(handles: dict[int, int]) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fsutil, "_sync_filesystems", failed_writeback)
    done, failure = _batch(paths)
    assert done == [] and failure is not None and "Input/output error" in failure[1]
    assert all(p.read_bytes() == b"old %d" % i for i, p in enumerate(paths))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(fsutil.TEMP_SUFFIX)]
