"""The real CLI on a corpus of hostile files (tests/hostile/ plus huge files and symlinks made here): one line, exit 3, nothing changed.

Every case runs a command of `sopsctl` in-process (a SIGALRM bounds it) against a copy of a small repo
whose secrets are the shared sops vectors, with one hostile file planted. Each must end within the time
bound with exit 3 (1 with a finding for `audit`, 1 for `verify`, the checking commands), print one
`sopsctl: error:` line per problem naming the input, no traceback, and leave every file of the repo and
of the directory beside it (where symlinks point) byte for byte as it was. The module prints how many
(input, command) runs it made (`pytest -s`); one subprocess run shows the same for the installed CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from sopsctl.cli import main

from .conftest import VECTORS
from .policy_helpers import ADMIN_AND_HOST_POLICY

HOSTILE = Path(__file__).resolve().parent / "hostile"
TIME_BOUND = 10  # seconds per run; every case takes well under one
RUNS: list[str] = []

SECRETS = {"app.yaml": "yaml/nested.enc.yaml", "api.json": "json/basic.enc.json", "app.env": "dotenv/app.enc.env",
           "db.ini": "ini/app.enc.ini", "blob.bin": "binary/blob.enc"}
POLICY = ADMIN_AND_HOST_POLICY


@pytest.fixture(scope="module", autouse=True)
def _report_count() -> Iterator[None]:
    yield
    inputs = len({run.split(" :: ")[0] for run in RUNS})
    print(f"\nhostile corpus: {inputs} inputs, {len(RUNS)} (input, command) runs of the CLI")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class _TooSlow(BaseException):
    """Raised by SIGALRM inside a run: a BaseException, so the CLI's error boundary cannot swallow it."""


def _alarm(signum: int, frame: object) -> None:
    raise _TooSlow


def run_cli(root: Path, *args: str, label: str, identity: bool = True) -> Result:
    """`sopsctl ARGS` in-process from `root`, with the admin identity, bounded by TIME_BOUND seconds."""
    out, err = io.StringIO(), io.StringIO()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_")}
    if identity:
        env["SOPS_AGE_KEY_FILE"] = str(VECTORS / "identities" / "vec-admin.txt")
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_BOUND)
    try:
        with mock.patch.dict(os.environ, env, clear=True), contextlib.chdir(root), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    except _TooSlow:
        pytest.fail(f"{label}: `sopsctl {' '.join(args)}` ran over {TIME_BOUND} s (a hang or a bomb)")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    RUNS.append(f"{label} :: {' '.join(args[:2])}")
    return Result(code, out.getvalue(), err.getvalue())


