"""Use cases that touch the disk: find the repo and policy, load it, generate and check `.sops.yaml`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from .engine import Generated, build_rules
from .errors import InputError, PolicyError
from .fsutil import CONFIG_NAME, DEFAULT_POLICY_DIR, atomic_write, find_root, read_bytes
from .model import Policy
from .policy import key_owners, load_policy
from .sopsconfig import render

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Repo:
    """A repository root, its `.sops.yaml` path and its policy location."""

    root: Path
    policy_path: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    def display(self, path: Path) -> str:
        """A path as messages show it: relative to the root, `/`-separated."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def open_repo(cwd: Path, root: Path | None = None, policy: Path | None = None) -> Repo:
    found = find_root(cwd, root)
    policy_path = (policy if policy is not None else found / DEFAULT_POLICY_DIR).resolve()
    return Repo(found, policy_path)


def read_policy_sources(repo: Repo) -> list[tuple[str, bytes]]:
    """The policy file, or every *.yaml of the policy directory in name order."""
    path = repo.policy_path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"{repo.display(path)}: no *.yaml policy files in this directory")
    elif path.exists():
        files = [path]
    else:
        raise InputError(f"{repo.display(path)}: policy not found (create it, or pass --policy)")
    return [(repo.display(f), read_bytes(f, what="policy file")) for f in files]


def load(repo: Repo) -> Policy:
    return load_policy(read_policy_sources(repo))


def policy_label(repo: Repo) -> str:
    label = repo.display(repo.policy_path)
    return label + "/" if repo.policy_path.is_dir() else label


def generated_config(repo: Repo, policy: Policy) -> tuple[str, Generated]:
    """The `.sops.yaml` text the policy generates; refuses when a rule cannot be made."""
    generated = build_rules(policy)
    if generated.errors:
        raise PolicyError(generated.errors)
    return render(generated.rules, policy, key_owners(policy), policy_label(repo)), generated


@dataclass(frozen=True)
class CheckResult:
    up_to_date: bool
    diff: str


def check_config(repo: Repo, text: str) -> CheckResult:
    """Compare the generated text with `.sops.yaml` on disk, byte for byte."""
    path = repo.config_path
    current = read_bytes(path, what=".sops.yaml").decode("utf-8", "replace") if path.exists() else ""
    if current == text:
        return CheckResult(True, "")
    diff = difflib.unified_diff(
        current.splitlines(keepends=True), text.splitlines(keepends=True),
        fromfile=f"a/{CONFIG_NAME}" if path.exists() else "/dev/null", tofile=f"b/{CONFIG_NAME}",
    )
    return CheckResult(False, "".join(diff))


def write_config(repo: Repo, text: str, output: Path | None = None) -> Path:
    target = output if output is not None else repo.config_path
    atomic_write(target, text.encode("utf-8"))
    return target



def nested_configs(repo: Repo, policy: Policy) -> list[str]:
    """`.sops.yaml` files below the secrets dirs: sops run from there would use them instead."""
    found = []
    for directory in policy.settings.secrets_dirs:
        base = repo.root / directory
        if base.is_dir():
            found += sorted(repo.display(p) for p in base.rglob(CONFIG_NAME))
    return found


def lint(repo: Repo) -> list:
    """Lint problems of the repo's policy; a policy that does not load raises PolicyError."""
    from .lint import lint_policy

    policy = load(repo)
    return lint_policy(policy, build_rules(policy), nested_configs(repo, policy))
