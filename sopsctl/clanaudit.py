"""Clan trees as values, and clan secrets judged by their links (pure): whom the links grant, against the recipients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .model import (
    CreationRule,
    Finding,
    Policy,
    Problem,
    RuleKey,
    SopsMetadata,
    normalize_recipient,
)

CLAN_CLASS = "clan"  # the class label clan files carry in reports: their readers come from links, not rules
LINK_KINDS = ("users", "machines", "groups")  # the folders of links beside a secret, and in a group


@dataclass(frozen=True)
class ClanSecret:
    """One clan secret or var: the `secret` file and who its links say may read it."""

    path: str  # repo-relative path of the `secret` file
    users: tuple[str, ...] = ()
    machines: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    machine: str | None = None  # the machine a per-machine var belongs to

    @property
    def kind(self) -> str:
        return "var" if "/vars/" in f"/{self.path}" else "secret"


@dataclass(frozen=True)
class ClanGroup:
    users: tuple[str, ...] = ()
    machines: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClanTree:
    """What a clan tree declares; every path repo-relative and '/'-separated."""

    root: str  # the folder holding sops/ and vars/ ('' for the repository root)
    users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> recipients in key.json
    machines: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    groups: Mapping[str, ClanGroup] = field(default_factory=dict)
    secrets: tuple[ClanSecret, ...] = ()
    problems: tuple[tuple[str, str], ...] = ()  # (path, why) for key.json files that cannot be read

    def by_path(self) -> dict[str, ClanSecret]:
        return {s.path: s for s in self.secrets}


@dataclass(frozen=True)
class Grants:
    """What one secret's links grant: recipient -> the links that grant it, and the links that lead nowhere."""

    recipients: dict[str, tuple[str, ...]]
    dangling: tuple[str, ...]  # e.g. "users/alice": the link names a user clan no longer has


def grants(tree: ClanTree, secret: ClanSecret) -> Grants:
    recipients: dict[str, list[str]] = {}
    dangling: list[str] = []

    def grant(table: dict[str, tuple[str, ...]], name: str, label: str, link: str) -> None:
        if name not in table:
            dangling.append(link)
            return
        for recipient in table[name]:
            recipients.setdefault(recipient, []).append(label)

    for user in secret.users:
        grant(tree.users, user, f"user {user}", f"users/{user}")  # type: ignore[arg-type]
    for machine in secret.machines:
        grant(tree.machines, machine, f"machine {machine}", f"machines/{machine}")  # type: ignore[arg-type]
    for name in secret.groups:
        group = tree.groups.get(name)
        if group is None:
            dangling.append(f"groups/{name}")
            continue
        # a member the group links to but clan no longer has is the group's problem, reported once (lint_tree)
        for user in group.users:
            for recipient in tree.users.get(user, ()):
                recipients.setdefault(recipient, []).append(f"group {name} (user {user})")
        for machine in group.machines:
            for recipient in tree.machines.get(machine, ()):
                recipients.setdefault(recipient, []).append(f"group {name} (machine {machine})")
    return Grants({r: tuple(v) for r, v in recipients.items()}, tuple(dangling))


def holders(tree: ClanTree) -> dict[str, list[tuple[str, str]]]:
    """recipient -> the clan users and machines whose key.json holds it, as (user|machine, name)."""
    result: dict[str, list[tuple[str, str]]] = {}
    for kind, table in (("user", tree.users), ("machine", tree.machines)):
        for name, recipients in table.items():
            for recipient in recipients:
                result.setdefault(recipient, []).append((kind, name))
    return result


def clan_names(tree: ClanTree) -> dict[str, str]:
    """recipient -> how clan names its holder ('clan user crs58, clan user cameron')."""
    return {r: ", ".join(f"clan {kind} {name}" for kind, name in held) for r, held in holders(tree).items()}


def is_orphan_var(tree: ClanTree, secret: ClanSecret) -> bool:
    """A per-machine var of a machine clan no longer has: it should be deleted, not re-keyed."""
    return secret.machine is not None and secret.machine not in tree.machines


def _short(recipient: str) -> str:
    return recipient if len(recipient) <= 24 else recipient[:20] + "…" + recipient[-4:]