def tree_hashes(*roots: Path) -> dict[str, str]:
    """Every file and symlink under the roots: content hash (links: their target), to see any change."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            key = str(path)
            if path.is_symlink():
                found[key] = "link:" + os.readlink(path)
            elif path.is_file():
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    repo = base / "repo"
    (repo / "policies").mkdir(parents=True)
    (repo / "secrets").mkdir()
    (base / "outside").mkdir()
    identities = VECTORS / "identities"
    (repo / "policies" / "fleet.yaml").write_text(POLICY.format(
        admin=(identities / "vec-admin.pub").read_text().strip(), host1=(identities / "vec-host1.pub").read_text().strip()))
    for name, source in SECRETS.items():
        shutil.copyfile(VECTORS / source, repo / "secrets" / name)
        shutil.copyfile(VECTORS / source, base / "outside" / name)
    assert run_cli(repo, "generate", label="setup").code == 0
    assert run_cli(repo, "audit", label="setup").code == 0, "the clean repo must audit clean"
    assert run_cli(repo, "verify", label="setup").code == 0, "the clean repo must verify"
    return base


@pytest.fixture
def base(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template, tmp_path / "t", symlinks=True)
    return tmp_path / "t"


def check(base: Path, args: tuple[str, ...], codes: tuple[int, ...], names: str, label: str,
          errors: int | None = 1, identity: bool = True) -> Result:
    """Run, then hold it to the rules: allowed exit, one error line per problem naming `names`, no change."""
    repo = base / "repo"
    before = tree_hashes(base)
    result = run_cli(repo, *args, label=label, identity=identity)
    where = f"{label}: sopsctl {' '.join(args)} -> exit {result.code}\nstdout:\n{result.out}\nstderr:\n{result.err}"
    assert result.code in codes, where
    assert "Traceback" not in result.err + result.out and "internal error" not in result.err, where
    lines = [line for line in result.err.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("sopsctl: error:")]
    if result.code == 3:
        assert error_lines, where
        if errors is not None:
            assert len(error_lines) == errors, where
        assert all(names in line for line in error_lines), f"an error line does not name {names}\n{where}"
    else:
        assert names in result.out + result.err, f"the finding does not name {names}\n{where}"
    assert tree_hashes(base) == before, f"{label}: files changed\n{where}"
    return result


# -- policy files ---------------------------------------------------------------------------------

POLICY_CASES = sorted(p.name for p in (HOSTILE / "policy").iterdir())


@pytest.mark.parametrize("name", POLICY_CASES)
def test_hostile_policy_file(base: Path, name: str) -> None:
    shutil.copyfile(HOSTILE / "policy" / name, base / "repo" / "policies" / "fleet.yaml")
    for args in (("generate",), ("audit",), ("generate", "--check"), ("who", "secrets/app.yaml")):
        check(base, args, (3,), "policies/fleet.yaml", f"policy/{name}", errors=None)


# -- .sops.yaml -----------------------------------------------------------------------------------

SOPS_YAML_CASES = sorted(p.name for p in (HOSTILE / "sops-yaml").iterdir())


@pytest.mark.parametrize("name", SOPS_YAML_CASES)
def test_hostile_sops_yaml(base: Path, name: str) -> None:
    repo = base / "repo"
    shutil.copyfile(HOSTILE / "sops-yaml" / name, repo / "hostile.sops.yaml")
    check(base, ("import", "hostile.sops.yaml"), (3,), "hostile.sops.yaml", f"sops-yaml/{name}")
    check(base, ("diff", "--against", "hostile.sops.yaml"), (3,), "hostile.sops.yaml", f"sops-yaml/{name}")
    shutil.copyfile(HOSTILE / "sops-yaml" / name, repo / ".sops.yaml")
    # audit compares bytes only: a hostile .sops.yaml on disk is stale, a finding (exit 1).
    result = check(base, ("audit",), (1,), "stale-config", f"sops-yaml/{name}")
    assert "stale-config" in result.out


# -- secrets files --------------------------------------------------------------------------------

SECRET_CASES = sorted(p.name for p in (HOSTILE / "secrets").iterdir())


def plant_secret(base: Path, source: Path, name: str) -> str:
    target = base / "repo" / "secrets" / f"hostile-{name}"
    shutil.copyfile(source, target)
    return f"secrets/hostile-{name}"


def check_secret(base: Path, path: str, label: str) -> None:
    audit = check(base, ("audit", path), (1,), path, label)
    assert any(kind in audit.out for kind in ("unreadable", "plaintext", "unknown-recipient")), audit.out
    check(base, ("verify", path), (1, 3), path, label)
    check(base, ("rotate", path), (3,), path, label)
    check(base, ("rekey", path), (3,), path, label)


@pytest.mark.parametrize("name", SECRET_CASES)
def test_hostile_secret_file(base: Path, name: str) -> None:
    path = plant_secret(base, HOSTILE / "secrets" / name, name)
    check_secret(base, path, f"secrets/{name}")
    # The whole tree too: the other files still audit, only the hostile one is named.
    result = check(base, ("audit",), (1,), path, f"secrets/{name} (tree)")
    assert all(f"secrets/{other}: error" not in result.out for other in SECRETS), result.out


def test_a_huge_secret_is_refused_without_reading_it(base: Path) -> None:
    """A 64 MiB + 1 byte file (sparse: made here, never committed) is refused by size."""
    huge = base / "repo" / "secrets" / "huge.yaml"
    with huge.open("wb") as handle:
        handle.write(b"sops:\n  mac: x\n")
        handle.truncate(64 * 1024 * 1024 + 1)
    check_secret(base, "secrets/huge.yaml", "generated/huge.yaml")
    shutil.copyfile(huge, base / "repo" / "policies" / "huge.yaml")
    check(base, ("generate",), (3,), "huge.yaml", "generated/huge policy")


def test_deep_nesting_made_at_test_time(base: Path) -> None:
    """200,000 levels: deeper than any recursion limit, in every parser's input."""
    deep = "[" * 200_000 + "]" * 200_000
    (base / "repo" / "secrets" / "deep.json").write_text('{"a": ' + deep + ', "sops": {"mac": "x"}}')
    check_secret(base, "secrets/deep.json", "generated/deep.json")
    (base / "repo" / "secrets" / "deep.yaml").write_text("a: " + deep + "\nsops:\n  mac: x\n")
    check_secret(base, "secrets/deep.yaml", "generated/deep.yaml")
    (base / "repo" / "policies" / "fleet.yaml").write_text("version: 1\nclasses: " + deep + "\n")
    check(base, ("generate",), (3,), "policies/fleet.yaml", "generated/deep policy", errors=None)


