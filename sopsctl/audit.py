"""The audit (pure): files' real recipients against the policy's rules; who can read what, directly or transitively."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import NamedTuple

from . import clanaudit
from .clanaudit import CLAN_CLASS, ClanTree
from .engine import RuleMatcher
from .model import CreationRule, FileKey, Finding, Policy, SopsMetadata, normalize_recipient
from .policy import key_owners

MAX_COALITIONS = 20


@dataclass(frozen=True)
class ScannedFile:
    """What the disk said about one file: its metadata, or that it is plain, or why it is unreadable."""

    path: str  # repo-relative, '/'-separated
    format: str
    metadata: SopsMetadata | None = None
    error: str | None = None  # set when the file claims to be SOPS but its metadata is broken


class RecipientView(NamedTuple):
    """A file's recipient with the policy key and subject it belongs to (NamedTuple: built per recipient)."""

    recipient: str
    group: int
    key: str | None
    owner: str | None
    kind: str = "age"


@dataclass(frozen=True)
class AuditedFile:
    path: str
    format: str
    status: str  # encrypted | plaintext | unreadable
    rule_index: int | None
    klass: str | None
    threshold: int | None
    recipients: tuple[RecipientView, ...] = ()


@dataclass(frozen=True)
class AuditReport:
    files: tuple[AuditedFile, ...]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)


# -- recipients -> policy keys ----------------------------------------------------------------------


@dataclass
class KeyIndex:
    """Maps every recipient form of every policy key to the key, and keys to their subjects."""

    policy: Policy
    by_recipient: dict[str, str] = field(default_factory=dict)
    subject_of: dict[str, str] = field(default_factory=dict)  # who a finding names (key:N when retired)
    owner_of: dict[str, str] = field(default_factory=dict)  # who holds the key, retired or not
    retired: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, policy: Policy) -> KeyIndex:
        index = cls(policy)
        owners = key_owners(policy)
        entities = {"identity": policy.identities, "host": policy.hosts}
        for name, key in policy.keys.items():
            for recipient in key.recipients:
                index.by_recipient.setdefault(normalize_recipient(recipient), name)
            owner = owners[name]
            index.owner_of[name] = str(owner)
            owner_entity = entities.get(owner.kind, {}).get(owner.name)
            if not key.active:
                index.retired.add(name)
                index.subject_of[name] = f"key:{name}"  # a retired key speaks for itself
            else:
                if owner_entity is not None and not owner_entity.active:
                    index.retired.add(name)
                index.subject_of[name] = str(owner)
        return index

    def key_of(self, recipient: str) -> str | None:
        found = self.by_recipient.get(recipient)  # the common case: an age recipient, already normal
        return found if found is not None else self.by_recipient.get(normalize_recipient(recipient))

    def view(self, key: FileKey, group: int) -> RecipientView:
        name = self.key_of(key.recipient)
        return RecipientView(key.recipient, group, name, self.owner_of.get(name) if name else None, key.kind)

    def subject(self, recipient: str) -> str:
        name = self.key_of(recipient)
        return self.subject_of[name] if name else recipient

    def subject_keys(self) -> dict[str, set[str]]:
        """subject -> its key names (retired ones included: they can still decrypt old files)."""
        result: dict[str, set[str]] = {}
        for name, subject in self.subject_of.items():
            result.setdefault(subject, set()).add(name)
        return result


def _groups_as_names(metadata: SopsMetadata, index: KeyIndex) -> list[set[str]]:
    """Each group as the set of who holds its keys: a policy key name, or the raw recipient."""
    return [{index.key_of(k.recipient) or normalize_recipient(k.recipient) for k in group}
            for group in metadata.groups]


def can_read(keys: Iterable[str], groups: Sequence[set[str]], threshold: int) -> bool:
    keys = set(keys)
    return sum(1 for group in groups if keys & group) >= threshold


# -- findings for one file ------------------------------------------------------------------------------


FIX_REKEY = "sops updatekeys -y {path}"


