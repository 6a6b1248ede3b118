"""A small fleet repo for the audit interop tests: fresh age keys, a policy, and files the real sops encrypted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyrage

from sopsctl.cli import main

SOPS_NO_KEY = 128  # sops: the data key could not be recovered

# Every key of the fleet: name -> owner (the subject SPEC §4 gives a key with an owner), or None.
KEY_OWNERS: dict[str, str | None] = {
    "recovery": None,
    "alice-2026": "identity:alice",
    "bob-2026": "identity:bob",
    "bob-2025": "identity:bob",  # retired key of an active identity: subject key:bob-2025
    "carol-ci": "identity:carol",
    "web1-host": "host:web1",
    "db1-host": "host:db1",
    "old-host": "host:old",  # active key of the retired host `old`: subject host:old
}
RETIRED_KEYS = frozenset({"bob-2025"})
RETIRED_OWNERS = frozenset({"host:old"})
# The subjects who can hold keys today, and the active keys each holds.
SUBJECT_KEYS: dict[str, tuple[str, ...]] = {
    "key:recovery": ("recovery",),
    "identity:alice": ("alice-2026",),
    "identity:bob": ("bob-2026",),
    "identity:carol": ("carol-ci",),
    "host:web1": ("web1-host",),
    "host:db1": ("db1-host",),
}

KEY_BEARING = "secrets/shared/carol-age-key.yaml"  # holds carol's private key (the policy says so)
CAROL_KEY_FIELD = "age_key"
BOB_KEY_HOLDER = "secrets/home/carol/deploy.env"  # holds bob's private key (the policy does not say so)
BOB_KEY_FIELD = "BOB_AGE_KEY"

R = "recovery"
HOST_WEB1 = ((R, "web1-host", "alice-2026"),)
HOST_DB1 = ((R, "db1-host", "alice-2026"),)
SHARED = ((R, "alice-2026", "db1-host", "web1-host"),)
CA = ((R, "alice-2026"), (R, "db1-host"), (R, "carol-ci"))


@dataclass(frozen=True)
class Secret:
    """A file of the fleet: where, in which sops store, governed by which class, encrypted for which keys."""

    path: str
    format: str  # yaml, json, dotenv, ini, binary (what sops picks from the suffix)
    klass: str
    groups: tuple[tuple[str, ...], ...]  # key names, as the generated rule lists them
    threshold: int | None = None  # Shamir threshold; None for one group

    @property
    def layout(self) -> str:
        return "groups" if len(self.groups) > 1 else "flat"


SECRETS: tuple[Secret, ...] = (
    Secret("secrets/hosts/web1/ssh.yaml", "yaml", "host", HOST_WEB1),
    Secret("secrets/hosts/web1/app.env", "dotenv", "host", HOST_WEB1),
    Secret("secrets/hosts/db1/db.ini", "ini", "host", HOST_DB1),
    Secret("secrets/hosts/db1/tls.key", "binary", "host", HOST_DB1),
    Secret("secrets/shared/api.json", "json", "shared", SHARED),
    Secret(KEY_BEARING, "yaml", "shared", SHARED),
    Secret("secrets/home/bob/token.yaml", "yaml", "home", ((R, "bob-2026"),)),
    Secret(BOB_KEY_HOLDER, "dotenv", "home", ((R, "carol-ci"),)),
    Secret("secrets/ca/root.yaml", "yaml", "ca", CA, 2),
    Secret("secrets/ca/root.json", "json", "ca", CA, 2),
    Secret("secrets/ca/ca.env", "dotenv", "ca", CA, 2),
    Secret("secrets/ca/ca.ini", "ini", "ca", CA, 2),
    Secret("secrets/ca/root.crt", "binary", "ca", CA, 2),
)
BY_PATH = {s.path: s for s in SECRETS}

POLICY_FLEET = """\
version: 1
settings:
  secrets_dirs: [secrets]
  always_readers: [key:recovery]
keys:
  recovery: {{age: {recovery}, note: "offline recovery key"}}
  alice-2026: {{age: {alice-2026}}}
  bob-2026: {{age: {bob-2026}}}
  bob-2025: {{age: {bob-2025}, status: retired, retired: 2025-12-31, note: "lost laptop"}}
  carol-ci: {{age: {carol-ci}}}
  web1-host: {{age: {web1-host}}}
  db1-host: {{age: {db1-host}}}
  old-host: {{age: {old-host}}}
