"""Per-file work on every core: forked workers compute results for shares of a batch; the caller keeps every write.

A batch of rotations is CPU work in Python (parse, decrypt, re-encrypt, check) that one
interpreter runs on one core. `fork_map` forks a worker per further core; each worker and
the caller take chunks of the batch from one shared queue (a pipe of chunk numbers, so a
slow share never holds the others up) and the workers send their results back through a
pipe of their own. Workers only compute: they never write a file, and they die with the
caller. A worker that fails for any reason costs nothing but time: whatever it did not
send back is computed again in the caller, where an error surfaces exactly as it would
without workers.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from .fsutil import block_stop_signals, unblock, write_all

Item = TypeVar("Item")
Result = TypeVar("Result")

FORK_MINIMUM = 64  # items: below this, starting workers costs more than it saves
_CHUNK = 8  # items taken at a time: few queue reads, and shares end within a few files of each other
_QUEUE_ENTRIES = 1_024  # 4-byte chunk starts: 4 KiB, one page, the least a pipe holds (Linux gives a user
# over its pipe quota one-page pipes), so the queue is written before a worker starts; the write does
# not block even so, and whatever did not fit is done by the caller at the end


def available_cores() -> int:
    """The cores this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's
    `--cpus`), not the host's count."""
    cores = os.cpu_count() or 1
    with contextlib.suppress(AttributeError, OSError):
        cores = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/cpu.max") as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    return cores


