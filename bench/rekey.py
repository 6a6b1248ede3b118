"""Benchmark: `sopsctl rekey` over 1,000 sops files after one recipient joins the rule, vs `sops updatekeys -y`.

The files are copies of real sops output (three templates, YAML, JSON and dotenv, encrypted by the
Go sops binary under the generated `.sops.yaml`; copies share a data key, which re-keying never
looks at). Then `sopsctl identity add` puts a new admin in the rule, and each contender runs on a
fresh copy of that tree: (a) `sopsctl rekey` (whole command, on every core and with --jobs 1); (b) one batched
`sops updatekeys -y` call over all files; (c) one `sops updatekeys -y` call per file (a sample
timed, scaled). Every result is checked: a sample decrypts with the new admin's identity through
the real sops. Run: .venv/bin/python bench/rekey.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import fake_age_recipient, floors, report, sops_binary, sopsctl_command, spread

TEMPLATES = {
    ".yaml": "db:\n    password: hunter2\n    user: app\ntoken: abc\n",
    ".json": '{"db": {"password": "hunter2", "user": "app"}, "token": "abc"}\n',
    ".env": "DB_PASSWORD=hunter2\nDB_USER=app\nTOKEN=abc\n",
}


def run(command: list[str], cwd: Path, env: dict[str, str], ok_codes: tuple[int, ...] = (0,)) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
    if result.returncode not in ok_codes:
        raise SystemExit(f"{' '.join(command[:3])}… failed ({result.returncode}): {result.stderr.decode()[-800:]}")
    return result.stdout.decode()


def new_identity(directory: Path, name: str, env: dict[str, str]) -> tuple[Path, str]:
    """`sopsctl keys generate -o FILE`: the identity file and its age1… recipient."""
    path = directory / f"{name}.txt"
    result = subprocess.run([*sopsctl_command(), "keys", "generate", "-o", str(path)], env=env,
                            capture_output=True, text=True, check=True)
    return path, result.stderr.split("Public key:")[1].strip()


def build(base: Path, count: int, env: dict[str, str]) -> tuple[Path, Path, Path, list[str]]:
    """The tree before the change, the recovery and new-admin identity files, and the files' paths."""
    rng = random.Random(7)
    keys = base / "keys"
    keys.mkdir()
    recovery_file, recovery = new_identity(keys, "recovery", env)
    newcomer_file, newcomer = new_identity(keys, "newcomer", env)
    root = base / "tree"
    (root / "policies").mkdir(parents=True)
    admins = {f"admin{i}": fake_age_recipient(rng) for i in range(4)}
    lines = ["version: 1", "settings:", "  secrets_dirs: [secrets]", "  always_readers: [key:recovery]", "keys:",
             f"  recovery: {recovery}", *(f"  {n}: {r}" for n, r in admins.items()), "identities:",
             *(f"  {n}: {{role: admin, keys: [{n}]}}" for n in admins),
             "classes:", "  - {name: shared, path: 'secrets/**', readers: ['role:admin']}"]
    (root / "policies" / "fleet.yaml").write_text("\n".join(lines) + "\n")
    run([*sopsctl_command(), "generate", "--root", str(root)], root, env)
    sops_env = {**env, "SOPS_AGE_KEY_FILE": str(recovery_file)}
    templates = {}
    for suffix, text in TEMPLATES.items():
        plain = root / "secrets" / f"template{suffix}"
        plain.parent.mkdir(exist_ok=True)
        plain.write_text(text)
        run([sops_binary(), "encrypt", "--in-place", str(plain.relative_to(root))], root, sops_env)
        templates[suffix] = plain.read_bytes()
        plain.unlink()
    paths = []
    suffixes = sorted(templates)
    for index in range(count):
        suffix = suffixes[index % len(suffixes)]
        relative = f"secrets/team{index % 25:02d}/s{index:04d}{suffix}"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(templates[suffix])
        paths.append(relative)
    run([*sopsctl_command(), "identity", "add", "newcomer", "--role", "admin", "--age", newcomer,
         "--root", str(root)], root, env)
    dry = json.loads(run([*sopsctl_command(), "rekey", "--dry-run", "--root", str(root), "--format", "json"],
                         root, env, ok_codes=(1,)))
    if len(dry["changed"]) != count:
        raise SystemExit(f"expected {count} files to re-key, the dry run lists {len(dry['changed'])}")
    return root, recovery_file, newcomer_file, paths


