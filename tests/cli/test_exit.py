"""The console script's exit: output flushed, exit handlers run, exit code kept, no interpreter teardown."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import atexit, os, sys
    from sopsctl.cli import run

    class Teardown:
        def __del__(self):
            os.write(2, b"interpreter teardown ran\\n")  # sys.stderr may be gone by then

    KEPT = Teardown()  # freed only when the interpreter tears its modules down
    atexit.register(lambda: sys.stderr.write("exit handler ran\\n"))
    sys.argv = ["sopsctl", *sys.argv[1:]]
    {before_run}
    run()
""")


# Output buffered as on a user's machine (some CI machines set PYTHONUNBUFFERED, which hides lost output).
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


def _run(*args: str, before_run: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(before_run=before_run), *args],
                          capture_output=True, text=True, timeout=60, env=ENV)


@pytest.mark.parametrize(("args", "code"), [(["schema"], 0), (["no-such-command"], 2),
                                            (["lint", "--root", "/nonexistent/sopsctl"], 3)])
def test_the_exit_code_is_the_commands_and_the_output_is_whole(args: list[str], code: int) -> None:
    result = _run(*args)
    assert result.returncode == code, result.stderr
    assert "exit handler ran" in result.stderr
    if args == ["schema"]:  # a long output, all of it flushed before the process ends
        assert result.stdout.rstrip().endswith("}") and len(result.stdout) > 2000


def test_there_is_no_interpreter_teardown() -> None:
    """Teardown frees every object of every module, ~50 ms a command, for nothing: it is skipped."""
    result = _run("schema")
    assert result.returncode == 0 and "exit handler ran" in result.stderr
    assert "interpreter teardown ran" not in result.stderr


def test_under_a_profiler_the_ordinary_exit_is_kept() -> None:
    """A profiler or coverage tool writes its results at teardown: then the command exits as usual."""
    result = _run("schema", before_run="import cProfile; cProfile.Profile().enable()")
    assert result.returncode == 0 and "interpreter teardown ran" in result.stderr


def test_a_closed_pipe_is_no_error() -> None:
    """`sopsctl schema | head -1`: the reader left; nothing is printed about it and the exit code is 0."""
    command = f"{sys.executable} -c '{SCRIPT.format(before_run='')}' schema | head -c 10 > /dev/null; " \
              "echo ${PIPESTATUS[0]} >&2"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, env=ENV)
    assert result.stderr.strip().splitlines()[-1] == "0", result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_output_that_cannot_be_written_is_one_line_and_exit_3() -> None:
    """`sopsctl schema > report` on a full disk: not a bug report, not a silent success."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-c", SCRIPT.format(before_run=""), "schema"], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60, env=ENV)
    assert result.returncode == 3
    assert result.stderr.splitlines()[0] == "sopsctl: error: cannot write the output: No space left on device"
    assert "Traceback" not in result.stderr and "bug" not in result.stderr


def test_what_an_exit_handler_prints_is_flushed_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "out.txt"
    with open(target, "w") as stdout:
        subprocess.run([sys.executable, "-c", SCRIPT.format(
            before_run="atexit.register(lambda: print('written by an exit handler'))"), "schema"],
            stdout=stdout, stderr=subprocess.PIPE, timeout=60, check=True, env=ENV)
    assert target.read_text().rstrip().splitlines()[-1] == "written by an exit handler"


def test_a_monitoring_tool_keeps_the_ordinary_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """From Python 3.12, cProfile and coverage attach through sys.monitoring, not a trace function."""
    from sopsctl import cli

    class Monitoring:
        @staticmethod
        def get_tool(tool: int) -> str | None:
            return "cProfile" if tool == 2 else None

    monkeypatch.setattr(sys, "gettrace", lambda: None)  # as without coverage, whatever runs this test
    monkeypatch.setattr(sys, "getprofile", lambda: None)
    monkeypatch.setattr(sys, "monitoring", type("Idle", (), {"get_tool": staticmethod(lambda tool: None)}),
                        raising=False)
    assert not cli._observed()
    monkeypatch.setattr(sys, "monitoring", Monitoring, raising=False)
    assert cli._observed()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize(("args", "stream"), [(["--help"], "stdout"), (["lint", "--root", "/nonexistent"], "stderr")])
def test_a_full_disk_under_help_or_errors_is_exit_3_not_a_bug(args: list[str], stream: str) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-c", SCRIPT.format(before_run=""), *args],
                                capture_output=False, timeout=60, text=True, env=ENV,
                                stdout=full if stream == "stdout" else subprocess.PIPE,
                                stderr=full if stream == "stderr" else subprocess.PIPE)
    assert result.returncode == 3
    if stream == "stdout":
        assert "bug" not in result.stderr and "No space left on device" in result.stderr