def fork_map(function: Callable[[Item], Result], items: Sequence[Item], *, workers: int | None = None,
             minimum: int = FORK_MINIMUM) -> Iterator[tuple[int, Result]]:
    """(index, function(item)) for every item, in the order they are done.

    `workers` is the number of processes working, the caller included (default: the cores
    available). Results must pickle; `function` must not write files or hold locks the caller
    needs (a worker is a fork: it shares the caller's memory, not its later changes). Without
    fork, or for short batches, this is a plain loop in the caller.
    """
    count = len(items)
    processes = min(workers or available_cores(), max(1, count // _CHUNK))
    if processes < 2 or count < minimum or not hasattr(os, "fork"):
        for index, item in enumerate(items):
            yield index, function(item)
        return
    chunk = max(_CHUNK, -(-count // _QUEUE_ENTRIES))
    queue_r, queue_w = os.pipe()
    try:
        # Every chunk start is in the pipe before anyone reads: a reader that finds it empty knows
        # the batch is all taken (the write end is closed, so it reads end-of-file, never blocks).
        # Never blocking: starts that do not fit (or a cut entry) are never taken, so the caller's
        # last pass does them.
        os.set_blocking(queue_w, False)
        with contextlib.suppress(BlockingIOError):
            os.write(queue_w, b"".join(start.to_bytes(4, "little") for start in range(0, count, chunk)))
    finally:
        os.close(queue_w)
    pool = _Pool(function, items, chunk, queue_r)
    try:
        # The caller does one chunk before anyone forks: whatever the work loads on first use (lazy
        # imports, caches: 15-20 ms before a first rotation) the workers then inherit, not load again.
        yield from pool.run_first_chunk()
        for _ in range(processes - 1):
            pool.start_worker()
        yield from pool.run()
    finally:
        pool.close()


class _Pool:
    """The caller's side of one fork_map: its workers' pipes, what has come back, and the clean-up."""

    def __init__(self, function: Callable[[Item], Result], items: Sequence[Item], chunk: int, queue: int) -> None:
        self.function, self.items, self.chunk, self.queue = function, items, chunk, queue
        self.workers: dict[int, int] = {}  # result pipe -> pid
        self.buffers: dict[int, bytearray] = {}
        self.received: set[int] = set()
        self.selector = selectors.DefaultSelector()  # epoll/kqueue: any descriptor number (select() stops at 1023)

    def start_worker(self) -> None:
        results_r, results_w = os.pipe()
        parent = os.getpid()
        # Ctrl-C between the fork and the bookkeeping would leave a worker nobody stops (in the caller)
        # or run the caller's clean-up in the worker: the stop signals wait until both sides are set.
        masked = block_stop_signals()
        try:
            pid = os.fork()
        except OSError:  # no process to spare: the others (and the caller) do its share
            unblock(masked)
            os.close(results_r)
            os.close(results_w)
            return
        if pid == 0:
            code = 1
            try:
                unblock(masked)
                os.close(results_r)
                for other in self.workers:  # the read ends of earlier workers' pipes are not ours
                    os.close(other)
                _die_with_parent(parent)
                self._work(results_w)
                code = 0
            finally:
                os._exit(code)  # never the caller's exit handlers, buffered output or finally blocks
        try:
            os.close(results_w)
            os.set_blocking(results_r, False)
            self.workers[results_r] = pid
            self.buffers[results_r] = bytearray()
            self.selector.register(results_r, selectors.EVENT_READ)
        finally:
            unblock(masked)

    def _work(self, results: int) -> None:
        """A worker's loop: take chunks until the queue is empty, send back each (index, result)."""
        for index in self._taken():
            message = pickle.dumps((index, self.function(self.items[index])), pickle.HIGHEST_PROTOCOL)
            write_all(results, len(message).to_bytes(4, "little") + message)

    def _taken(self, chunks: int | None = None) -> Iterator[int]:
        """The indexes of each chunk this process takes from the shared queue (4-byte reads are atomic),
        until it is empty or `chunks` were taken."""
        while chunks is None or chunks > 0:
            head = os.read(self.queue, 4)
            if len(head) < 4:
                return
            start = int.from_bytes(head, "little")
            yield from range(start, min(start + self.chunk, len(self.items)))
            chunks = None if chunks is None else chunks - 1

    def run_first_chunk(self) -> Iterator[tuple[int, Result]]:
        """The caller's first chunk, done before any worker exists (see fork_map)."""
        for index in self._taken(chunks=1):
            self.received.add(index)
            yield index, self.function(self.items[index])

    def run(self) -> Iterator[tuple[int, Result]]:
        for index in self._taken():  # the caller works too, and collects between its own items
            self.received.add(index)
            yield index, self.function(self.items[index])
            yield from self._collect(wait=False)
        while self.workers:
            yield from self._collect(wait=True)
        for index in range(len(self.items)):  # whatever a failed worker took and did not send back
            if index not in self.received:
                yield index, self.function(self.items[index])

    def _collect(self, *, wait: bool) -> Iterator[tuple[int, Result]]:
        """Results that have arrived (with `wait`, at least one pipe's worth, or a worker's end)."""
        ready = [key.fd for key, _ in self.selector.select()] if wait else list(self.workers)
        for fd in ready:
            ended = False
            while True:
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:
                    break
                if not data:
                    ended = True
                    break
                self.buffers[fd] += data
            yield from self._messages(fd)
            if ended:
                self._reap(fd)

    def _messages(self, fd: int) -> Iterator[tuple[int, Result]]:
        buffer = self.buffers[fd]
        offset = 0
        while len(buffer) - offset >= 4:
            size = int.from_bytes(buffer[offset:offset + 4], "little")
            if len(buffer) - offset - 4 < size:
                break
            index, result = pickle.loads(buffer[offset + 4:offset + 4 + size])
            offset += 4 + size
            self.received.add(index)
            yield index, result
        del buffer[:offset]

    def _reap(self, fd: int) -> None:
        pid = self.workers.pop(fd)
        self.buffers.pop(fd)  # a partial message from a worker that died mid-write is dropped
        self.selector.unregister(fd)
        os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def close(self) -> None:
        """Stop and reap every worker still running (the caller stopped early, or failed)."""
        for fd, pid in list(self.workers.items()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._reap(fd)
        self.selector.close()
        os.close(self.queue)


def _die_with_parent(parent: int) -> None:
    """A child dies with its parent (Linux): an orphan would keep the repository lock it inherited."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(1)