def fresh_copy(tree: Path, scratch: Path) -> Path:
    """A copy of the tree, on disk before any contender's clock starts (its writeback is nobody's work)."""
    target = Path(tempfile.mkdtemp(dir=scratch)) / "tree"
    shutil.copytree(tree, target, symlinks=True)
    os.sync()
    return target


def check(root: Path, paths: list[str], sample: list[int], newcomer_file: Path, env: dict[str, str],
          label: str) -> None:
    """The new admin's identity opens every sampled file through the real sops."""
    check_env = {**env, "SOPS_AGE_KEY_FILE": str(newcomer_file)}
    for index in sample:
        result = subprocess.run([sops_binary(), "decrypt", paths[index]], cwd=root, env=check_env,
                                capture_output=True)
        if result.returncode != 0 or b"hunter2" not in result.stdout:
            raise SystemExit(f"{label}: {paths[index]} does not decrypt with the new recipient's identity "
                             f"(exit {result.returncode}): {result.stderr.decode()[-400:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=100, help="files timed for the one-call-per-file loop")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_")}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env.update(HOME=str(base / "home"), XDG_CONFIG_HOME=str(base / "home" / ".config"))
        tree, recovery_file, newcomer_file, paths = build(base, args.files, env)
        scratch = spread(base / "runs")  # each run's copy in a block group of its own (see _common.spread)
        key_env = {**env, "SOPS_AGE_KEY_FILE": str(recovery_file)}
        rng = random.Random(11)
        print(f"{len(paths)} sops files (YAML, JSON, dotenv; 6 age recipients each); one admin joins the rule")

        def timed(label: str, command: list[str], files: list[str] | None = None, scale: float = 1.0,
                  done: list[int] | None = None) -> float:
            times = []
            for _ in range(args.runs):
                root = fresh_copy(tree, scratch)
                start = time.perf_counter()
                run(command if files is None else [*command, *files], root, key_env)
                times.append((time.perf_counter() - start) * scale)
                population = done or range(len(paths))
                check(root, paths, rng.sample(population, min(10, len(population))), newcomer_file, env, label)
                shutil.rmtree(root.parent)
            return report(label, times)

        ours = {}
        for jobs in (None, 1):  # the default (every core), then one process
            ours[jobs] = timed(f"(a) sopsctl rekey{f' --jobs {jobs}' if jobs else ''} (whole command)",
                               [*sopsctl_command(), "rekey", *(["--jobs", str(jobs)] if jobs else [])])
        batched = timed("(b) sops updatekeys -y, one call over all files", [sops_binary(), "updatekeys", "-y"], paths)
        sample = rng.sample(range(len(paths)), min(args.sample, len(paths)))
        loop = 'for f in "$@"; do "$0" updatekeys -y "$f" >/dev/null 2>&1 || exit 1; done'
        per_file = timed(f"(c) sops updatekeys -y, one call per file ({len(sample)} timed, scaled)",
                         ["sh", "-c", loop, sops_binary(), *(paths[i] for i in sample)],
                         scale=len(paths) / len(sample), done=sample)
        best = ours[None]
        print(f"ratio batched updatekeys / sopsctl rekey: {batched / best:.1f}x (target >= 5x); "
              f"per-file updatekeys / sopsctl rekey: {per_file / best:.1f}x (target >= 30x)")
        print(f"every core vs --jobs 1: {ours[1] / ours[None]:.2f}x")
        floor = floors(scratch, len(paths), unwraps=1, wraps=1, env=key_env)
        print(f"best possible here: {batched / floor:.1f}x batched, {per_file / floor:.1f}x per-file "
              f"(sopsctl is at {best / floor:.2f}x the floor)")


if __name__ == "__main__":
    main()
