"""The rule engine: Policy -> ordered creation rules (templates expanded, selectors resolved), and sops rule matching."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from . import globs, regexes
from .model import CreationRule, Policy, PolicyClass, Problem, RuleKey, Selector
from .policy import PLACEHOLDER_RE, account_owners, key_owners

Binding = Mapping[str, str]


@dataclass(frozen=True)
class Generated:
    """What the engine made of a policy: the rules in sops order, and what stopped some from being made."""

    rules: tuple[CreationRule, ...]
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")


class Resolver:
    """Turns selectors into ordered, de-duplicated lists of active key names."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.account_owner = account_owners(policy)
        self.owners = key_owners(policy)
        self._memo: dict[tuple[str, str | None], list[str]] = {}
        # SPEC §2: every key of a retired identity or host resolves to nothing, even named as key:N.
        entities = {"identity": policy.identities, "host": policy.hosts}
        self._retired_owner = {name for name, owner in self.owners.items()
                               if owner.kind in entities and not entities[owner.kind][owner.name].active}
        self._hosts_by_account: dict[str, list[str]] = {}
        for host in policy.hosts.values():
            for account in host.users:
                self._hosts_by_account.setdefault(account, []).append(host.name)

    def _active_keys(self, names: Iterable[str]) -> list[str]:
        keys = self.policy.keys
        return [n for n in names if n in keys and keys[n].active and n not in self._retired_owner]

    def identity_keys(self, name: str) -> list[str]:
        identity = self.policy.identities.get(name)
        return self._active_keys(identity.keys) if identity and identity.active else []

    def _host_keys(self, name: str) -> list[str]:
        host = self.policy.hosts.get(name)
        return self._active_keys(host.keys) if host and host.active else []

    def _accounts_on(self, host_name: str, relations: tuple[str, ...]) -> list[str]:
        host = self.policy.hosts.get(host_name)
        if host is None or not host.active:
            return []
        identities = {self.account_owner[a] for a, rel in host.users.items() if rel in relations
                      and a in self.account_owner}
        return [k for name in sorted(identities) for k in self.identity_keys(name)]

    def keys_of(self, selector: Selector, binding: Binding, _depth: int = 0) -> list[str]:
        arg = selector.arg
        if arg is not None:
            placeholder = PLACEHOLDER_RE.fullmatch(arg)
            if placeholder:
                arg = binding[placeholder.group(1)]
        # Thousands of template instances ask the same questions (role:admin, hosts…): remember answers.
        memo_key = (selector.kind, arg)
        found = self._memo.get(memo_key)
        if found is None:
            found = self._memo[memo_key] = self._resolve(selector.kind, arg, binding, _depth)
        return found

    def _resolve(self, kind: str, arg: str | None, binding: Binding, _depth: int) -> list[str]:
        policy = self.policy
        if kind == "identity":
            return self.identity_keys(arg)  # type: ignore[arg-type]
        if kind == "host":
            return self._host_keys(arg)  # type: ignore[arg-type]
        if kind == "key":
            return self._active_keys([arg])  # type: ignore[list-item]
        if kind == "group":
            if _depth > 32:
                return []  # cycles are reported by the policy checks
            return [k for member in policy.groups.get(arg, ()) for k in self.keys_of(member, binding, _depth + 1)]  # type: ignore[arg-type]
        if kind == "role":
            return [k for i in sorted(policy.identities) if policy.identities[i].role == arg
                    for k in self.identity_keys(i)]
        if kind == "hosts":
            return [k for h in sorted(policy.hosts) for k in self._host_keys(h)]
        if kind == "platform":
            return [k for h in sorted(policy.hosts) if policy.hosts[h].platform == arg for k in self._host_keys(h)]
        if kind == "admins-of":
            return self._accounts_on(arg, ("admin",))  # type: ignore[arg-type]
        if kind == "primary-of":
            return self._accounts_on(arg, ("primary",))  # type: ignore[arg-type]
        if kind == "users-of":
            return self._accounts_on(arg, ("primary", "admin", "user"))  # type: ignore[arg-type]
        if kind == "hosts-of":
            identity = policy.identities.get(arg)  # type: ignore[arg-type]
            hosts = {h for a in (identity.accounts if identity else ()) for h in self._hosts_by_account.get(a, ())}
            return [k for h in sorted(hosts) for k in self._host_keys(h)]
        raise ValueError(f"unknown selector kind {kind}")  # the loader refuses these

    def group(self, selectors: Sequence[Selector], binding: Binding) -> list[str]:
        """always_readers first, then the selectors in order; each key once."""
        names: dict[str, None] = {}
        for selector in (*self.policy.settings.always_readers, *selectors):
            for name in self.keys_of(selector, binding):
                names.setdefault(name, None)
        return list(names)

    def rule_key(self, name: str) -> RuleKey:
        key = self.policy.keys[name]
        if key.pgp:
            return RuleKey(key.pgp, "pgp", name)
        if key.ssh and self.policy.settings.host_key_form == "ssh" and self.owners[name].kind == "host":
            return RuleKey(key.ssh, "age", name)
        return RuleKey(key.age or "", "age", name)


