"""Access changes between two sets of rules (pure): which files gain or lose which readers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .engine import RuleMatcher
from .model import CreationRule


@dataclass(frozen=True)
class FileChange:
    path: str
    gained: tuple[str, ...]  # subjects (identity:N, host:N, key:N) that can now read it
    lost: tuple[str, ...]
    uncovered: bool = False  # governed before, by no class now (e.g. a retired host's own secrets)
    groups_changed: bool = False  # key groups or threshold differ even if the readers do not


def _readers(rule: CreationRule | None, subject_of: Mapping[str, str]) -> set[str]:
    if rule is None:
        return set()
    return {subject_of.get(k.name or "", k.recipient) for group in rule.key_groups for k in group}


def _shape(rule: CreationRule | None) -> object:
    if rule is None:
        return None
    return (tuple(frozenset(k.recipient for k in g) for g in rule.key_groups), rule.effective_threshold)


def access_changes(
    paths: Sequence[str],
    old_rules: Sequence[CreationRule],
    new_rules: Sequence[CreationRule],
    old_subjects: Mapping[str, str],
    new_subjects: Mapping[str, str],
) -> list[FileChange]:
    """For each path, the readers its rule grants before and after; only paths that change."""
    old_match, new_match = RuleMatcher(old_rules), RuleMatcher(new_rules)
    pairs = []
    for path in paths:
        old_index, new_index = old_match.match(path), new_match.match(path)
        pairs.append((path, old_rules[old_index] if old_index is not None else None,
                      new_rules[new_index] if new_index is not None else None))
    return rule_changes(pairs, old_subjects, new_subjects)


def rule_changes(pairs: Iterable[tuple[str, CreationRule | None, CreationRule | None]],
                 old_subjects: Mapping[str, str], new_subjects: Mapping[str, str]) -> list[FileChange]:
    """For each (path, rule before, rule after), the readers gained and lost; only paths that change.

    Clan secrets come here directly: their 'rules' are what their links grant, under each policy."""
    changes = []
    for path, old_rule, new_rule in pairs:
        before, after = _readers(old_rule, old_subjects), _readers(new_rule, new_subjects)
        shape_changed = _shape(old_rule) != _shape(new_rule)
        if before == after and not shape_changed:
            continue
        changes.append(FileChange(path, tuple(sorted(after - before)), tuple(sorted(before - after)),
                                  uncovered=old_rule is not None and new_rule is None,
                                  groups_changed=shape_changed))
    return changes


def describe(changes: Sequence[FileChange]) -> list[str]:
    """One line per file, as a reviewer would write it."""
    lines = []
    for change in changes:
        parts = []
        if change.gained:
            parts.append("gains " + ", ".join(change.gained))
        if change.lost:
            parts.append("loses " + ", ".join(change.lost))
        if change.uncovered:
            parts.append("no class governs it any more: delete it or give it a class")
        elif not parts:
            parts.append("its key groups change (same readers)")
        lines.append(f"{change.path}: {'; '.join(parts)}")
    return lines


@dataclass(frozen=True)
class SubjectChange:
    subject: str
    gains: tuple[str, ...]
    loses: tuple[str, ...]


def by_subject(changes: Sequence[FileChange]) -> list[SubjectChange]:
    """The same changes told per subject, the way a reviewer says it: "bob gains secrets/shared.yaml"."""
    gains: dict[str, list[str]] = {}
    loses: dict[str, list[str]] = {}
    for change in changes:
        for subject in change.gained:
            gains.setdefault(subject, []).append(change.path)
        for subject in change.lost:
            loses.setdefault(subject, []).append(change.path)
    return [SubjectChange(s, tuple(gains.get(s, ())), tuple(loses.get(s, ()))) for s in sorted({*gains, *loses})]


def recipients_of(rules: Sequence[CreationRule]) -> set[str]:
    return {k.recipient for rule in rules for group in rule.key_groups for k in group}
