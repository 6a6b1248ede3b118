"""Benchmark: `sopsctl generate` for a synthetic fleet vs the real sops binary loading that .sops.yaml.

Fleet: 2,000 hosts, 500 identities, 6 templated classes. Prints the wall time of the whole
`sopsctl generate` command and of `sops encrypt` (the Go binary) reading the generated
config and encrypting one file, side by side. Run: .venv/bin/python bench/generate.py
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path

from _common import fake_age_recipient, report, sops_binary, sopsctl_command, time_runs


def fleet_policy(hosts: int, identities: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    lines = ["version: 1", "settings:", "  always_readers: [key:recovery]", "keys:",
             f"  recovery: {fake_age_recipient(rng)}"]
    people = [f"user{i:04d}" for i in range(identities)]
    machines = [f"host{i:05d}" for i in range(hosts)]
    lines += [f"  {name}: {fake_age_recipient(rng)}" for name in people + machines]
    lines.append("identities:")
    for index, name in enumerate(people):
        role = "admin" if index % 50 == 0 else "user"
        lines.append(f"  {name}: {{role: {role}, accounts: [{name}], keys: [{name}]}}")
    lines.append("hosts:")
    for name in machines:
        users = {rng.choice(people): "primary", rng.choice(people[::50]): "admin"}
        rendered = ", ".join(f"{a}: {r}" for a, r in users.items())
        platform = rng.choice(["nixos", "darwin"])
        lines.append(f"  {name}: {{platform: {platform}, keys: [{name}], users: {{{rendered}}}}}")
    lines += [
        "classes:",
        "  - {name: host-user, path: 'secrets/hosts/{host}/users/{account}/**', readers: ['host:{host}', 'identity:{identity}']}",
        "  - {name: host, path: 'secrets/hosts/{host}/**', readers: ['host:{host}', 'admins-of:{host}']}",
        "  - {name: home, path: 'secrets/home/{account}/**', readers: ['identity:{identity}']}",
        "  - {name: person, path: 'secrets/people/{identity}/*.yaml', readers: ['identity:{identity}', 'hosts-of:{identity}']}",
        "  - {name: platform, path: 'secrets/platform/{host}.yaml', readers: ['host:{host}', 'role:admin']}",
        "  - {name: service, path: 'secrets/services/{host}/{a,b}/*.yaml', readers: ['users-of:{host}', 'primary-of:{host}']}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--identities", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "policies").mkdir()
        (root / "policies" / "fleet.yaml").write_text(fleet_policy(args.hosts, args.identities))
        ours = time_runs([*sopsctl_command(), "generate", "--root", str(root)], args.runs, root)
        config = (root / ".sops.yaml").read_bytes()
        rules = config.count(b"\n  - path_regex:")
        print(f"fleet: {args.hosts} hosts, {args.identities} identities, 6 templated classes -> "
              f"{rules} creation rules, .sops.yaml {len(config) / 1e6:.1f} MB")
        target = root / "secrets" / "services" / f"host{args.hosts - 1:05d}" / "b"
        target.mkdir(parents=True)
        (target / "x.yaml").write_text("token: secret\n")
        env = {**os.environ, "SOPS_AGE_KEY_FILE": os.devnull}
        # The last class's last instance: sops must parse the whole config and try every rule.
        sops = time_runs([sops_binary(), "encrypt", str(target.relative_to(root) / "x.yaml")], args.runs, root, env)
        a = report("sopsctl generate (whole command)", ours)
        b = report("sops encrypt (Go binary) with that .sops.yaml, one file", sops)
        print(f"ratio sopsctl generate / sops load+encrypt: {a / b:.2f}x  (target: generate under 1.5 s)")


if __name__ == "__main__":
    main()
