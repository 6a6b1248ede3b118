"""Faults against the real sops: SIGKILL at random moments of generate, host add, rotate; a full disk for rekey, rotate, generate.

The rekey SIGKILL and failing-write tests live in test_rekey_with_sops.py; this module reuses its fleet
and helpers for the other writers. After every fault each file is byte for byte its old or its new
self, every secret decrypts with the real sops to its original plaintext, and running the same
command again finishes the job (or says it is already done).
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_rekey_with_sops import (  # noqa: F401  (base is a fixture)
    HOST,
    REKEYED,
    SECRETS,
    R,
    RekeyFleet,
    _kill_at,
    add_bulk,
    base,
    decrypts,
    expect,
    host_add,
    no_temp_files,
    recovery,
    sopsctl,
)

pytestmark = pytest.mark.interop

RNG = random.Random(20261128)


@pytest.fixture
def rf(base: RekeyFleet, tmp_path: Path) -> RekeyFleet:  # noqa: F811
    return base.copy(tmp_path / "fleet")


def cli(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sopsctl", *args, "--root", str(root)]


def kill_runs(rf: RekeyFleet, command: list[str], env: dict[str, str], watch: list[Path], rounds: int,
              check, renames: tuple[float, ...] = (0.0,)) -> list[tuple[str, float, int]]:  # type: ignore[no-untyped-def]
    """Start `command` `rounds` times, SIGKILL it at a random moment, then `check()` the repo each time.

    The last rounds kill it `renames` seconds after its first rename; the others at random times."""
    start = time.monotonic()
    subprocess.run(command, env=env, cwd=rf.root, capture_output=True, timeout=300)  # to time one whole run
    duration = time.monotonic() - start  # the timing run changed the files: each round's reset puts them back
    outcomes = []
    moments = [("start", RNG.uniform(0.05, 0.95) * duration) for _ in range(rounds - 1 - len(renames))]
    moments += [("temps", RNG.uniform(0, 0.003)), *(("renames", delay) for delay in renames)]
    for moment, delay in moments:
        check.reset()
        process = subprocess.Popen(command, env=env, cwd=rf.root, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        _kill_at(process, moment, delay, watch)
        code = process.wait(timeout=120)
        outcomes.append((moment, round(delay, 3), code))
        check()
    return outcomes


class OldOrNew:
    """Files that must each be byte-equal to their old or their new version; `reset` puts the old back."""

    def __init__(self, root: Path, old: dict[str, bytes], new: dict[str, bytes]) -> None:
        self.root, self.old, self.new = root, old, new
        self.seen: set[str] = set()

    def reset(self) -> None:
        for path, data in self.old.items():
            (self.root / path).write_bytes(data)

    def __call__(self) -> None:
        for path in self.old:
            data = (self.root / path).read_bytes()
            assert data in (self.old[path], self.new[path]), f"{path}: neither old nor new after SIGKILL (torn)"
            self.seen.add("new" if data == self.new[path] != self.old[path] else "old")


def test_sigkill_during_generate_leaves_the_config_old_or_new(rf: RekeyFleet) -> None:
    old = {".sops.yaml": rf.read(".sops.yaml")}
    expect(host_add(rf), 0, "host add")  # the policy gains a host; then put the old config back: it is stale
    new = {".sops.yaml": rf.read(".sops.yaml")}
    (rf.root / ".sops.yaml").write_bytes(old[".sops.yaml"])
    assert new != old
    check = OldOrNew(rf.root, old, new)
    outcomes = kill_runs(rf, cli(rf.root, "generate"), rf.fleet.env(), [rf.root], 8, check)
    assert any(code == -signal.SIGKILL for *_, code in outcomes), outcomes
    # A kill between the temp file and its rename may leave one: hidden, named for its target, never read.
    assert all(Path(p).name.startswith("..sops.yaml.") for p in no_temp_files(rf.root)), no_temp_files(rf.root)
    expect(sopsctl(rf.root, "generate"), 0, "generate again")
    assert rf.read(".sops.yaml") == new[".sops.yaml"]
    expect(sopsctl(rf.root, "generate", "--check"), 0, "generate --check after the rerun")


def test_sigkill_during_host_add_leaves_policy_and_config_old_or_new_and_a_rerun_finishes(
        rf: RekeyFleet, tmp_path: Path) -> None:
    files = ["policies/fleet.yaml", ".sops.yaml"]
    old = {p: rf.read(p) for p in files}
    done = rf.copy(tmp_path / "done")
    expect(host_add(done), 0, "host add (reference run)")
    new = {p: done.read(p) for p in files}
    assert all(new[p] != old[p] for p in files)
    check = OldOrNew(rf.root, old, new)
    command = cli(rf.root, "host", "add", HOST, "--ssh-key-file", str(rf.host_pub), "--platform", "nixos",
                  "--user", "alice=admin")
    outcomes = kill_runs(rf, command, rf.fleet.env(), [rf.root, rf.root / "policies"], 8, check)
    assert any(code == -signal.SIGKILL for *_, code in outcomes), outcomes
    # The last round's state, whatever it is: running the same command again finishes the job.
    rerun = host_add(rf)
    if rf.read("policies/fleet.yaml") == old["policies/fleet.yaml"]:
        expect(rerun, 0, "host add after a kill before the policy was written")
    else:  # the policy already names the host: it says so, and `generate` brings .sops.yaml along
        expect(rerun, 3, "host add of a host the policy already has")
        assert HOST in rerun.err and len(rerun.err.strip().splitlines()) == 1, rerun.err
        expect(sopsctl(rf.root, "generate"), 0, "generate after the interrupted host add")
    assert {p: rf.read(p) for p in files} == new


def test_sigkill_during_a_rotate_batch_leaves_each_file_old_or_new(rf: RekeyFleet) -> None:
    # Past workers.FORK_MINIMUM (forked workers stage the temp files), and enough files that the
    # renames last a few milliseconds (one is ~15 µs) for a kill to land among them.
    add_bulk(rf, 600)
    paths = [s.path for s in SECRETS if s.klass in ("shared", "vault")] + rf.bulk
    old = {p: rf.read(p) for p in paths}
    env = rf.fleet.env(recovery(rf))
    command = cli(rf.root, "rotate", *paths)
    watch = sorted({(rf.root / p).parent for p in paths})
    states: list[int] = []

    class Check(OldOrNew):
        def __call__(self) -> None:
            changed = [p for p in paths if rf.read(p) != old[p]]
            states.append(len(changed))
            # A rotated file is new bytes: it must decrypt with sops to the original plaintext (not torn).
            for path in RNG.sample(changed, min(6, len(changed))) + RNG.sample(paths, 4):
                assert decrypts(rf, path, [R]), f"{path}: sops cannot decrypt it after SIGKILL"

    check = Check(rf.root, old, old)
    outcomes = kill_runs(rf, command, env, watch, 6, check, renames=(0.0, 0.002))
    assert any(code == -signal.SIGKILL for *_, code in outcomes), outcomes
    assert any(0 < n < len(paths) for n in states), f"no kill landed among the renames: {states} {outcomes}"
    final = subprocess.run(command, env=env, cwd=rf.root, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    for path in paths:
        assert rf.read(path) != old[path]
    for path in RNG.sample(paths, 10):
        assert decrypts(rf, path, [R])


# -- a full disk ------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(where: Path, size_kib: int, mount: bool = True) -> Iterator[str]:
    """A tmpfs of `size_kib` at `where` (we run as root); 'tmpfs', or 'fsize' where mount is refused."""
    where.mkdir(parents=True)
    mounted = mount and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
                                       capture_output=True).returncode == 0
    try:
        yield "tmpfs" if mounted else "fsize"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _limited(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def fill(directory: Path, leave: int) -> None:
    """Fill the filesystem of `directory` until about `leave` bytes are free."""
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    with (directory / "filler").open("wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize(("command", "mount", "bulk"), [
    ("rekey", True, 0), ("rotate", True, 0), ("generate", True, 0), ("rotate", False, 0), ("rotate", True, 80),
    ("rekey", True, 80)], ids=["rekey", "rotate", "generate", "rotate-fsize", "rotate-workers", "rekey-workers"])
def test_a_full_disk_is_one_line_exit_3_and_every_file_old_or_new(rf: RekeyFleet, tmp_path: Path,
                                                                  command: str, mount: bool, bulk: int) -> None:
    """A tmpfs filled to the brim; where mount is refused (or for the last case), RLIMIT_FSIZE instead.

    With `bulk` more files the batch is done by forked workers (workers.FORK_MINIMUM), which stage the
    temp files themselves: a worker that hits the full disk must stop the whole batch the same way."""
    mountpoint = tmp_path / "disk"
    with small_disk(mountpoint, 4096, mount) as how:
        if bulk:
            add_bulk(rf, bulk)
        fleet = rf.copy(mountpoint / "f")
        stale = fleet.read(".sops.yaml")
        if command != "rotate":  # something to do: the new host changes recipients and the config
            expect(host_add(fleet), 0, "host add")
        if command == "generate":
            (fleet.root / ".sops.yaml").write_bytes(stale)
        files = [".sops.yaml", *(s.path for s in SECRETS), *rf.bulk]
        old = {p: fleet.read(p) for p in files}
        args = {"rekey": ["rekey"], "rotate": ["rotate", "secrets"], "generate": ["generate"]}[command]
        env = fleet.fleet.env(recovery(fleet))
        if how == "tmpfs":
            fill(mountpoint, 2048)
            preexec = None
        else:  # mount refused: the same failure from a file-size limit on the sopsctl process
            preexec = _limited(1024)
        done = subprocess.run(cli(fleet.root, *args), env=env, cwd=fleet.root, capture_output=True, text=True,
                              timeout=120, preexec_fn=preexec)
        print(f"\nfull disk ({how}): sopsctl {command} -> exit {done.returncode}: {done.stderr.strip()}")
        assert done.returncode == 3, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("sopsctl: error:")]
        assert errors and "Traceback" not in done.stderr, done.stderr
        assert all(("No space" in line or "too large" in line or "cannot write" in line) for line in errors), errors
        for path in files:
            data = fleet.read(path)
            if data != old[path]:
                assert path.startswith("secrets/") and decrypts(fleet, path, [R]), f"{path}: torn on a full disk"
        assert [p for p in no_temp_files(fleet.root)] == []
        (mountpoint / "filler").unlink(missing_ok=True)
        again = subprocess.run(cli(fleet.root, *args), env=env, cwd=fleet.root, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0, again.stderr
        for secret in SECRETS:
            assert decrypts(fleet, secret.path, [R])
        shutil.rmtree(fleet.root, ignore_errors=True)
    assert REKEYED  # the fleet has files to re-key at all


# -- Ctrl-C ---------------------------------------------------------------------------------------------


def test_ctrl_c_during_a_rotate_batch_on_workers_is_all_or_nothing_and_leaves_no_process(rf: RekeyFleet) -> None:
    """SIGINT to the whole process group (a terminal's Ctrl-C) while the workers rotate: before the
    renames the batch is abandoned (every file old); once they have begun they finish (every file
    new). Never a mix, no temp file stays and no worker outlives it."""
    add_bulk(rf, 90)  # past workers.FORK_MINIMUM
    paths = [s.path for s in SECRETS if s.klass in ("shared", "vault")] + rf.bulk
    old = {p: rf.read(p) for p in paths}
    env = rf.fleet.env(recovery(rf))
    command = cli(rf.root, "rotate", *paths)
    watch = sorted({(rf.root / p).parent for p in paths})
    interrupted = 0
    for moment in ("temps", "temps", "start"):
        for path, data in old.items():
            (rf.root / path).write_bytes(data)
        process = subprocess.Popen(command, env=env, cwd=rf.root, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)
        before = {e.path for d in watch for e in os.scandir(d)}
        deadline = time.monotonic() + 60
        while moment == "temps" and process.poll() is None and time.monotonic() < deadline:
            if {e.path for d in watch for e in os.scandir(d)} - before:
                break  # a worker or the caller has staged its first temp file
            time.sleep(0.0005)
        if moment == "start":
            time.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr.decode(), stderr
        if process.returncode == 0:
            continue  # finished before the signal: then every file is new, which the run checked itself
        interrupted += 1
        assert process.returncode == 130, stderr
        changed = [p for p in paths if rf.read(p) != old[p]]
        assert changed in ([], paths), f"a half-renamed batch: {len(changed)} of {len(paths)} files new"
        assert no_temp_files(rf.root) == []
        time.sleep(0.1)
        leftover = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout
        assert not leftover.strip(), f"processes of the interrupted run still alive: {leftover}"
    assert interrupted, "no interrupt landed inside a run"
