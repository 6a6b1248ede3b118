"""Frozen value types shared by every layer: policy entities, selectors, creation rules, problems."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

ACTIVE = "active"
RETIRED = "retired"

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True, order=True)
class SourceRef:
    """Where something was written: a policy file and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """One finding about a policy (lint) or one reason it cannot load; prints as `file:line: msg`."""

    code: str
    message: str
    source: SourceRef | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.severity}: {self.message} [{self.code}]"


@dataclass(frozen=True)
class Key:
    """A named key. `age` is the X25519 (or plugin) recipient, given or derived from `ssh`."""

    name: str
    age: str | None = None
    ssh: str | None = None  # "ssh-ed25519 AAAA…" without its comment
    pgp: str | None = None
    status: str = ACTIVE
    retired: str | None = None
    note: str | None = None
    source: SourceRef | None = None
    clan_user: str | None = None  # the recipient is read from clan's sops/users/<name>/key.json
    clan_machine: str | None = None  # … or from sops/machines/<name>/key.json

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every string under which this key can appear in a file's metadata."""
        return tuple(r for r in (self.age, self.ssh, self.pgp) if r)


@dataclass(frozen=True)
class Identity:
    """A person or service. `accounts` are unix / home-manager names that resolve to it."""

    name: str
    role: str
    accounts: tuple[str, ...]
    keys: tuple[str, ...]
    status: str = ACTIVE
    source: SourceRef | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True)
class Host:
    """A machine; `users` maps an account on it to its relation: primary, admin or user."""

    name: str
    platform: str | None
    keys: tuple[str, ...]
    users: Mapping[str, str] = field(default_factory=dict)
    status: str = ACTIVE
    source: SourceRef | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


SELECTOR_KINDS_WITH_ARG = (
    "identity",
    "host",
    "key",
    "group",
    "role",
    "platform",
    "admins-of",
    "users-of",
    "primary-of",
    "hosts-of",
)
SELECTOR_KINDS_BARE = ("hosts",)


@dataclass(frozen=True)
class Selector:
    """`kind:arg` as written in readers, key_groups, groups or always_readers (`hosts` has no arg)."""

    kind: str
    arg: str | None
    source: SourceRef | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


@dataclass(frozen=True)
class PolicyClass:
    """A class of secret paths and who reads them; `key_groups` has one group for `readers`."""

    name: str
    paths: tuple[str, ...]  # globs; empty with path_regex or for a catch-all
    path_regex: str | None
    key_groups: tuple[tuple[Selector, ...], ...]
    threshold: int | None
    sops_options: tuple[tuple[str, object], ...] = ()
    source: SourceRef | None = None

    @property
    def is_catch_all(self) -> bool:
        return not self.paths and self.path_regex is None


@dataclass(frozen=True)
class Settings:
    secrets_dirs: tuple[str, ...] = ("secrets",)
    always_readers: tuple[Selector, ...] = ()
    fallback: str | None = None  # None means `deny`
    host_key_form: Literal["age", "ssh"] = "age"
    ignore: tuple[str, ...] = ()
    clan_root: str | None = None  # the folder holding clan's sops/ and vars/ (default: found on its own)


@dataclass(frozen=True)
class KeyBearing:
    """A secret file that holds a private key: whoever reads `path` reads what `holder` reads."""

    path: str
    holder: Selector
    source: SourceRef | None = None


@dataclass(frozen=True)
class Policy:
    settings: Settings
    keys: Mapping[str, Key]
    identities: Mapping[str, Identity]
    hosts: Mapping[str, Host]
    groups: Mapping[str, tuple[Selector, ...]]
    classes: tuple[PolicyClass, ...]
    key_bearing: tuple[KeyBearing, ...] = ()
    sources: tuple[str, ...] = ()  # the policy files, as named in messages


# --- what the engine produces and what .sops.yaml parsing yields -------------------------


