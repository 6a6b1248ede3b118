"""Native re-key (use case): give each file its rule's key groups and threshold, touching only the key entries."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .engine import RuleMatcher
from .errors import InputError, SopsctlError
from .fsutil import BatchWriter, read_bytes, write_batch
from .model import CreationRule, FileKey, RuleKey, SopsMetadata, normalize_recipient
from .workers import fork_map


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


def governed_files(root: Path, relatives: Sequence[str], rules: Sequence[CreationRule],
                   fail: Callable[[str, str], None], plain: str | None = None,
                   overrides: Mapping[str, CreationRule | str] | None = None,
                   ) -> Iterator[tuple[str, str, bytes, SopsMetadata, CreationRule]]:
    """(path, format, bytes, full metadata, rule) for each encrypted file a rule governs.

    Unreadable and uncovered files go to `fail(path, reason)`; plain files too when `plain`
    gives the reason (rotate), else they are passed over (rekey: audit reports them).
    `overrides` gives the rule of files that `.sops.yaml` does not govern (clan secrets: their links),
    or the reason such a file cannot be done.
    """
    matcher = RuleMatcher(rules)
    for relative in relatives:
        found = governed_file(root, relative, rules, matcher, plain, overrides)
        if isinstance(found, str):
            fail(relative, found)
        elif found is not None:
            yield found


def governed_file(root: Path, relative: str, rules: Sequence[CreationRule], matcher: RuleMatcher,
                  plain: str | None = None, overrides: Mapping[str, CreationRule | str] | None = None,
                  ) -> tuple[str, str, bytes, SopsMetadata, CreationRule] | str | None:
    """One file of governed_files: its tuple, the reason it fails, or None when it is passed over."""
    from .formats import MetadataError, detect_format, read_metadata

    fmt = detect_format(relative)
    try:
        data = read_bytes(root / relative, what="secret file")  # size-limited, one clear line
        metadata = read_metadata(data, fmt, full=True)
    except (InputError, MetadataError) as exc:
        return f"cannot read its sops metadata: {exc}"
    if metadata is None:
        return plain
    override = overrides.get(relative) if overrides else None
    if isinstance(override, str):  # a file .sops.yaml must not govern, and nothing else can
        return override
    if override is not None:
        return relative, fmt, data, metadata, override
    index = matcher.match(relative)
    if index is None:
        return "no class governs it, so it has no rule naming its recipients"
    return relative, fmt, data, metadata, rules[index]


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

    def rekey_one(relative: str) -> tuple[bytes | None, str | None]:
        try:
            return _rekey_one(plans[relative], identities), None
        except (SopsctlError, ValueError) as exc:  # MetadataError and the writer's checks are ValueErrors
            return None, str(exc).replace("\n", "; ")

    report.changed, failed = rewrite_batch(root, list(plans), rekey_one, workers=jobs, progress=progress)
    report.failed = sorted(report.failed + failed)
    return report


def rewrite_batch(root: Path, relatives: Sequence[str], compute: Callable[[str], tuple[bytes | None, str | None]],
                  *, workers: int | None = None, progress: Callable[[int], None] | None = None,
                  ) -> tuple[list[str], list[tuple[str, str]]]:
    """Give each file the bytes `compute` returns for it, all in one batch: (paths written, (path, reason) not).

    `compute(relative)` gives (new bytes, None) or (None, the one-line reason it is not done). It runs on
    every core (workers.fork_map), and each result is staged as a temp file by the process that computed
    it; the sync and the renames are this process's, after every file is staged (fsutil.BatchWriter).
    """
    writer = BatchWriter()

    def one(numbered: tuple[int, str]) -> tuple[str | None, str | None, bool]:
        """(temp file, None, _) when done; (None, reason, whether staging it failed) when not."""
        number, relative = numbered
        data, reason = compute(relative)
        if data is None:
            return None, reason or "not done", False
        try:
            return writer.stage(root / relative, data, number), None, False
        except OSError as exc:
            return None, f"cannot write: {exc.strerror or exc}", True

    failed: list[tuple[str, str]] = []
    staged: list[str] = []
    try:
        for index, (temp, reason, not_staged) in fork_map(one, list(enumerate(relatives)), workers=workers):
            relative = relatives[index]
            if temp is not None:
                writer.staged(root / relative, temp)
                staged.append(relative)
            elif not_staged:  # the batch stops: finish() reports every file of it as not written
                writer.failed(root / relative, reason or "cannot write")
                staged.append(relative)
            else:
                failed.append((relative, reason or "not done"))
            if progress:
                progress(1)
    except BaseException:
        writer.discard()  # interrupted: no target changes, no temp file stays
        raise
    written, not_written = finish_results(root, writer, staged)
    return written, sorted(failed + not_written)


def finish_results(root: Path, writer: BatchWriter, paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Finish a staged batch (see fsutil.BatchWriter): (paths written, (path, reason) for each one not)."""
    done, failure = writer.finish()
    written = sorted(Path(p).relative_to(root).as_posix() for p in done)
    if failure is None:
        return written, []
    _, message = failure
    return written, [(p, f"not written: {message}") for p in sorted(set(paths) - set(written))]


def write_results(root: Path, results: dict[str, bytes]) -> tuple[list[str], list[tuple[str, str]]]:
    """Write a batch (see fsutil.write_batch); (paths written, (path, reason) for each one not written)."""
    done, failure = write_batch([(root / path, data) for path, data in results.items()])
    written = sorted(Path(p).relative_to(root).as_posix() for p in done)
    if failure is None:
        return written, []
    _, message = failure
    return written, [(p, f"not written: {message}") for p in sorted(set(results) - set(written))]