def secret_findings(tree: ClanTree, secret: ClanSecret, metadata: SopsMetadata, index,  # type: ignore[no-untyped-def]
                    names: dict[str, str]) -> list[Finding]:
    """Findings of one encrypted clan secret; `index` is the audit's KeyIndex (recipients -> policy keys)."""
    path = secret.path
    fix = f"sopsctl rekey {path}"
    findings: list[Finding] = []

    def add(kind: str, message: str, fix_text: str, subject: str | None = None, key: str | None = None) -> None:
        findings.append(Finding(kind, path, message, fix_text, subject, key, CLAN_CLASS))

    folder = path.rsplit("/", 1)[0]
    if is_orphan_var(tree, secret):
        add("orphaned", f"a var of machine '{secret.machine}', which clan no longer has (no "
            f"sops/machines/{secret.machine}/key.json)", f"delete {folder}/ (or restore the machine)")
        return findings
    granted = grants(tree, secret)
    for link in granted.dangling:
        add("orphaned", f"its link {link} names a {link.split('/')[0][:-1]} clan no longer has",
            f"remove {folder}/{link}, then {fix}")
    if len(metadata.groups) > 1:
        add("group-mismatch", f"the file has {len(metadata.groups)} key groups; clan secrets have one", fix)
        return findings

    def describe(recipient: str) -> str:
        name = index.key_of(recipient)
        subject = index.subject_of[name] if name else None
        clan = names.get(recipient)
        if subject is None:
            return clan or _short(recipient)
        return f"{subject} ({clan})" if clan else subject

    expected = {r: via for r, via in granted.recipients.items() if index.key_of(r) not in index.retired}
    present = {normalize_recipient(k.recipient) for group in metadata.groups for k in group
               if k.kind in ("age", "pgp")}
    for recipient, via in expected.items():
        if recipient not in present:
            name = index.key_of(recipient)
            add("missing-reader", f"its links grant {describe(recipient)} (via {', '.join(via)}) but that key "
                f"({_short(recipient)}) is not a recipient", fix, index.subject(recipient), name)
    for recipient in sorted(present - set(expected)):
        name = index.key_of(recipient)
        if name is not None and name in index.retired:
            add("retired-recipient", f"{describe(recipient)}'s key is retired but still a recipient",
                fix + " (then rotate it: the key may have read the data key)", index.subject(recipient), name)
        elif name is not None or recipient in names:
            add("unexpected-reader", f"{describe(recipient)} is a recipient but no link of this "
                f"{secret.kind} grants it", fix, index.subject(recipient), name)
        else:
            add("unknown-recipient", f"{_short(recipient)} is a recipient but belongs to no key in the policy or "
                "in clan", fix, recipient)
    return findings


def tree_findings(tree: ClanTree) -> list[Finding]:
    """Problems of the tree itself, once each: unreadable key.json, group links to users or machines gone."""
    findings = [Finding("unreadable", path, f"clan key file: {why}", "restore it from version control",
                        klass=CLAN_CLASS) for path, why in tree.problems]
    base = f"{tree.root}/sops" if tree.root else "sops"
    for name, group in sorted(tree.groups.items()):
        for kind, members, table in (("user", group.users, tree.users), ("machine", group.machines, tree.machines)):
            for member in members:
                if member not in table:
                    findings.append(Finding(
                        "orphaned", f"{base}/groups/{name}/{kind}s/{member}",
                        f"group '{name}' links to {kind} '{member}', which clan no longer has",
                        f"remove {base}/groups/{name}/{kind}s/{member}", klass=CLAN_CLASS))
    return findings


def rekey_rules(tree: ClanTree, index) -> dict[str, CreationRule | str]:  # type: ignore[no-untyped-def]
    """path -> the one-group rule each clan secret's links make, or why it has none (an orphaned var)."""
    rules: dict[str, CreationRule | str] = {}
    for secret in tree.secrets:
        if is_orphan_var(tree, secret):
            rules[secret.path] = (f"a var of machine '{secret.machine}', which clan no longer has: delete it "
                                  "rather than re-key it")
            continue
        granted = grants(tree, secret)
        keys = tuple(RuleKey(r, "age", index.key_of(r)) for r in granted.recipients
                     if index.key_of(r) not in index.retired)
        rules[secret.path] = CreationRule(None, (keys,), class_name=CLAN_CLASS)
    return rules


def lint_clan(policy: Policy, tree: ClanTree, index) -> list[Problem]:  # type: ignore[no-untyped-def]
    """Policy keys that disagree with clan's key.json, and clan users and machines the policy does not know."""
    problems: list[Problem] = []
    for name, key in sorted(policy.keys.items()):
        for kind, entity, table in (("user", key.clan_user, tree.users), ("machine", key.clan_machine, tree.machines)):
            if entity is None:
                continue
            recipients: Sequence[str] = table.get(entity, ())
            if not recipients:
                problems.append(Problem("clan", f"key '{name}' reads clan {kind} '{entity}', which clan does not "
                                        "have", key.source))
            elif key.age not in recipients:
                problems.append(Problem("clan", f"key '{name}' says {key.age} but clan's {kind} '{entity}' has "
                                        f"{', '.join(recipients)} in its key.json: one of them is stale", key.source))
    for kind, table in (("user", tree.users), ("machine", tree.machines)):
        for entity, recipients in sorted(table.items()):
            keys = [index.key_of(r) for r in recipients if index.key_of(r) is not None]
            if any(not index.owner_of[k].startswith("key:") for k in keys):
                continue
            owner = "an identity" if kind == "user" else "a host"
            if keys:
                why = f"is policy key '{keys[0]}', which no {owner.split()[1]} owns: add it to {owner}'s keys"
            else:
                why = (f"({', '.join(_short(r) for r in recipients)}) has no key in the policy: give {owner} a key "
                       f"with clan_{kind}: {entity}")
            problems.append(Problem("clan", f"clan {kind} '{entity}' {why}", None, "warning"))
    return problems
