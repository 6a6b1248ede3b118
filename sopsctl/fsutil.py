"""The one atomic write helper, and finding the repository root: every file sopsctl writes goes through here."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from .errors import InputError, RootNotFoundError

T = TypeVar("T")

CONFIG_NAME = ".sops.yaml"
TEMP_SUFFIX = ".sopsctl-tmp"  # our temp files; one a killed run left behind is never a secret
DEFAULT_POLICY_DIR = "policies"


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse O_RDONLY fsync on dirs.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path | str, data: bytes, *, mode: int | None = None, exclusive: bool = False) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one.

    The temp file lives in the same directory (same filesystem, so the rename is atomic), is
    fsynced, gets the old file's mode (or `mode`, or 0644), then replaces the target. With
    `exclusive`, an existing target is an error and is never replaced (used for key files).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    if exclusive and path.exists():
        raise InputError(f"{path}: already exists; refusing to overwrite it")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=directory)
    except FileNotFoundError:
        raise InputError(f"{path}: its directory does not exist") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied writing it") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600: the content is never readable by others before the chmod.
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if exclusive:
            try:
                os.link(tmp, path)  # fails if the target appeared meanwhile
            except FileExistsError:
                raise InputError(f"{path}: already exists; refusing to overwrite it") from None
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError):  # a full disk, a read-only target…: one clear line, exit 3
            raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
        raise
    _fsync_dir(directory)


def read_bytes(path: Path | str, *, what: str = "file", limit: int = 64 * 1024 * 1024) -> bytes:
    """Read an input file, turning OS errors into one clear InputError line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{path}: {what} is {size} bytes, over the {limit}-byte limit")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a {what}") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied reading {what}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def find_root(start: Path, explicit: Path | None = None) -> Path:
    """The repo root: `--root`, else the nearest directory holding .sops.yaml walking up like sops.

    A repository that has no .sops.yaml yet (first run) is found by its `policies/` folder.
    """
    if explicit is not None:
        if not explicit.is_dir():
            raise InputError(f"{explicit}: --root is not a directory")
        return explicit.resolve()
    start = start.resolve()
    candidates = [start, *start.parents]
    for directory in candidates:
        if (directory / CONFIG_NAME).is_file():
            return directory
    for directory in candidates:
        if (directory / DEFAULT_POLICY_DIR).is_dir():
            return directory
    raise RootNotFoundError.from_start(str(start))


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def block_stop_signals() -> set[signal.Signals] | None:
    """Hold Ctrl-C (SIGINT) and SIGTERM pending in this thread (and threads it starts); the mask to
    give `unblock` (None where signal masks do not exist)."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def unblock(previous: set[signal.Signals] | None) -> None:
    """Restore the mask block_stop_signals changed: a signal that came meanwhile is delivered now."""
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def write_all(fd: int, data: bytes) -> None:
    """All of `data` to `fd` (os.write may write less than asked, to a pipe or a full disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_temp(path: Path, data: bytes, tmp_name: str) -> str:
    """`data` in a new temp file (0600 while written, then the target's mode); the name actually used."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp_name, flags, 0o600)
    except FileExistsError:
        # The name holds this batch's random token: a worker that died after creating it left it (the
        # file is done again here). Removed, never written through (it could be a link); should it
        # reappear, mkstemp finds a free name.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        try:
            fd = os.open(tmp_name, flags, 0o600)
        except FileExistsError:  # the name keeps its batch token, so BatchWriter.sweep finds it too
            prefix = os.path.basename(tmp_name).removesuffix(TEMP_SUFFIX) + "-"
            fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return tmp_name


class BatchWriter:
    """Replace many files, each atomically, with one sync for the batch instead of one per file.

    Each new content is staged in a temp file beside its target (mode 0600 until written, then the
    target's); `finish` makes them all durable with one syncfs per filesystem, renames each over its target
    and syncs the directories. A failure stops the batch: no rename starts after it, so every file
    is either new (renamed) or untouched (its temp file is removed), and `finish` names the paths
    written and the first failure. The renames run in order, each replaced file held open until a
    few threads let go of them together (see _rename_all: freeing a file may wait for the disk).

    `stage` only creates a temp file, so the process that computed a result can stage it
    (workers.fork_map: creating a file is kernel CPU, 0.03-0.5 ms on this ext4, which then runs on
    that worker's core instead of queueing behind the caller); `staged` records it here. The sync
    and every rename stay in the caller, after all temp files exist: a recorded failure means no
    rename starts and every temp file is removed.
    """

    def __init__(self, directories: Iterable[Path] = ()) -> None:
        """`directories`: where the batch will write, known before it starts, so that a writeback error
        on their filesystems from then on is reported by finish (see _sync_filesystems)."""
        import secrets

        self._token = secrets.token_hex(4)
        self._staged: list[tuple[str, Path]] = []  # (temp, target), in the order recorded
        self._failure: tuple[str, str] | None = None
        self._filesystems: dict[int, int] = {}  # device -> an open directory on it
        _filesystem_handles(directories, self._filesystems)

    def stage(self, path: Path, data: bytes, number: int) -> str:
        """`data` in a new temp file for `path` (number: unique in the batch); its name. Raises OSError.

        Safe in a forked worker: it reads nothing of this writer but its token."""
        return _write_temp(path, data, self._temp_name(path, number))

    def _temp_name(self, path: Path, number: int) -> str:
        return os.path.join(path.parent, f".{path.name}.{self._token}{number:x}{TEMP_SUFFIX}")

    def staged(self, path: Path, temp: str) -> None:
        self._staged.append((temp, path))

    def failed(self, path: Path, reason: str) -> None:
        """A result that could not be staged: the batch stops, nothing will be renamed."""
        if self._failure is None:
            self._failure = (str(path), reason)

    def discard(self) -> None:
        """Remove every recorded temp file (the batch is abandoned): no target changes."""
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged = []

    def sweep(self, directories: Iterable[Path]) -> None:
        """Remove every temp file of this batch in `directories`, recorded or not: one a worker staged
        and never reported (it died, or the batch stopped with its result unread). They carry the
        batch's random token, so nothing else is touched."""
        marker = f".{self._token}"
        for directory in set(directories):
            with contextlib.suppress(OSError), os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and marker in entry.name:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    def finish(self) -> tuple[list[str], tuple[str, str] | None]:
        """Sync and rename: (targets written, in the order staged; (path, reason) of the first failure).

        Ctrl-C (SIGINT) and SIGTERM wait until the renames and the clean-up are done: a batch is
        interrupted before its renames (nothing changes) or after them, never half-renamed by a key
        press. Temp files not renamed are removed whatever happens."""
        temps, failure = self._staged, self._failure
        done: list[str] = []
        masked = block_stop_signals()
        try:
            if failure is None and temps:
                try:
                    _filesystem_handles({path.parent for _, path in temps}, self._filesystems)
                    _sync_filesystems(self._filesystems)
                except OSError as exc:
                    failure = (str(temps[-1][1]), f"cannot write: {exc.strerror or exc}")
            if failure is None and temps:
                done, failure = _rename_all(temps)
        finally:
            renamed = set(done)
            self._staged = [(tmp, path) for tmp, path in temps if str(path) not in renamed]
            self.discard()  # what was not renamed (a failure stops the batch)
            _sync_dirs({path.parent for _, path in temps})
            for fd in self._filesystems.values():
                os.close(fd)
            self._filesystems = {}
            unblock(masked)  # a Ctrl-C pressed meanwhile is raised here, once every file is old or new
        return done, failure


def _filesystem_handles(directories: Iterable[Path], handles: dict[int, int]) -> None:
    """Add to `handles` (device -> open directory) one directory of each filesystem in `directories`."""
    for directory in sorted(set(directories)):
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            continue  # staging there fails on its own, with a clear line
        device = os.fstat(fd).st_dev
        if device in handles:
            os.close(fd)
        else:
            handles[device] = fd


def _sync_filesystems(handles: dict[int, int]) -> None:
    """Make everything written to these filesystems durable; OSError (EIO, ENOSPC) when writing any of it
    back failed since their handle was opened.

    Linux's syncfs(2) reports such a writeback error (since 5.8), which sync(2) never does: a temp
    file whose blocks failed to reach the disk stops the batch before any rename. It syncs only those
    filesystems too. Elsewhere, sync(2)."""
    syncfs = _syncfs()
    if syncfs is None or not handles:
        os.sync()
        return
    import ctypes

    for fd in handles.values():
        if syncfs(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))


def _syncfs():  # type: ignore[no-untyped-def]
    """libc's syncfs, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_RELEASE_THREADS = 8  # let go of replaced files (and fsync directories) this many at a time
_HELD_AT_ONCE = 256  # replaced files held open at once: well under any descriptor limit


def _rename_all(temps: list[tuple[str, Path]]) -> tuple[list[str], tuple[str, str] | None]:
    """Rename each temp over its target, in order; after a failure no further rename starts.

    Each target is held open (O_PATH: no read, no side effect) across its rename and let go of
    afterwards, on a few threads. The last reference to a replaced file is what frees its inode and
    blocks, and on a filesystem mounted with `discard` and no journal (this machine's ext4) that
    waits for the disk: when the rename drops it, the wait is inside the directory's lock (0.1 ms a
    file, every rename of the batch queued behind it); when a close drops it, outside any lock and
    concurrently (1,000 files: 0.09-0.11 s before, 0.05 s now).
    """
    done: list[str] = []
    failure: tuple[str, str] | None = None
    held: list[int] = []
    try:
        for tmp, path in temps:
            hold = _hold(path)
            try:
                os.replace(tmp, path)
            except OSError as exc:
                failure = (str(path), f"cannot replace it: {exc.strerror or exc}")
                break
            finally:
                if hold is not None:
                    held.append(hold)
            done.append(str(path))
            if len(held) >= _HELD_AT_ONCE:
                window, held = held, []
                _release(window)
    finally:
        _release(held)
    return done, failure


def _hold(path: Path) -> int | None:
    """A reference to the file at `path` that keeps its inode alive, or None (missing, or no O_PATH here)."""
    flag = getattr(os, "O_PATH", None)
    if flag is None:
        return None
    try:
        return os.open(path, flag | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # the rename says what is wrong, if anything


def _release(descriptors: list[int]) -> None:
    """Close every descriptor; never raises, so a batch's renames are never cut short by it."""
    def close(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)

    _on_threads(close, descriptors, at_least=2 * _RELEASE_THREADS)


def _sync_dirs(directories: set[Path]) -> None:
    """Make the renames durable: one fsync per directory, concurrent (they share journal commits)."""
    _on_threads(_fsync_dir, sorted(directories), at_least=4)


def _on_threads(work: Callable[[T], None], items: Sequence[T], *, at_least: int) -> None:
    """work(item) for every item, a share on each of a few threads (the work waits on the disk, not the
    CPU); fewer than `at_least` items, here. `work` must not raise. A share whose thread cannot start
    (a pids limit) is done here, so this never raises either and a batch is never left half-done."""
    import threading

    if len(items) < at_least:
        for item in items:
            work(item)
        return

    def do_share(share: Sequence[T]) -> None:
        for item in share:
            work(item)

    threads = []
    for share in (items[start::_RELEASE_THREADS] for start in range(min(_RELEASE_THREADS, len(items)))):
        thread = threading.Thread(target=do_share, args=(share,), daemon=True)
        try:
            thread.start()
        except RuntimeError:
            do_share(share)
            continue
        threads.append(thread)
    for thread in threads:
        thread.join()


LOCK_NAME = ".sopsctl.lock"


@contextlib.contextmanager
def repo_lock(root: Path):  # type: ignore[no-untyped-def]
    """One writer per repository: a second sopsctl that would change files stops with a clear line.

    An advisory flock on `<root>/.sopsctl.lock` (the kernel releases it when the process dies, so a
    killed run never leaves the repository locked); the file records the holder's pid for the message.
    """
    import fcntl

    path = root / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(f"{path}: cannot create the lock file: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise InputError(f"another sopsctl (pid {holder}) is changing this repository; wait for it to "
                             "finish, then run this again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
