"""Benchmark: start-up of `sopsctl --help` and `sopsctl generate --check` against a one-command typer app.

Both run in this venv, alternately, as whole processes; the ratio is what a pre-commit hook feels.
Targets: --help <= 1.3x, generate --check (example policy) <= 2x. Run: .venv/bin/python bench/startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, sopsctl_command

ONE_COMMAND_APP = '''
import typer
app = typer.Typer()
@app.command()
def hello(name: str = "x") -> None:
    """Say hello."""
    print(name)
app()
'''


def paired(a: list[str], b: list[str], runs: int, cwd: Path) -> tuple[float, float, float]:
    """Median wall seconds of a and b, run alternately, and the median of the per-pair ratios."""
    times_a, times_b, ratios = [], [], []
    for index in range(runs + 1):
        pair = []
        for command in (a, b):
            start = time.perf_counter()
            subprocess.run(command, cwd=cwd, capture_output=True, check=False)
            pair.append(time.perf_counter() - start)
        if index:  # the first pair warms the page cache
            times_a.append(pair[0])
            times_b.append(pair[1])
            ratios.append(pair[0] / pair[1])
    return statistics.median(times_a), statistics.median(times_b), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "one_command.py"
        app.write_text(ONE_COMMAND_APP)
        baseline = [sys.executable, str(app), "--help"]
        subprocess.run([*sopsctl_command(), "generate", "--root", tmp, "--policy", str(REPO / "policies")],
                       check=True, capture_output=True)
        for label, command, target in (
                ("sopsctl --help", [*sopsctl_command(), "--help"], 1.3),
                ("sopsctl generate --check (example policy)",
                 [*sopsctl_command(), "generate", "--check", "--root", tmp, "--policy", str(REPO / "policies")], 2.0)):
            ours, theirs, ratio = paired(command, baseline, args.runs, Path(tmp))
            print(f"{label:<44} {ours:.3f}s vs one-command typer --help {theirs:.3f}s: {ratio:.2f}x "
                  f"(target <= {target}x)")


if __name__ == "__main__":
    main()