def _file_findings(path: str, metadata: SopsMetadata, rule: CreationRule, label: str,
                   index: KeyIndex) -> list[Finding]:
    findings: list[Finding] = []

    def add(kind: str, message: str, fix: str, subject: str | None = None, key: str | None = None) -> None:
        findings.append(Finding(kind, path, message, fix.format(path=path), subject, key, label))

    group_mismatch = (len(metadata.groups) != len(rule.key_groups)
                      or metadata.effective_threshold != rule.effective_threshold)
    if group_mismatch:
        add("group-mismatch", f"the file has {len(metadata.groups)} key group(s) with threshold "
            f"{metadata.effective_threshold}; its rule ({label}) says {len(rule.key_groups)} with threshold "
            f"{rule.effective_threshold}", FIX_REKEY)
    for position, file_group in enumerate(metadata.groups):
        rule_group = rule.key_groups[position] if position < len(rule.key_groups) and not group_mismatch else None
        expected = {k.name for k in rule_group} if rule_group is not None else set()
        where = f" in key group {position + 1}" if len(metadata.groups) > 1 else ""
        for entry in file_group:
            name = index.key_of(entry.recipient)
            if name is None:
                if entry.kind in ("age", "pgp"):
                    add("unknown-recipient", f"{_short(entry.recipient)} is a recipient{where} but belongs to no "
                        "key in the policy", "add the key to the policy, or re-key: " + FIX_REKEY,
                        normalize_recipient(entry.recipient))
                continue
            subject = index.subject_of[name]
            if name in index.retired:
                add("retired-recipient", f"{subject}'s key '{name}' is retired but still a recipient{where}",
                    FIX_REKEY + " (then rotate: it may have read the data key)", subject, name)
            elif rule_group is not None and name not in expected:
                add("unexpected-reader", f"{subject} ('{name}') is a recipient{where} but {label} does not "
                    "grant it", FIX_REKEY, subject, name)
        if rule_group is None:
            continue
        present = {k.recipient if k.recipient.startswith("age1") else normalize_recipient(k.recipient)
                   for k in file_group}
        for rule_key in rule_group:
            if rule_key.recipient in present or normalize_recipient(rule_key.recipient) in present:
                continue
            name = rule_key.name
            subject = index.subject_of.get(name or "", rule_key.recipient)
            other_form = [r for r in index.policy.keys[name].recipients if normalize_recipient(r) in present] \
                if name in index.policy.keys else []
            detail = (f"; the file has its other form {_short(other_form[0])}, which the identity the rule expects "
                      "cannot open") if other_form else ""
            add("missing-reader", f"{label} grants {subject} ('{name}'){where} but that key is not a recipient"
                f"{detail}", FIX_REKEY, subject, name)
    return findings


def _short(recipient: str) -> str:
    recipient = normalize_recipient(recipient)
    return recipient if len(recipient) <= 24 else recipient[:20] + "…" + recipient[-4:]


# -- the whole audit ----------------------------------------------------------------------------------------


def audit(
    policy: Policy,
    rules: Sequence[CreationRule],
    files: Sequence[ScannedFile],
    *,
    config_stale: bool = False,
    clan: ClanTree | None = None,
) -> AuditReport:
    """Judge every scanned file: by its rule, or, for clan secrets and vars in `files`, by their links."""
    index = KeyIndex.build(policy)
    findings: list[Finding] = []
    audited: list[AuditedFile] = []
    fallback = policy.settings.fallback
    matcher = RuleMatcher(rules)
    labels = [rule.label() for rule in rules]
    if config_stale:
        findings.append(Finding("stale-config", ".sops.yaml", ".sops.yaml differs from what the policy generates",
                                "sopsctl generate"))
    clan_secrets = clan.by_path() if clan is not None else {}
    clan_holders = clanaudit.clan_names(clan) if clan is not None else {}
    for scanned in files:
        secret = clan_secrets.get(scanned.path)
        if secret is not None:
            audited.append(_audited_clan(scanned, index))
            if scanned.error is not None or scanned.metadata is None:
                findings.append(_unusable(scanned, CLAN_CLASS))
            else:
                findings += clanaudit.secret_findings(clan, secret, scanned.metadata, index, clan_holders)
            continue
        rule_index = matcher.match(scanned.path)
        rule = rules[rule_index] if rule_index is not None else None
        label = labels[rule_index] if rule_index is not None else None
        if scanned.error is not None or scanned.metadata is None:
            findings.append(_unusable(scanned, label))
            status = "unreadable" if scanned.error is not None else "plaintext"
            audited.append(AuditedFile(scanned.path, scanned.format, status, rule_index, label, None))
            continue
        metadata = scanned.metadata
        recipients = tuple(index.view(k, g) for g, group in enumerate(metadata.groups) for k in group)
        audited.append(AuditedFile(scanned.path, scanned.format, "encrypted", rule_index, label,
                                   metadata.effective_threshold, recipients))
        if rule is None:
            findings.append(Finding("uncovered", scanned.path, "no class governs this file: sops would refuse to "
                                    "create or re-key it", "add a class whose path covers it, or move the file"))
            findings += _orphan_recipients(scanned.path, metadata, index)
            continue
        if fallback is not None and rule.class_name == fallback:
            findings.append(Finding("fallback-only", scanned.path, f"only the fallback class '{fallback}' governs "
                                    "this file", "give it a class of its own", klass=label))
        findings += _file_findings(scanned.path, metadata, rule, labels[rule_index], index)
    if clan is not None:
        findings += clanaudit.tree_findings(clan)
    findings += transitive_findings(policy, index, files, {a.path: a.klass for a in audited})
    order = {kind: i for i, kind in enumerate(_KIND_ORDER)}
    findings.sort(key=lambda f: (f.path, order.get(f.kind, 99), f.subject or "", f.key or ""))
    return AuditReport(tuple(audited), tuple(findings))


