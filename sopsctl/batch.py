"""Batches of secret files: which rule governs each, and rewriting many at once on every core, atomically."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from .engine import RuleMatcher
from .errors import InputError
from .fsutil import BatchWriter, read_bytes
from .model import CreationRule, SopsMetadata
from .workers import fork_map


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


def rewrite_batch(root: Path, relatives: Sequence[str], compute: Callable[[str], tuple[bytes | None, str | None]],
                  *, workers: int | None = None, progress: Callable[[int], None] | None = None,
                  ) -> tuple[list[str], list[tuple[str, str]]]:
    """Give each file the bytes `compute` returns for it, all in one batch: (paths written, (path, reason) not).

    `compute(relative)` gives (new bytes, None) or (None, the one-line reason it is not done). It runs on
    every core (workers.fork_map), and each result is staged as a temp file by the process that computed
    it; the sync and the renames are this process's, after every file is staged (fsutil.BatchWriter).
    """
    writer = BatchWriter({(root / relative).parent for relative in relatives})

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
        # closing(): the workers are stopped before the clean-up below, whatever ends the loop
        with contextlib.closing(fork_map(one, list(enumerate(relatives)), workers=workers)) as results:
            for index, (temp, reason, not_staged) in results:
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
        written, not_written = _finish(root, writer, staged)
    except BaseException:  # interrupted: no target changes that were not finished
        writer.discard()
        raise
    finally:  # temp files workers made and never reported (a worker that died, a batch stopped early)
        writer.sweep((root / relative).parent for relative in relatives)
    return written, sorted(failed + not_written)


def _finish(root: Path, writer: BatchWriter, paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Finish a staged batch (see fsutil.BatchWriter): (paths written, (path, reason) for each one not)."""
    done, failure = writer.finish()
    written = sorted(Path(p).relative_to(root).as_posix() for p in done)
    if failure is None:
        return written, []
    _, message = failure
    return written, [(p, f"not written: {message}") for p in sorted(set(paths) - set(written))]
