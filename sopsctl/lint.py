"""Policy lint (pure): lockout risk, unreachable and overlapping class instances, unused keys, engine problems."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from . import automata
from .engine import Generated, Resolver
from .model import CreationRule, Policy, PolicyClass, Problem, SourceRef
from .policy import key_owners


def lint_policy(policy: Policy, generated: Generated, nested_configs: Sequence[str] = (),
                extra: Sequence[Problem] = ()) -> list[Problem]:
    """Every problem of a loaded policy (and `extra` ones found elsewhere, e.g. clan's), errors first, in a stable order."""
    classes = {cls.name: cls for cls in policy.classes}
    problems = list(generated.problems)
    problems += lockout_problems(policy, generated.rules)
    problems += _reachability(generated.rules, classes)
    problems += _unused(policy, generated.rules)
    problems += _vacuous_selectors(policy)
    problems += [Problem("nested-config", f"{path}: a nested .sops.yaml; sopsctl manages one config per repo "
                         "root and ignores it, but sops run from that folder would use it", None, "warning")
                 for path in nested_configs]
    problems += extra
    order = {"error": 0, "warning": 1, "note": 2}
    return sorted(problems, key=lambda p: (order[p.severity], p.source or SourceRef("", 0), p.message))


def lockout_problems(policy: Policy, rules: Sequence[CreationRule]) -> list[Problem]:
    """A rule nobody trusted can open alone is one lost laptop away from being unreadable."""
    classes = {cls.name: cls for cls in policy.classes}
    resolver = Resolver(policy)
    trusted: dict[str, set[str]] = {}
    for name in sorted(policy.identities):
        identity = policy.identities[name]
        if identity.role == "admin" and identity.active:
            trusted[f"identity:{name}"] = set(resolver.identity_keys(name))
    for selector in policy.settings.always_readers:
        for key in resolver.keys_of(selector, {}):
            trusted[f"key:{key}"] = {key}
    problems = []
    for rule in rules:
        groups = [{k.name for k in group} for group in rule.key_groups]
        need = rule.effective_threshold
        if not any(sum(1 for g in groups if keys & g) >= need for keys in trusted.values()):
            problems.append(Problem(
                "lockout-risk",
                f"class {rule.label()}: no admin identity and no always_readers key can read it alone; "
                "add role:admin to its readers or set settings.always_readers (e.g. an offline recovery key)",
                classes[rule.class_name].source if rule.class_name else None,
            ))
    return problems


def _unused(policy: Policy, rules: Sequence[CreationRule]) -> list[Problem]:
    used = {k.name for rule in rules for group in rule.key_groups for k in group}
    owners = key_owners(policy)
    problems = []
    for name in sorted(policy.keys):
        key = policy.keys[name]
        if key.active and name not in used:
            problems.append(Problem("unused-key", f"key '{name}' ({owners[name]}) reads nothing: no class emits it",
                                    key.source, "warning"))
    for kind, entities in (("identity", policy.identities), ("host", policy.hosts)):
        for name in sorted(entities):
            entity = entities[name]
            if entity.active and not any(k in policy.keys and policy.keys[k].active for k in entity.keys):
                problems.append(Problem("no-key", f"{kind} '{name}' has no active key: it can read nothing",
                                        entity.source, "warning"))
    return problems


def _vacuous_selectors(policy: Policy) -> list[Problem]:
    """role:R and platform:P are words, not names: one nobody has is likely a typo."""
    roles = {i.role for i in policy.identities.values()}
    platforms = {h.platform for h in policy.hosts.values() if h.platform}
    selectors = [s for cls in policy.classes for group in cls.key_groups for s in group]
    selectors += [s for members in policy.groups.values() for s in members]
    selectors += list(policy.settings.always_readers)
    problems = []
    for selector in selectors:
        if selector.kind == "role" and selector.arg not in roles:
            problems.append(Problem("unknown-role", f"selector '{selector}': no identity has role "
                                    f"'{selector.arg}' (roles: {', '.join(sorted(roles)) or 'none'})",
                                    selector.source, "warning"))
        if selector.kind == "platform" and selector.arg not in platforms:
            problems.append(Problem("unknown-platform", f"selector '{selector}': no host has platform "
                                    f"'{selector.arg}' (platforms: {', '.join(sorted(platforms)) or 'none'})",
                                    selector.source, "warning"))
    return problems


def _candidates(prefixes: list[str]) -> list[list[int]]:
    """For each rule, the earlier rules whose literal prefixes are compatible (one extends the other).

    Two anchored regexes can only share a path if one literal prefix starts with the other; this
    keeps the exact automaton check to a handful of rules even with thousands of host instances.
    """
    order = sorted(range(len(prefixes)), key=lambda i: prefixes[i])
    sorted_prefixes = [prefixes[i] for i in order]
    by_prefix: dict[str, list[int]] = {}
    for index, prefix in enumerate(prefixes):
        by_prefix.setdefault(prefix, []).append(index)
    result = []
    for index, prefix in enumerate(prefixes):
        found: set[int] = set()
        low = bisect.bisect_left(sorted_prefixes, prefix)
        high = bisect.bisect_left(sorted_prefixes, prefix + "\U0010ffff")
        found.update(order[low:high])
        for cut in range(len(prefix)):
            found.update(by_prefix.get(prefix[:cut], ()))
        result.append(sorted(j for j in found if j < index))
    return result


def _reachability(rules: Sequence[CreationRule], classes: dict[str, PolicyClass]) -> list[Problem]:
    """Exact for globs: an instance is unreachable when earlier rules together match all its paths."""
    languages: list[automata.Language | None] = []
    problems: list[Problem] = []
    unsupported: set[int] = set()
    for index, rule in enumerate(rules):
        if rule.path_regex is None:
            languages.append(None)
            continue
        try:
            languages.append(automata.language(rule.path_regex))
        except automata.Unsupported as exc:
            languages.append(None)
            unsupported.add(index)
            problems.append(Problem("regex-not-analysed", f"class {rule.label()}: cannot reason exactly about "
                                    f"path_regex ({exc}); unreachability is not checked against it",
                                    _source(rule, classes), "note"))
    prefixes = [automata.literal_prefix(r.path_regex) if r.path_regex else "" for r in rules]
    candidates = _candidates(prefixes)
    for index, rule in enumerate(rules):
        target = languages[index]
        if target is None:
            continue
        earlier = [j for j in candidates[index] if languages[j] is not None]
        if any(rules[j].path_regex is None for j in range(index)):
            earlier_langs = None  # a catch-all before it: nothing after can match
        else:
            earlier_langs = [languages[j] for j in earlier]
        if earlier_langs is None or automata.uncovered_witness(target, earlier_langs) is None:  # type: ignore[arg-type]
            blockers = sorted({rules[j].label() for j in earlier}) or ["a catch-all rule"]
            problems.append(Problem(
                "unreachable", f"class {rule.label()} can never apply: every path it matches is taken first by "
                f"{', '.join(blockers[:3])}{' …' if len(blockers) > 3 else ''}; reorder the classes or narrow them",
                _source(rule, classes)))
            continue
        for j in earlier:
            if rules[j].class_name != rule.class_name or j in unsupported:
                continue
            witness = automata.intersection_witness(languages[j], target)  # type: ignore[arg-type]
            if witness is not None:
                problems.append(Problem(
                    "overlap", f"class {rule.class_name}: instances {rules[j].label()} and {rule.label()} both "
                    f"match '{witness}'; the first by name wins, as in sops", _source(rule, classes), "warning"))
    return problems


def _source(rule: CreationRule, classes: dict[str, PolicyClass]) -> SourceRef | None:
    cls = classes.get(rule.class_name or "")
    return cls.source if cls else None