def _unusable(scanned: ScannedFile, label: str | None) -> Finding:
    """The finding for a file that is not usable SOPS: malformed metadata, or not encrypted at all."""
    if scanned.error is not None:
        return Finding("unreadable", scanned.path, f"SOPS metadata is malformed: {scanned.error}",
                       "restore it from version control; sops cannot decrypt it either", klass=label)
    return Finding("plaintext", scanned.path, "not SOPS-encrypted, yet under a secrets directory",
                   f"encrypt it (sops encrypt -i {scanned.path}) or list it in settings.ignore", klass=label)


def _audited_clan(scanned: ScannedFile, index: KeyIndex) -> AuditedFile:
    if scanned.metadata is None:
        status = "unreadable" if scanned.error is not None else "plaintext"
        return AuditedFile(scanned.path, scanned.format, status, None, CLAN_CLASS, None)
    metadata = scanned.metadata
    recipients = tuple(index.view(k, g) for g, group in enumerate(metadata.groups) for k in group)
    return AuditedFile(scanned.path, scanned.format, "encrypted", None, CLAN_CLASS, metadata.effective_threshold,
                       recipients)


_KIND_ORDER = ("stale-config", "unreadable", "plaintext", "uncovered", "group-mismatch", "missing-reader",
               "unexpected-reader", "unknown-recipient", "retired-recipient", "fallback-only", "transitive-reader",
               "orphaned")


def _orphan_recipients(path: str, metadata: SopsMetadata, index: KeyIndex) -> list[Finding]:
    """On an uncovered file there is no rule to compare with, but unknown and retired keys are still wrong."""
    findings = []
    for entry in (k for group in metadata.groups for k in group):
        name = index.key_of(entry.recipient)
        if name is None and entry.kind in ("age", "pgp"):
            findings.append(Finding("unknown-recipient", path, f"{_short(entry.recipient)} belongs to no key in "
                                    "the policy", "add the key to the policy, or re-encrypt the file",
                                    normalize_recipient(entry.recipient)))
        elif name in index.retired:
            subject = index.subject_of[name]
            findings.append(Finding("retired-recipient", path, f"{subject}'s key '{name}' is retired but still a "
                                    "recipient", "re-encrypt the file without it", subject, name))
    return findings


# -- who can read what --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    path: str
    alone: bool
    direct: bool
    via: tuple[str, ...] = ()


def key_bearing_holders(policy: Policy) -> dict[str, set[str]]:
    """key-bearing secret path -> the policy keys whose private halves it holds."""
    result: dict[str, set[str]] = {}
    for entry in policy.key_bearing:
        kind, name = entry.holder.kind, entry.holder.arg or ""
        if kind == "holder":
            kind = "key" if name in policy.keys else "identity" if name in policy.identities else "host"
        if kind == "key":
            keys = {name}
        elif kind == "identity":
            keys = set(policy.identities[name].keys) if name in policy.identities else set()
        elif kind == "host":
            keys = set(policy.hosts[name].keys) if name in policy.hosts else set()
        else:
            keys = set()
        result[entry.path] = keys
    return result


