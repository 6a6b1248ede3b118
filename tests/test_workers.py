"""workers.fork_map: every item done exactly once, on several processes, whatever happens to a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl import workers
from sopsctl.workers import fork_map

LINUX = sys.platform.startswith("linux")


def _children() -> set[int]:
    """This process's live children (Linux /proc), zombies included: a reaped worker is gone from here."""
    path = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return {int(pid) for pid in path.read_text().split()} if path.exists() else set()


def _busy(item: int) -> tuple[int, int]:
    sum(range(3_000))  # CPU work, so every process gets a share
    return item * item, os.getpid()


@settings(max_examples=25, deadline=None)
@given(items=st.lists(st.integers(-10**6, 10**6), max_size=300), processes=st.integers(1, 4))
def test_every_item_is_done_exactly_once_with_its_own_result(items: list[int], processes: int) -> None:
    seen = {}
    for index, (square, _) in fork_map(_busy, items, workers=processes, minimum=1):
        assert index not in seen
        seen[index] = square
    assert seen == {i: x * x for i, x in enumerate(items)}


def _slow(item: int) -> tuple[int, int]:
    time.sleep(0.001)  # long enough that a worker starting late on a loaded machine still gets a share
    return item, os.getpid()


def test_the_work_is_shared_between_processes_and_the_caller_takes_part() -> None:
    before = _children()
    pids = [pid for _, (_, pid) in fork_map(_slow, list(range(400)), workers=2)]
    assert os.getpid() in pids and len(set(pids)) == 2
    assert min(pids.count(pid) for pid in set(pids)) >= 40  # a shared queue: neither does almost all
    assert _children() <= before  # the worker is reaped


_loaded: list[int] = []  # what a first use loads (a lazy import, a cache), here a pid


def _loads_on_first_use(item: int) -> tuple[int, bool]:
    """(this process, whether what the work loads on first use was already there)."""
    ready = bool(_loaded)
    if not ready:
        _loaded.append(os.getpid())
    time.sleep(0.001)  # long enough that the worker gets a share
    return os.getpid(), ready


def test_workers_inherit_what_the_first_items_loaded() -> None:
    """The caller does a first chunk before it forks: a worker never loads again what the caller did."""
    _loaded.clear()
    results = dict(fork_map(_loads_on_first_use, list(range(400)), workers=2))
    assert _loaded == [os.getpid()]
    assert results[0] == (os.getpid(), False)  # the very first item, in the caller, loaded it
    worker_items = [ready for pid, ready in results.values() if pid != os.getpid()]
    assert worker_items and all(worker_items)  # every worker found it loaded


def test_short_batches_and_one_process_stay_in_the_caller() -> None:
    assert {pid for _, (_, pid) in fork_map(_busy, list(range(workers.FORK_MINIMUM - 1)), workers=2)} \
        == {os.getpid()}
    assert {pid for _, (_, pid) in fork_map(_busy, list(range(500)), workers=1)} == {os.getpid()}


def test_what_a_dying_worker_took_is_done_by_the_caller() -> None:
    caller = os.getpid()

    def dies_in_a_worker(item: int) -> tuple[int, int]:
        if os.getpid() != caller and item % 7 == 3:
            os._exit(9)  # as if killed mid-batch
        return _busy(item)

    results = dict(fork_map(dies_in_a_worker, list(range(300)), workers=2))
    assert {i: square for i, (square, _) in results.items()} == {i: i * i for i in range(300)}
    assert results[3][1] == caller  # the item the worker died on was computed again here


def test_an_error_in_a_worker_surfaces_in_the_caller_as_it_would_without_workers() -> None:
    def fails_on_13(item: int) -> int:
        if item == 13:
            raise ValueError("item 13 is bad")
        return item

    before = _children()
    with pytest.raises(ValueError, match="item 13"):
        list(fork_map(fails_on_13, list(range(200)), workers=2))
    assert _children() <= before


def test_a_result_larger_than_a_pipe_comes_back_whole() -> None:
    def big(item: int) -> bytes:
        return bytes([item % 256]) * (300_000 + item)

    results = dict(fork_map(big, list(range(80)), workers=2, minimum=1))
    assert all(results[i] == bytes([i % 256]) * (300_000 + i) for i in range(80))


