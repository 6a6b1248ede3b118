"""Reference checks on an assembled Policy (pure): who owns each key, unknown names, cycles, duplicates."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .model import Owner, Policy, Problem, Selector, SourceRef

PLACEHOLDER_RE = re.compile(r"\{(host|identity|account)\}")


def key_owners(policy: Policy) -> dict[str, Owner]:
    """Which identity or host holds each key; keys nobody lists are owned by themselves."""
    owners: dict[str, Owner] = {}
    for identity in policy.identities.values():
        for key in identity.keys:
            owners.setdefault(key, Owner("identity", identity.name))
    for host in policy.hosts.values():
        for key in host.keys:
            owners.setdefault(key, Owner("host", host.name))
    for name in policy.keys:
        owners.setdefault(name, Owner("key", name))
    return owners


def account_owners(policy: Policy) -> dict[str, str]:
    """account -> identity name."""
    return {account: identity.name for identity in policy.identities.values() for account in identity.accounts}


def check_references(
    policy: Policy,
    key_refs: Sequence[tuple[str, SourceRef, str]],
    account_refs: Sequence[tuple[str, SourceRef, str]],
) -> list[Problem]:
    problems: list[Problem] = []

    def add(message: str, source: SourceRef | None, code: str = "reference") -> None:
        problems.append(Problem(code, message, source))

    holders: dict[str, str] = {}
    for key, where, holder in key_refs:
        if key not in policy.keys:
            add(f"{holder} lists key '{key}', which is not defined under keys", where)
        elif key in holders and holders[key] != holder:
            add(f"key '{key}' is listed by {holders[key]} and by {holder}: a key has one owner", where,
                "duplicate-owner")
        holders.setdefault(key, holder)
    seen_recipient: dict[str, str] = {}
    for key in policy.keys.values():
        for recipient in key.recipients:
            other = seen_recipient.get(recipient)
            if other is not None:
                add(f"keys '{other}' and '{key.name}' are the same recipient {recipient[:24]}…; one key, one name",
                    key.source, "duplicate-recipient")
            seen_recipient.setdefault(recipient, key.name)
    accounts: dict[str, str] = {}
    for identity in policy.identities.values():
        for account in identity.accounts:
            if account in accounts and accounts[account] != identity.name:
                add(f"account '{account}' belongs to identities '{accounts[account]}' and '{identity.name}'",
                    identity.source, "duplicate")
            accounts.setdefault(account, identity.name)
    for account, where, host in account_refs:
        if account not in accounts:
            add(f"host '{host}': account '{account}' belongs to no identity (add it to an identity's accounts)",
                where)

    def check(selector: Selector, context: str) -> None:
        arg = selector.arg
        if arg is None or PLACEHOLDER_RE.fullmatch(arg):
            return
        if selector.kind in ("role", "platform"):
            return  # words, not names: a role or platform nobody has yet is a lint warning
        table: dict[str, tuple[object, str]] = {
            "identity": (policy.identities, "identity"),
            "hosts-of": (policy.identities, "identity"),
            "host": (policy.hosts, "host"),
            "admins-of": (policy.hosts, "host"),
            "users-of": (policy.hosts, "host"),
            "primary-of": (policy.hosts, "host"),
            "key": (policy.keys, "key"),
            "group": (policy.groups, "group"),
        }
        names, noun = table[selector.kind]
        if arg not in names:  # type: ignore[operator]
            add(f"{context}: selector '{selector}' names no {noun} '{arg}'", selector.source)

    for cls in policy.classes:
        for group in cls.key_groups:
            for selector in group:
                check(selector, f"class '{cls.name}'")
    for name, members in policy.groups.items():
        for selector in members:
            check(selector, f"group '{name}'")
            if PLACEHOLDER_RE.fullmatch(selector.arg or ""):
                add(f"group '{name}': placeholders belong in class readers, not in groups", selector.source,
                    "template")
    for selector in policy.settings.always_readers:
        check(selector, "settings.always_readers")
        if PLACEHOLDER_RE.fullmatch(selector.arg or ""):
            add("settings.always_readers: placeholders are not allowed here", selector.source, "template")
    problems.extend(_group_cycles(policy))
    for entry in policy.key_bearing:
        holder = entry.holder
        if holder.kind == "holder":
            if holder.arg not in policy.keys and holder.arg not in policy.identities \
                    and holder.arg not in policy.hosts:
                add(f"key_bearing '{entry.path}': '{holder.arg}' is no key, identity or host", holder.source)
        else:
            check(holder, f"key_bearing '{entry.path}'")
    return problems


def _group_cycles(policy: Policy) -> list[Problem]:
    problems = []
    for start in policy.groups:
        stack, seen = [start], set()
        while stack:
            current = stack.pop()
            for selector in policy.groups.get(current, ()):
                if selector.kind != "group":
                    continue
                if selector.arg == start:
                    problems.append(Problem("reference", f"group '{start}' contains itself (through group "
                                            f"'{current}')", selector.source))
                    stack = []
                    break
                if selector.arg not in seen:
                    seen.add(selector.arg)
                    stack.append(selector.arg)  # type: ignore[arg-type]
    return problems