class ReadGraph:
    """Files as groups of key names, and the closure of what a key set reads through key-bearing secrets."""

    def __init__(self, policy: Policy, index: KeyIndex, files: Sequence[ScannedFile]):
        self.files = {f.path: (_groups_as_names(f.metadata, index), f.metadata.effective_threshold)
                      for f in files if f.metadata is not None}
        self.holders = {path: keys for path, keys in key_bearing_holders(policy).items() if path in self.files}

    def readable(self, keys: set[str]) -> dict[str, bool]:
        """path -> alone? for every file where `keys` hold at least one key group."""
        result = {}
        for path, (groups, threshold) in self.files.items():
            covered = sum(1 for g in groups if keys & g)
            if covered:
                result[path] = covered >= threshold
        return result

    def closure(self, keys: set[str]) -> tuple[set[str], dict[str, tuple[str, ...]]]:
        """Every key reachable by reading key-bearing secrets, with the chain of secrets for each."""
        keys = set(keys)
        via_of_key: dict[str, tuple[str, ...]] = {k: () for k in keys}
        expanded: set[str] = set()
        changed = bool(self.holders)
        while changed:
            changed = False
            for path, held in self.holders.items():
                if path in expanded:
                    continue
                groups, threshold = self.files[path]
                if not can_read(keys, groups, threshold):
                    continue
                expanded.add(path)
                # the chain: the shortest chain among the keys that opened this secret, then this secret
                openers = [via_of_key[k] for k in keys if any(k in g for g in groups)]
                chain = min(openers, key=len) + (path,)
                for key in held - keys:
                    via_of_key[key] = chain
                    keys.add(key)
                    changed = True
        return keys, via_of_key

    def access(self, keys: set[str]) -> list[Access]:
        direct = self.readable(keys)
        result = [Access(path, alone, True) for path, alone in sorted(direct.items())]
        all_keys, via_of_key = self.closure(keys)
        if all_keys != keys:
            for path, alone in sorted(self.readable(all_keys).items()):
                if alone and not direct.get(path, False):
                    groups, _ = self.files[path]
                    gained = [via_of_key[k] for k in all_keys - keys if any(k in g for g in groups)]
                    via = min(gained, key=len) if gained else ()
                    result = [a for a in result if a.path != path] + [Access(path, True, False, via)]
        return sorted(result, key=lambda a: a.path)


def transitive_findings(policy: Policy, index: KeyIndex, files: Sequence[ScannedFile],
                        classes: Mapping[str, str | None]) -> list[Finding]:
    if not policy.key_bearing:
        return []
    graph = ReadGraph(policy, index, files)
    if not graph.holders:
        return []
    findings = []
    for subject, keys in sorted(index.subject_keys().items()):
        if not any(can_read(keys, *graph.files[p]) for p in graph.holders):
            continue  # reads no key-bearing secret: nothing transitive
        for access in graph.access(keys):
            if access.direct:
                continue
            chain = " -> ".join(access.via)
            held = sorted({index.subject_of.get(k, f"key:{k}") for k in graph.holders[access.via[-1]]})
            findings.append(Finding(
                "transitive-reader", access.path,
                f"{subject} can read this only through {chain} (it holds the private key of {', '.join(held)})",
                "narrow who reads the key-bearing secret, or accept this access", subject, None,
                classes.get(access.path), access.via))
    return findings


# -- who: readers and coalitions of one file ------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    subject: str
    keys: tuple[str, ...]
    alone: bool


@dataclass(frozen=True)
class WhoReport:
    path: str
    source: str  # file | policy
    threshold: int
    groups: tuple[tuple[RecipientView, ...], ...]
    readers: tuple[Reader, ...]
    coalitions: tuple[tuple[str, ...], ...]
    coalitions_cut: bool


def who(path: str, groups: Sequence[Sequence[FileKey]], threshold: int, source: str, index: KeyIndex) -> WhoReport:
    views = tuple(tuple(index.view(k, g) for k in group) for g, group in enumerate(groups))
    covers: dict[str, set[int]] = {}
    keys_of: dict[str, set[str]] = {}
    for g, group in enumerate(views):
        for view in group:
            subject = index.subject_of[view.key] if view.key else normalize_recipient(view.recipient)
            covers.setdefault(subject, set()).add(g)
            keys_of.setdefault(subject, set()).add(view.key or normalize_recipient(view.recipient))
    readers = tuple(Reader(s, tuple(sorted(keys_of[s])), len(covers[s]) >= threshold) for s in sorted(covers))
    coalitions, cut = minimal_coalitions(covers, threshold)
    return WhoReport(path, source, threshold, views, readers, coalitions, cut)


def minimal_coalitions(covers: Mapping[str, set[int]], threshold: int,
                       limit: int = MAX_COALITIONS) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """The smallest sets of subjects whose keys together cover `threshold` groups (no member is spare)."""
    subjects = sorted(covers)
    found: list[tuple[str, ...]] = []
    for size in range(1, threshold + 1):  # a minimal coalition never needs more than threshold members
        for combo in combinations(subjects, size):
            if any(set(smaller) <= set(combo) for smaller in found):
                continue
            if len(set().union(*(covers[s] for s in combo))) >= threshold:
                found.append(combo)
                if len(found) > limit:
                    return tuple(found[:limit]), True
    return tuple(found), False