@dataclass(frozen=True)
class RuleKey:
    """One master key in a creation rule: the recipient string sops stores, and its policy name."""

    recipient: str
    kind: str = "age"  # age, pgp, or a type sopsctl only reports: kms, gcp_kms, azure_keyvault, hc_vault
    name: str | None = None  # the policy key (or .sops.yaml anchor) it came from


@dataclass(frozen=True)
class Owner:
    """Who holds a key: `identity:N`, `host:N`, or `key:N` for a key nobody owns."""

    kind: Literal["identity", "host", "key"]
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class CreationRule:
    """One `.sops.yaml` creation rule: a path regex, key groups and sops options."""

    path_regex: str | None
    key_groups: tuple[tuple[RuleKey, ...], ...]
    threshold: int | None = None  # shamir_threshold as written; None when absent or 0
    options: tuple[tuple[str, object], ...] = ()
    class_name: str | None = None
    binding: tuple[tuple[str, str], ...] = ()  # template placeholder -> entity name

    @property
    def effective_threshold(self) -> int:
        """Groups needed to recover the data key, as sops computes it."""
        if len(self.key_groups) <= 1:
            return 1
        return self.threshold or len(self.key_groups)

    def label(self) -> str:
        if self.class_name is None:
            return self.path_regex or "(catch-all)"
        bound = ", ".join(f"{k}={v}" for k, v in self.binding)
        return f"{self.class_name} ({bound})" if bound else self.class_name


# --- what an encrypted file says about itself, and what the audit finds --------------------


def normalize_recipient(recipient: str) -> str:
    """ssh recipients are stored verbatim (comment included); compare them without it."""
    recipient = recipient.strip()
    if recipient.startswith("ssh-"):
        return " ".join(recipient.split()[:2])
    return recipient


class FileKey(NamedTuple):
    """One master key entry in a file's `sops` metadata (age recipient, pgp fp, kms arn, …).

    A NamedTuple, not a dataclass: audits build one per recipient per file (~150k for 10k files)
    and a frozen dataclass's __init__ is four times slower.
    """

    kind: str  # age, pgp, kms, gcp_kms, azure_kv, hc_vault
    recipient: str  # as stored; ssh recipients keep their comment
    enc: str | None = None  # the wrapped data key (or share); never needed by audit


@dataclass(frozen=True)
class SopsMetadata:
    """The `sops` entry of an encrypted file, in the form every format shares."""

    groups: tuple[tuple[FileKey, ...], ...]
    threshold: int | None = None  # shamir_threshold as written (None when absent)
    layout: Literal["flat", "groups"] = "flat"
    lastmodified: str | None = None
    mac: str | None = None
    version: str | None = None
    options: tuple[tuple[str, object], ...] = ()  # encrypted_regex, unencrypted_suffix, mac_only_encrypted…

    @property
    def effective_threshold(self) -> int:
        if len(self.groups) <= 1:
            return 1
        return self.threshold or len(self.groups)


FINDING_KINDS = (
    "missing-reader",
    "unexpected-reader",
    "unknown-recipient",
    "retired-recipient",
    "group-mismatch",
    "plaintext",
    "uncovered",
    "fallback-only",
    "stale-config",
    "transitive-reader",
    "unreadable",
    "orphaned",
)
WARNING_KINDS = ("transitive-reader", "fallback-only", "orphaned")


@dataclass(frozen=True)
class Finding:
    """One audit finding: one cause, one finding (SPEC §4 'Audit findings')."""

    kind: str
    path: str  # repo-relative, '/'-separated
    message: str
    fix: str  # one line, usually the command to run
    subject: str | None = None  # identity:N, host:N, key:N, or the raw recipient
    key: str | None = None  # the policy key's name
    klass: str | None = None  # the governing class (rule label)
    via: tuple[str, ...] = ()  # transitive-reader: the chain of key-bearing secrets

    @property
    def severity(self) -> Severity:
        return "warning" if self.kind in WARNING_KINDS else "error"