identities:
  alice: {{role: admin, keys: [alice-2026]}}
  bob: {{role: user, keys: [bob-2026, bob-2025]}}
  carol: {{role: ci, keys: [carol-ci]}}
hosts:
  web1: {{platform: nixos, keys: [web1-host], users: {{alice: admin, bob: primary}}}}
  db1: {{platform: nixos, keys: [db1-host], users: {{alice: admin}}}}
  old: {{platform: nixos, keys: [old-host], status: retired}}
"""

POLICY_CLASSES = """\
classes:
  - name: ca
    path: secrets/ca/**
    key_groups: [[role:admin], ["host:db1"], [identity:carol]]
    threshold: 2
  - name: host
    path: secrets/hosts/{host}/**
    readers: ["host:{host}", "admins-of:{host}"]
  - name: home
    path: secrets/home/{identity}/**
    readers: ["identity:{identity}"]
  - name: shared
    path: secrets/shared/**
    readers: [role:admin, hosts]
"""

KEY_BEARING_POLICY = "policies/key-bearing.yaml"


def key_bearing_policy(entries: dict[str, str]) -> str:
    return "key_bearing:\n" + "".join(f"  {path}: {holder}\n" for path, holder in entries.items())


def plaintext(fmt: str, value: str, field: str = "token") -> bytes:
    """A small document in the given sops store holding one secret value."""
    if fmt == "yaml":
        return f"{field}: {value}\nnested:\n    note: kept secret\n".encode()
    if fmt == "json":
        return (json.dumps({field: value, "nested": {"note": "kept secret"}}, indent=2) + "\n").encode()
    if fmt == "dotenv":
        return f"{field}={value}\nNOTE=kept secret\n".encode()
    if fmt == "ini":
        return f"[main]\n{field} = {value}\nnote = kept secret\n".encode()
    if fmt == "binary":
        return b"\x00\x01\xfe binary " + value.encode() + b"\n"
    raise ValueError(fmt)


def rules_config(groups: Sequence[Sequence[str]], threshold: int | None = None) -> str:
    """A throw-away `.sops.yaml` whose one catch-all rule has these key groups (of recipients)."""
    rule: dict[str, object] = {"key_groups": [{"age": list(group)} for group in groups]}
    if threshold is not None:
        rule["shamir_threshold"] = threshold
    return json.dumps({"creation_rules": [rule]}, indent=2) + "\n"


class FleetError(AssertionError):
    """The fixture itself could not be built (the real sops or `sopsctl generate` refused something)."""


@dataclass
class Fleet:
    """A built repository (`root`) plus a scratch directory outside it for key files, configs and $HOME."""

    root: Path
    work: Path
    sops: Path
    identities: dict[str, str]  # key name -> AGE-SECRET-KEY-1…
    recipients: dict[str, str]  # key name -> age1…

    # -- running the real sops -------------------------------------------------------------

    def key_file(self, names: Iterable[str], extra: Iterable[str] = ()) -> Path:
        """An identity file (outside the repo) holding these keys' private halves, plus raw identities."""
        lines = [self.identities[n] for n in names] + [e.strip() for e in extra]
        return self._scratch("keys", "".join(line + "\n" for line in lines))

    def _scratch(self, kind: str, text: str) -> Path:
        """A new file in the scratch directory (mode 0600), never inside the repository."""
        (self.work / kind).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.work / kind, suffix=".txt" if kind == "keys" else ".yaml")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return Path(name)

    def env(self, key_file: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_")}
        home = self.work / "home"
        home.mkdir(parents=True, exist_ok=True)
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   SOPS_AGE_KEY_FILE=str(key_file) if key_file else "/dev/null")
        return env

    def run_sops(self, args: Sequence[str], *, key_file: Path | None = None, config: Path | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run the real sops from the repo root (relative paths, as sops resolves rules from the CWD)."""
        argv = [str(self.sops), *(["--config", str(config)] if config else []), *args]
        result = subprocess.run(argv, cwd=self.root, env=self.env(key_file), capture_output=True,
                                timeout=60, check=False)
        if check and result.returncode != 0:
            raise FleetError(f"sops {' '.join(args)} failed (exit {result.returncode}): "
                             f"{result.stderr.decode(errors='replace').strip()}")
        return result

    def decrypt(self, path: str, names: Iterable[str], extra: Iterable[str] = (),
                extract: str | None = None) -> subprocess.CompletedProcess[bytes]:
        """`sops decrypt` with only these identities available; never raises on failure."""
        args = ["decrypt", *(["--extract", extract] if extract else []), path]
        return self.run_sops(args, key_file=self.key_file(names, extra), check=False)

    def opens(self, path: str, plaintext: bytes, names: Iterable[str], extra: Iterable[str] = ()) -> bool:
        """Whether the real sops decrypts `path` with only these identities; when it does, it must give
        `plaintext`, and when it does not, the reason must be that no key opened it."""
        result = self.decrypt(path, names, extra)
        if result.returncode == 0:
            assert result.stdout == plaintext, f"{path}: sops decrypted something other than the original"
            return True
        assert result.returncode == SOPS_NO_KEY, (f"{path}: sops exit {result.returncode}, expected "
                                                  f"{SOPS_NO_KEY}: {result.stderr.decode(errors='replace')[-400:]}")
        return False

    def encrypt(self, path: str, data: bytes, config_text: str | None = None) -> None:
        """Write `data` at `path` and encrypt it in place with the repo's `.sops.yaml` (or a throw-away config)."""
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        config = self._scratch("configs", config_text) if config_text is not None else None
        self.run_sops(["encrypt", "--in-place", path], config=config)

    def rotate(self, path: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """`sops rotate -i --add-age/--rm-age` with the recovery identity (it reads every file)."""
        args = ["rotate", "--in-place"]
        if add:
            args += ["--add-age", ",".join(add)]
        if remove:
            args += ["--rm-age", ",".join(remove)]
        self.run_sops([*args, path], key_file=self.key_file(["recovery"]))

    # -- the repository ---------------------------------------------------------------------

    def write_policy(self, name: str, text: str) -> None:
        (self.root / name).write_text(text)

    def generate(self) -> None:
        code = main(["generate", "--root", str(self.root)])
        if code != 0:
            raise FleetError(f"`sopsctl generate --root {self.root}` exited {code} on the test policy")

    def recipients_of(self, groups: Sequence[Sequence[str]]) -> list[list[str]]:
        return [[self.recipients[name] for name in group] for group in groups]

    def copy(self, dest: Path) -> Fleet:
        """An independent copy of the repository (the scratch directory starts empty)."""
        dest.mkdir(parents=True, exist_ok=True)
        root = dest / "repo"
        shutil.copytree(self.root, root, symlinks=True)
        return Fleet(root, dest / "work", self.sops, dict(self.identities), dict(self.recipients))


def build_fleet(dest: Path, sops: Path) -> Fleet:
    """Fresh keys, the policy, `sopsctl generate`, then every file of SECRETS encrypted by the real sops."""
    generated = {name: pyrage.x25519.Identity.generate() for name in KEY_OWNERS}
    fleet = Fleet(
        root=dest / "repo",
        work=dest / "work",
        sops=sops,
        identities={name: str(identity) for name, identity in generated.items()},
        recipients={name: str(identity.to_public()) for name, identity in generated.items()},
    )
    (fleet.root / "policies").mkdir(parents=True)
    fleet.write_policy("policies/fleet.yaml", POLICY_FLEET.format(**fleet.recipients))
    fleet.write_policy("policies/classes.yaml", POLICY_CLASSES)
    fleet.write_policy(KEY_BEARING_POLICY, key_bearing_policy({KEY_BEARING: "carol"}))
    fleet.generate()
    for secret in SECRETS:
        if secret.path == KEY_BEARING:
            data = plaintext(secret.format, fleet.identities["carol-ci"], CAROL_KEY_FIELD)
        elif secret.path == BOB_KEY_HOLDER:
            data = plaintext(secret.format, fleet.identities["bob-2026"], BOB_KEY_FIELD)
        else:
            data = plaintext(secret.format, f"s3cr3t-{secret.path.replace('/', '-')}")
        fleet.encrypt(secret.path, data)
        written = (fleet.root / secret.path).read_text()
        wanted = {name for group in secret.groups for name in group}
        got = {name for name, recipient in fleet.recipients.items() if recipient in written}
        if got != wanted:
            raise FleetError(f"sops encrypted {secret.path} for {sorted(got)}, not {sorted(wanted)}: the "
                             "generated .sops.yaml does not give it the rule this fixture expects")
    return fleet