def test_symlinks_out_of_the_repository_are_not_followed_or_written(base: Path) -> None:
    secrets = base / "repo" / "secrets"
    (secrets / "link.yaml").symlink_to(base / "outside" / "app.yaml")
    (secrets / "linkdir").symlink_to(base / "outside", target_is_directory=True)
    result = check(base, ("audit",), (0,), "file(s) audited", "symlink/tree")
    assert "link" not in result.out
    result = check(base, ("verify",), (0,), "verified", "symlink/tree")
    assert "link" not in result.out
    for path in ("secrets/link.yaml", "secrets/linkdir/app.yaml", "../outside/app.yaml"):
        for command in ("rotate", "rekey", "audit", "verify"):
            result = check(base, (command, path), (3,), path.rsplit("/", 1)[-1], f"symlink/{path}")
            assert "outside the repository" in result.err, result.err


# -- keys and identities --------------------------------------------------------------------------

KEY_CASES = sorted(p.name for p in (HOSTILE / "keys").iterdir())


@pytest.mark.parametrize("name", KEY_CASES)
def test_hostile_key_file(base: Path, name: str) -> None:
    source = str(HOSTILE / "keys" / name)
    label = f"keys/{name}"
    # The hostile file is the only identity at hand (with a good one as well, it is reported, not fatal).
    check(base, ("verify", "--identity", source, "secrets/app.yaml"), (3,), name, label, identity=False)
    check(base, ("rotate", "--identity", source, "secrets/app.yaml"), (3,), name, label, identity=False)
    # Beside a good identity it is not fatal, but not silent either: one note names it.
    done = check(base, ("verify", "--identity", source, "secrets/app.yaml"), (0,), name, label)
    notes = [line for line in done.err.splitlines() if line.startswith("sopsctl: note: identity source --identity")]
    assert len(notes) == 1 and name in notes[0], done.err
    check(base, ("keys", "from-ssh", source), (3,), name, label)
    check(base, ("keys", "from-ssh", "--private", source), (3,), name, label)
    check(base, ("host", "add", "web9", "--ssh-key-file", source, "--platform", "nixos"), (3,), "ssh", label)
    text = (HOSTILE / "keys" / name).read_bytes().decode("utf-8", "replace").strip().splitlines()[0]
    check(base, ("host", "add", "web9", "--age", text, "--platform", "nixos"), (3,), "age", label)


def test_corpus_covers_every_kind_and_the_rules_have_teeth(base: Path, template: Path) -> None:
    """Each kind has cases, and `check` fails on a changed file and on an error that names nothing."""
    assert len(POLICY_CASES) >= 10 and len(SOPS_YAML_CASES) >= 6 and len(SECRET_CASES) >= 10 and len(KEY_CASES) >= 6
    shutil.copyfile(HOSTILE / "policy" / "truncated.yaml", base / "repo" / "policies" / "fleet.yaml")
    with pytest.raises(AssertionError, match="does not name"):
        check(base, ("generate",), (3,), "no-such-name", "probe", errors=None)
    shutil.copyfile(template / "repo" / "policies" / "fleet.yaml", base / "repo" / "policies" / "fleet.yaml")
    with pytest.raises(AssertionError, match="exit 0"):
        check(base, ("rotate", "secrets/app.yaml"), (3,), "app.yaml", "probe")  # it works: exit 0, and a change


def test_the_installed_cli_in_a_subprocess(base: Path) -> None:
    """The same rules for `python -m sopsctl` itself: a real process, a real timeout, a real stderr."""
    repo = base / "repo"
    shutil.copyfile(HOSTILE / "policy" / "alias-bomb.yaml", repo / "policies" / "fleet.yaml")
    before = tree_hashes(base)
    done = subprocess.run([sys.executable, "-m", "sopsctl", "generate"], cwd=repo, capture_output=True, text=True,
                          timeout=TIME_BOUND * 3)
    RUNS.append("subprocess/alias-bomb :: generate")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == \
        [line for line in done.stderr.splitlines() if line.startswith("sopsctl: error: policies/fleet.yaml:")]
    assert tree_hashes(base) == before
