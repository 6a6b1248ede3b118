"""Native re-key (use case): give each file its rule's key groups and threshold, touching only the key entries."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .batch import governed_files, rewrite_batch
from .errors import SopsctlError
from .identities import batch_processes
from .model import CreationRule, FileKey, RuleKey, SopsMetadata, normalize_recipient


@dataclass
class RekeyReport:
    changed: list[str] = field(default_factory=list)  # re-keyed (or, in a dry run, would be)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)


@dataclass(frozen=True)
class _Plan:
    path: str
    fmt: str
    data: bytes
    metadata: SopsMetadata
    groups: tuple[tuple[FileKey, ...], ...]  # target groups, enc not yet filled
    threshold: int | None


def _key(entry: FileKey) -> tuple[str, str]:
    return entry.kind, normalize_recipient(entry.recipient)


@functools.lru_cache(maxsize=1024)  # a batch asks this of the same few rule groups for every file
def _wanted(rule_group: tuple[RuleKey, ...]) -> dict[tuple[str, str], RuleKey]:
    return {(k.kind, normalize_recipient(k.recipient)): k for k in rule_group}


def target_groups(metadata: SopsMetadata, rule: CreationRule) -> tuple[tuple[FileKey, ...], ...]:
    """The rule's groups, ordered for a minimal diff: staying entries in file order, then new ones."""
    result = []
    for position, rule_group in enumerate(rule.key_groups):
        wanted = _wanted(rule_group)
        old = metadata.groups[position] if position < len(metadata.groups) else ()
        staying = [FileKey(e.kind, e.recipient) for e in old if _key(e) in wanted]
        have = {_key(e) for e in staying}
        new = [FileKey(k.kind, k.recipient) for key, k in wanted.items() if key not in have]
        result.append(tuple(staying + new))
    return tuple(result)


def differs(metadata: SopsMetadata, rule: CreationRule) -> bool:
    """Whether the file's groups or threshold differ from its rule's (sets per group, by position)."""
    if len(metadata.groups) != len(rule.key_groups) or metadata.effective_threshold != rule.effective_threshold:
        return True
    return any({_key(e) for e in fg} != _wanted(rg).keys()
               for fg, rg in zip(metadata.groups, rule.key_groups, strict=True))


def rule_threshold(rule: CreationRule) -> int | None:
    return rule.effective_threshold if len(rule.key_groups) > 1 else None


def plan(root: Path, relatives: Sequence[str], rules: Sequence[CreationRule],
         report: RekeyReport, overrides: Mapping[str, CreationRule | str] | None = None) -> list[_Plan]:
    """Read each file and decide: unchanged, to re-key, or failed (unreadable, uncovered)."""
    plans = []
    for relative, fmt, data, metadata, rule in governed_files(
            root, relatives, rules, lambda path, why: report.failed.append((path, why)), overrides=overrides):
        if not differs(metadata, rule):
            report.unchanged.append(relative)
            continue
        plans.append(_Plan(relative, fmt, data, metadata, target_groups(metadata, rule), rule_threshold(rule)))
    return plans


def _rekey_one(item: _Plan, identities) -> bytes:  # type: ignore[no-untyped-def]
    from . import datakey
    from .formats import read_metadata
    from .formats.write import replace_key_groups

    recovered = datakey.recover(item.metadata, identities)
    groups = datakey.rewrap(recovered, item.metadata, item.groups, item.threshold or 1)
    result = replace_key_groups(item.data, item.fmt, groups, item.threshold, old=item.metadata)
    written = read_metadata(result, item.fmt, full=True)
    if written is None:
        raise SopsctlError("the re-keyed file lost its sops metadata (a bug; the original is untouched)")
    # The guarantee: the new key entries give back the same data key with the same identities
    # (cheaply when the entry that opened it is written byte for byte: see check_written).
    datakey.check_written(item.metadata, groups, written, recovered, identities)
    return result


def run(root: Path, relatives: Sequence[str], rules: Sequence[CreationRule], identities,  # type: ignore[no-untyped-def]
        *, dry_run: bool = False, jobs: int | None = None, progress: Callable[[int], None] | None = None,
        overrides: Mapping[str, CreationRule | str] | None = None) -> RekeyReport:
    """Re-key the files whose groups or threshold differ from their rule's; `jobs` processes (default: every core)."""
    report = RekeyReport()
    plans = {item.path: item for item in plan(root, relatives, rules, report, overrides)}
    if dry_run:
        report.changed = list(plans)
        return report
    if progress and len(relatives) > len(plans):
        progress(len(relatives) - len(plans))  # unchanged, failed and plain files are done already

    def rekey_one(relative: str) -> tuple[bytes | None, str | None]:
        try:
            return _rekey_one(plans[relative], identities), None
        except (SopsctlError, ValueError) as exc:  # MetadataError and the writer's checks are ValueErrors
            return None, str(exc).replace("\n", "; ")

    report.changed, failed = rewrite_batch(root, list(plans), rekey_one, workers=batch_processes(identities, jobs),
                                           progress=progress)
    report.failed = sorted(report.failed + failed)
    return report