def bindings(policy: Policy, cls: PolicyClass) -> Iterator[dict[str, str]]:
    """Template instances of a class, sorted by entity name; none for retired entities."""
    texts = cls.paths or ((cls.path_regex,) if cls.path_regex else ())
    used = {m for text in texts for m in PLACEHOLDER_RE.findall(text)}
    identities = policy.identities
    owner = account_owners(policy)

    def active_identity(account: str) -> str | None:
        name = owner.get(account)
        return name if name is not None and identities[name].active else None

    if "host" in used:
        for host_name in sorted(policy.hosts):
            host = policy.hosts[host_name]
            if not host.active:
                continue
            if used & {"account", "identity"}:
                for account in sorted(host.users):
                    identity = active_identity(account)
                    if identity is not None:
                        yield {"host": host_name, "account": account, "identity": identity}
            else:
                yield {"host": host_name}
    elif "account" in used:
        for account in sorted(owner):
            identity = active_identity(account)
            if identity is not None:
                yield {"account": account, "identity": identity}
    elif "identity" in used:
        for name in sorted(identities):
            if identities[name].active:
                yield {"identity": name}
    else:
        yield {}


def _regex_literal(name: str) -> str:
    """Escape an entity name for RE2 and Python alike (names are [A-Za-z0-9_.-], so only `.` matters)."""
    return re.sub(r"([.\\+*?()|\[\]{}^$])", r"\\\1", name)


# Placeholders travel through glob compilation as plain letters, so a class's globs are
# compiled once and each instance only substitutes names into the regex.
_TOKEN = "SOPSCTLx{}x"
_TOKEN_RE = re.compile("SOPSCTLx(host|identity|account)x")


def class_regex_template(cls: PolicyClass) -> str | None:
    """The class's path regex with placeholder tokens; None for a catch-all."""
    if cls.path_regex is not None:
        return PLACEHOLDER_RE.sub(lambda m: _TOKEN.format(m.group(1)), cls.path_regex)
    if not cls.paths:
        return None
    compiled = [globs.glob_to_regex(PLACEHOLDER_RE.sub(lambda m: _TOKEN.format(m.group(1)), p)) for p in cls.paths]
    if len(compiled) == 1:
        return compiled[0]
    # Each compiled glob is ^…$; one alternation keeps the rule a single anchored regex.
    return "^(?:" + "|".join(c[1:-1] for c in compiled) + ")$"


def instance_regex(template: str | None, binding: Binding) -> str | None:
    """One instance's path_regex: the entity names, regex-escaped, put in for the tokens."""
    if template is None or not binding:
        return template
    return _TOKEN_RE.sub(lambda m: _regex_literal(binding[m.group(1)]), template)


