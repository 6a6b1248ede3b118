"""Benchmark: `sopsctl audit` over 10,000 sops files vs `sops filestatus` and a bare regex scan.

The files are copies of real sops output (templates encrypted by the Go sops binary) with
varied recipient sets: 3 to 30 age entries each, matching their rule except one file in ten.
Prints whole-process wall times: sopsctl audit over all files; `sops filestatus` over a
500-file sample in one loop, scaled to 10,000; and a plain line-regex scan of the recipients.
Run: .venv/bin/python bench/audit.py
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report, sops_binary, sopsctl_command, time_runs

REGEX_SCAN = r"""
import os, re, sys
pattern = re.compile(rb"recipient: (\S+)|\"recipient\": \"([^\"]+)\"")
count = 0
for directory, _, names in os.walk(sys.argv[1]):
    for name in names:
        with open(os.path.join(directory, name), "rb") as handle:
            count += len(pattern.findall(handle.read()))
print(count)
"""


def make_template(root: Path, recipients: list[str], suffix: str) -> bytes:
    plain = root / f"template{suffix}"
    plain.write_text('{"db": {"password": "hunter2", "user": "app"}, "token": "abc"}\n' if suffix == ".json"
                     else "db:\n    password: hunter2\n    user: app\ntoken: abc\n")
    env = {**os.environ, "SOPS_AGE_KEY_FILE": os.devnull}
    result = subprocess.run([sops_binary(), "encrypt", "--age", ",".join(recipients), str(plain)],
                            capture_output=True, env=env, check=True, cwd=root)
    plain.unlink()
    return result.stdout


def _entries_yaml(template: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, _, tail = template.partition(b"    age:\n")
    body, _, rest = tail.partition(b"    lastmodified:")
    return head + b"    age:\n", re.split(rb"(?=        - recipient: )", body)[1:], b"    lastmodified:" + rest


def yaml_variant(template: bytes, recipients: list[str]) -> bytes:
    """The template with one age entry per recipient (blobs reused: the audit never opens them)."""
    head, entries, rest = _entries_yaml(template)
    out = [re.sub(rb"recipient: \S+", b"recipient: " + r.encode(), entries[i % len(entries)], count=1)
           for i, r in enumerate(recipients)]
    return head + b"".join(out) + rest


def json_variant(template: bytes, recipients: list[str]) -> bytes:
    import json

    document = json.loads(template)
    entries = document["sops"]["age"]
    document["sops"]["age"] = [{**entries[i % len(entries)], "recipient": r} for i, r in enumerate(recipients)]
    return json.dumps(document, indent="\t").encode() + b"\n"


def build(root: Path, count: int, rng: random.Random) -> list[str]:
    """A fleet whose files mostly match their rule: host secrets read by the host and its 1-28 users.

    One file in ten drifts (a reader missing, or an extra one), as in a real repository.
    """
    from _common import fake_age_recipient

    people = {f"u{i:02d}": fake_age_recipient(rng) for i in range(28)}
    hosts = {f"host{i:03d}": fake_age_recipient(rng) for i in range(200)}
    recovery = fake_age_recipient(rng)
    users = {h: rng.sample(sorted(people), rng.randint(1, 28)) for h in hosts}
    lines = ["version: 1", "settings:", "  always_readers: [key:recovery]", "keys:", f"  recovery: {recovery}"]
    lines += [f"  {n}: {r}" for n, r in {**people, **hosts}.items()]
    lines += ["identities:"] + [f"  {n}: {{role: user, keys: [{n}]}}" for n in people]
    lines += ["hosts:"] + [f"  {h}: {{platform: nixos, keys: [{h}], users: {{{', '.join(u + ': user' for u in users[h])}}}}}"
                           for h in hosts]
    lines += ["classes:", "  - {name: host, path: 'secrets/hosts/{host}/**', readers: ['host:{host}', 'users-of:{host}']}"]
    (root / "policies").mkdir()
    (root / "policies" / "fleet.yaml").write_text("\n".join(lines) + "\n")
    pool = [recovery, *people.values()]
    templates = {".yaml": make_template(root, pool[:8], ".yaml"), ".json": make_template(root, pool[:8], ".json")}
    names = sorted(hosts)
    for index in range(count):
        host = names[index % len(names)]
        recipients = [recovery, hosts[host], *(people[u] for u in sorted(users[host]))]
        if index % 10 == 5:
            recipients.pop()  # drift: a reader missing
        elif index % 10 == 7:
            recipients.append(fake_age_recipient(rng))  # drift: an unknown recipient
        suffix = ".json" if index % 10 == 0 else ".yaml"
        variant = (json_variant if suffix == ".json" else yaml_variant)(templates[suffix], recipients)
        target = root / "secrets" / "hosts" / host / f"s{index:05d}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(variant)
    subprocess.run([*sopsctl_command(), "generate", "--root", str(root)], check=True, capture_output=True)
    return sorted(str(p) for p in (root / "secrets").rglob("*.*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = build(root, args.files, random.Random(1))
        print(f"{len(files)} sops files (3-30 age recipients each; 90% YAML, 10% JSON; 20% drifted)")
        ours = report("sopsctl audit --format json (whole command)",
                      time_runs([*sopsctl_command(), "audit", "--root", str(root), "--format", "json"], args.runs,
                                root, ok_codes=(0, 1)))
        scan = report("bare regex scan of recipients (python, one process)",
                      time_runs([sys.executable, "-c", REGEX_SCAN, str(root / "secrets")], args.runs, root))
        sample = files[:: max(1, len(files) // args.sample)][: args.sample]
        loop = "for f in \"$@\"; do \"$0\" filestatus \"$f\" >/dev/null || exit 1; done"
        start = time.perf_counter()
        subprocess.run(["sh", "-c", loop, sops_binary(), *sample], check=True)
        filestatus = (time.perf_counter() - start) * len(files) / len(sample)
        print(f"{'sops filestatus, one call per file (500 timed, scaled)':<58} {filestatus:7.3f}s")
        print(f"ratio audit / regex scan: {ours / scan:.2f}x (target <= 3x); audit / filestatus loop: "
              f"{ours / filestatus:.3f}x; target audit < 3 s")


if __name__ == "__main__":
    main()
