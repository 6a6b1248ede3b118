"""The `sopsctl` command: the typer app and the single error boundary that maps exceptions to exit codes."""

import contextlib
import sys

import typer

from ..errors import ExitCode, SopsctlError

app = typer.Typer(
    name="sopsctl",
    help="A SOPS secrets policy manager: one policy generates .sops.yaml, audits every file, re-keys natively.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion; names come from the policy (cli/completion.py)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each command group registers itself on `app`; imported for that side effect only.
# None of them uses `from __future__ import annotations`: typer reads every command's signature
# at each start, and string annotations cost it two evals apiece (about 9 ms a run).
from . import audit as _audit  # noqa: E402,F401
from . import diff as _diff  # noqa: E402,F401
from . import generate as _generate  # noqa: E402,F401
from . import importer as _importer  # noqa: E402,F401
from . import keys as _keys  # noqa: E402,F401
from . import lifecycle as _lifecycle  # noqa: E402,F401
from . import lint as _lint  # noqa: E402,F401
from . import matrix as _matrix  # noqa: E402,F401
from . import rekey as _rekey  # noqa: E402,F401
from . import rotate as _rotate  # noqa: E402,F401
from . import schema as _schema  # noqa: E402,F401
from . import verify as _verify  # noqa: E402,F401


def _error(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr itself gone: the exit code still tells
        sys.stderr.write(f"sopsctl: {line}\n")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every exception ends here, as one clear line per problem and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args  # accepted anywhere on the line
    args = [a for a in args if a != "--debug"]
    code: int
    try:
        result = app(args=args, prog_name="sopsctl", standalone_mode=False)
        code = result if isinstance(result, int) else ExitCode.OK
    except SopsctlError as exc:
        if debug:
            raise
        for line in exc.lines():
            _error(f"error: {line}")
        code = exc.exit_code
    except typer.Abort:
        _error("aborted")
        code = ExitCode.FAILED
    except typer.TyperException as exc:  # click-style usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            _error(f"error: {exc.format_message()}")
        code = ExitCode.USAGE if exc.exit_code == 2 else ExitCode.FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        code = 130
    except BrokenPipeError:
        code = ExitCode.OK
    except OSError as exc:  # the system refused what no check foresaw (e.g. help text to a full disk)
        if debug:
            raise
        _error(f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        code = ExitCode.FAILED
    except Exception as exc:  # the bug boundary: anything unexpected is exit 4, never a traceback
        if debug:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc}")
        _error("this is a bug in sopsctl; rerun with --debug for the traceback and report it")
        code = ExitCode.BUG
    return int(code)


def run() -> None:
    """The console script: run the command, then exit without tearing the interpreter down."""
    exit_now(main())


def exit_now(code: int) -> None:
    """Flush, run the exit handlers, and end the process: no interpreter teardown.

    Freeing every object of every imported module one by one (typer, pydantic, yaml…) takes about
    50 ms, 5% of rotating 1,000 files and a third of `--help`, and gives nothing back: every file
    is written and synced, every descriptor the kernel closes. Exit handlers (atexit) still run,
    and what they print is flushed too. With a tracer, profiler or monitoring tool attached
    (coverage, cProfile: they write their results at teardown), or a thread still running, the
    ordinary exit instead.
    """
    import atexit
    import os
    import threading

    code = _flushed(code)
    if _observed() or threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    os._exit(_flushed(code))


def _flushed(code: int) -> int:
    """`code` once stdout and stderr are flushed; 3 (and one line) if stdout cannot take what is
    buffered (a full disk). A reader that left (a closed pipe) read what it wanted: `code` stands."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
    except (OSError, ValueError) as exc:
        _discard_stdout()
        _error(f"error: cannot write the output: {getattr(exc, 'strerror', None) or exc}")
        code = code or ExitCode.FAILED
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    return code


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so nothing tries to write what is left in its buffer again."""
    import os

    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def _observed() -> bool:
    """Whether a tracer, profiler or (3.12+) sys.monitoring tool is attached to this process."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)  # cProfile and coverage use it from Python 3.12 on
    return monitoring is not None and any(monitoring.get_tool(tool) is not None for tool in range(6))