def build_rules(policy: Policy) -> Generated:
    """Every class instance, in class order then entity-name order, with its resolved key groups."""
    resolver = Resolver(policy)
    rules: list[CreationRule] = []
    problems: list[Problem] = []
    for cls in policy.classes:
        template = class_regex_template(cls)
        for binding in bindings(policy, cls):
            label = cls.name + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(binding.items())) + ")"
                                if binding else "")
            groups = [resolver.group(group, binding) for group in cls.key_groups]
            if any(not g for g in groups):
                which = "" if len(groups) == 1 else f" (key group {[bool(g) for g in groups].index(False) + 1})"
                problems.append(Problem("empty-class", f"class {label}{which} resolves to no active key: "
                                        "sops cannot encrypt for it; give it a reader", cls.source))
                continue
            threshold = None
            if len(groups) > 1:
                threshold = cls.threshold if cls.threshold is not None else len(groups)
                if threshold < 2 or threshold > len(groups):
                    problems.append(Problem("threshold", f"class {label}: threshold {threshold} with "
                                            f"{len(groups)} key groups; sops needs 2 <= threshold <= "
                                            f"{len(groups)}", cls.source))
                    continue
            elif cls.threshold is not None and cls.threshold != 1:
                problems.append(Problem("threshold", f"class {cls.name}: threshold {cls.threshold} with a single "
                                        "key group has no effect", cls.source, "warning"))
            rules.append(CreationRule(
                path_regex=instance_regex(template, binding),
                key_groups=tuple(tuple(resolver.rule_key(n) for n in g) for g in groups),
                threshold=threshold,
                options=cls.sops_options,
                class_name=cls.name,
                binding=tuple(sorted(binding.items())),
            ))
    return Generated(tuple(rules), tuple(problems))


def literal_prefix(regex: str) -> str:
    """What every match of an anchored regex starts with ('' when unsure): the key of RuleMatcher."""
    if not regex.startswith("^"):
        return ""
    depth, in_class, i = 0, False, 0
    while i < len(regex):  # a top-level `|` makes the leading `^` cover only one branch
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return ""
        i += 1
    out: list[str] = []
    i = 1
    while i < len(regex):
        c = regex[i]
        if c == "\\" and i + 1 < len(regex) and regex[i + 1] in ".+*?()[]{}|^$\\/-":
            literal, step = regex[i + 1], 2
        elif c in ".^$*+?()[]{}|\\":
            break
        else:
            literal, step = c, 1
        if i + step < len(regex) and regex[i + step] in "*+?{":
            break  # the literal may repeat or vanish: not part of every match
        out.append(literal)
        i += step
    return "".join(out)


class RuleMatcher:
    """sops's first-match rule choice, fast for thousands of rules and paths.

    Rules are bucketed by their literal prefix; a path only tries the rules whose prefix it
    starts with (and the unanchored ones), still in rule order, so the answer is match_rule's.
    """

    def __init__(self, rules: Sequence[CreationRule]):
        self.rules = rules
        self._always: list[int] = []
        self._by_prefix: dict[str, list[int]] = {}
        for index, rule in enumerate(rules):
            prefix = literal_prefix(rule.path_regex) if rule.path_regex is not None else ""
            (self._by_prefix.setdefault(prefix, []) if prefix else self._always).append(index)
        self._lengths = sorted({len(p) for p in self._by_prefix})

    def match(self, path: str) -> int | None:
        candidates = list(self._always)
        for length in self._lengths:
            if length > len(path):
                break
            candidates += self._by_prefix.get(path[:length], ())
        for index in sorted(candidates):
            regex = self.rules[index].path_regex
            if regex is None or regexes.compile_search(regex).search(path):
                return index
        return None


def match_rule(rules: Sequence[CreationRule], path: str) -> int | None:
    """Index of the rule sops would use for `path` (relative to the config's directory), or None.

    sops tries rules in order and takes the first whose path_regex is *found* in the path
    (an unanchored search); a rule without path_regex matches everything.
    """
    for index, rule in enumerate(rules):
        if rule.path_regex is None or regexes.compile_search(rule.path_regex).search(path):
            return index
    return None
