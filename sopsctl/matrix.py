"""The readers × files matrix (pure): for each subject and audited file, how it reads it, or which finding it is."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from .audit import AuditReport, KeyIndex, ReadGraph, ScannedFile, can_read, normalize_recipient
from .model import Policy

DIRECT = "direct"  # can read alone from the file's own metadata
SHARE = "share"  # holds a key in some key groups, fewer than the threshold (Shamir)
TRANSITIVE = "transitive"  # reads it alone only through a key-bearing secret
MISSING = "missing"  # the policy grants it, but none of its keys for this file is a recipient
UNEXPECTED = "unexpected"  # a recipient the policy does not grant: extra, retired or unknown
STATES = (DIRECT, SHARE, TRANSITIVE, MISSING, UNEXPECTED)

# When several states apply to one cell the highest rank wins: a finding is the news (it beats a plain
# state), and access nobody granted is worse than access that is missing.
_RANK = {SHARE: 1, DIRECT: 2, TRANSITIVE: 3, MISSING: 4, UNEXPECTED: 5}

FINDING_STATES = {
    "missing-reader": MISSING,
    "unexpected-reader": UNEXPECTED,
    "retired-recipient": UNEXPECTED,
    "unknown-recipient": UNEXPECTED,
}

# Row blocks, in this order; anything else (a raw recipient nobody owns) comes last.
SUBJECT_KINDS = ("identity", "host", "key")


@dataclass(frozen=True)
class Matrix:
    """Subjects (rows) × audited files (columns); `rows` holds only the non-empty cells."""

    subjects: tuple[str, ...]
    files: tuple[str, ...]
    rows: Mapping[str, Mapping[str, str]]  # subject -> path -> state
    classes: Mapping[str, str | None]  # path -> the class that governs it
    statuses: Mapping[str, str]  # path -> encrypted | plaintext | unreadable

    def cell(self, subject: str, path: str) -> str | None:
        return self.rows.get(subject, {}).get(path)

    def cells(self) -> Iterator[tuple[str, str, str]]:
        """(path, subject, state) of every non-empty cell, by file then by subject (row order)."""
        column = {path: i for i, path in enumerate(self.files)}
        entries = [(column[path], row, path, subject, state)
                   for row, subject in enumerate(self.subjects)
                   for path, state in self.rows.get(subject, {}).items()]
        entries.sort()
        for _, _, path, subject, state in entries:
            yield path, subject, state

    def counts(self) -> dict[str, int]:
        """How many cells hold each state (every state present, zero when unused)."""
        result = dict.fromkeys(STATES, 0)
        for row in self.rows.values():
            for state in row.values():
                result[state] += 1
        return result


def subject_order(subject: str) -> tuple[int, str]:
    """identities, then hosts, then keys, then raw recipients; by name within each block."""
    kind, _, name = subject.partition(":")
    if kind in SUBJECT_KINDS and name:
        return SUBJECT_KINDS.index(kind), name
    return len(SUBJECT_KINDS), subject


def build_matrix(policy: Policy, report: AuditReport, scanned: Sequence[ScannedFile]) -> Matrix:
    """The matrix of `report`'s files: metadata gives direct/share, ReadGraph transitive, findings the rest."""
    index = KeyIndex.build(policy)
    files = tuple(sorted(f.path for f in report.files))
    columns = set(files)
    rows: dict[str, dict[str, str]] = {}

    def put(subject: str, path: str, state: str) -> None:
        row = rows.setdefault(subject, {})
        current = row.get(path)
        if current is None or _RANK[state] > _RANK[current]:
            row[path] = state

    for audited in report.files:
        if audited.status != "encrypted":
            continue
        covered: dict[str, set[int]] = {}
        for view in audited.recipients:
            # an unknown recipient is its own subject, spelled as the audit's findings spell it
            subject = view.owner or normalize_recipient(view.recipient)
            covered.setdefault(subject, set()).add(view.group)
        threshold = audited.threshold or 1
        for subject, groups in covered.items():
            put(subject, audited.path, DIRECT if len(groups) >= threshold else SHARE)

    for subject, path in _transitive(policy, index, scanned):
        if path in columns:
            put(subject, path, TRANSITIVE)

    for finding in report.findings:
        state = FINDING_STATES.get(finding.kind)
        if state is not None and finding.subject and finding.path in columns:
            put(finding.subject, finding.path, state)

    # Every subject the policy knows gets a row, even an empty one: "reads nothing" is an answer too.
    known = {f"identity:{n}" for n in policy.identities} | {f"host:{n}" for n in policy.hosts}
    known |= set(index.subject_of.values())
    subjects = tuple(sorted(known | set(rows), key=subject_order))
    by_path = {f.path: f for f in report.files}
    return Matrix(subjects, files, rows,
                  {p: by_path[p].klass for p in files}, {p: by_path[p].status for p in files})


def _transitive(policy: Policy, index: KeyIndex, scanned: Sequence[ScannedFile]) -> Iterator[tuple[str, str]]:
    """(subject, path) where the subject reads the file alone only through key-bearing secrets."""
    graph = ReadGraph(policy, index, scanned)
    if not graph.holders:
        return
    for subject, keys in sorted(index.subject_keys().items()):
        # The cheap test first: a subject that opens no key-bearing secret gains nothing, and the
        # full walk over every file is then skipped (most subjects, in a big fleet).
        if not any(can_read(keys, *graph.files[path]) for path in graph.holders):
            continue
        for access in graph.access(keys):
            if not access.direct:
                yield subject, access.path