def test_more_items_than_the_queue_has_entries_are_all_done() -> None:
    count = workers._QUEUE_ENTRIES * workers._CHUNK + 1_001  # chunks grow so the queue still fits a pipe
    indexes = [index for index, _ in fork_map(abs, list(range(count)), workers=2)]
    assert sorted(indexes) == list(range(count))


def test_a_caller_that_stops_early_leaves_no_worker_behind() -> None:
    caller = os.getpid()

    def slow(item: int) -> int:
        time.sleep(0.001 if os.getpid() == caller else 120)  # the worker is deep in one long item
        return item

    before = _children()
    results = fork_map(slow, list(range(2_000)), workers=2)
    for _ in range(10):
        next(results)
    assert _children() - before or not LINUX  # the worker is running
    started = time.monotonic()
    results.close()  # the generator's clean-up: kill and reap, not wait for the item to end
    assert time.monotonic() - started < 60 and _children() <= before


@pytest.mark.skipif(not LINUX, reason="workers die with their parent through a Linux prctl")
def test_workers_die_with_a_killed_caller(tmp_path: Path) -> None:
    script = tmp_path / "caller.py"
    pids = tmp_path / "pids"
    script.write_text(
        "import os, sys, time\n"
        "from sopsctl.workers import fork_map\n"
        "caller = os.getpid()\n"
        "def slow(item):\n"
        f"    open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "    time.sleep(0.05 if os.getpid() == caller else 120)  # a worker busy with one long item\n"
        "    return item\n"
        "for _ in fork_map(slow, list(range(10_000)), workers=2):\n"
        "    pass\n")
    caller = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = set(pids.read_text().split()) if pids.exists() else set()
        if len(seen) >= 2:
            break
        time.sleep(0.02)
    seen.discard(str(caller.pid))
    assert seen, "no worker started"
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    worker = int(seen.pop())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists() \
            and "Z" not in Path(f"/proc/{worker}/stat").read_text().split()[2]:
        time.sleep(0.02)
    assert not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]


def _with_alarm(seconds: int):  # type: ignore[no-untyped-def]
    """A test that would hang fails instead (SIGALRM raises in the main thread)."""
    def expired(*_: object) -> None:
        raise TimeoutError("fork_map hung")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)


@pytest.mark.skipif(not LINUX, reason="F_SETPIPE_SZ is Linux's")
@pytest.mark.parametrize("entries", [workers._QUEUE_ENTRIES, 100_000])
def test_one_page_pipes_neither_hang_nor_lose_an_item(monkeypatch: pytest.MonkeyPatch, entries: int) -> None:
    """A user over the pipe quota gets one-page pipes: the queue never blocks, and chunk starts that
    do not fit (100,000 entries allowed: far more than a page) are done by the caller at the end."""
    import fcntl

    real_pipe = os.pipe

    def small_pipe() -> tuple[int, int]:
        read, write = real_pipe()
        fcntl.fcntl(write, 1031, 4096)  # F_SETPIPE_SZ
        return read, write

    monkeypatch.setattr(workers.os, "pipe", small_pipe)
    monkeypatch.setattr(workers, "_QUEUE_ENTRIES", entries)
    _with_alarm(60)
    try:
        indexes = [index for index, _ in fork_map(abs, list(range(30_000)), workers=2)]
    finally:
        signal.alarm(0)
    assert sorted(indexes) == list(range(30_000))


def test_descriptors_past_1023_are_fine() -> None:
    """select() stops at descriptor 1023; a caller with many files open still gets its results."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1_200:
        pytest.skip("cannot open 1,100 descriptors here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1_200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1_100)]
    try:
        results = dict(fork_map(_busy, list(range(200)), workers=2))
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert {i: square for i, (square, _) in results.items()} == {i: i * i for i in range(200)}


def test_ctrl_c_just_after_a_fork_leaves_no_worker_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT between fork() and the caller's bookkeeping is held until the worker is known, so the
    clean-up stops it; without that the worker would run on, unknown to anyone."""
    real_fork = os.fork

    def fork_then_ctrl_c() -> int:
        pid = real_fork()
        if pid:
            os.kill(os.getpid(), signal.SIGINT)  # lands in the window
        return pid

    monkeypatch.setattr(workers.os, "fork", fork_then_ctrl_c)
    before = _children()
    with pytest.raises(KeyboardInterrupt):
        list(fork_map(_slow, list(range(400)), workers=2))
    time.sleep(0.05)
    assert _children() <= before
