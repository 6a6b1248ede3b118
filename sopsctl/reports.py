"""Audit, who and access results as the documented JSON shapes (docs/json.md) and as plain text."""

from __future__ import annotations

import json

from .audit import Access, AuditReport, RecipientView, WhoReport
from .model import Finding


def _indent(size: int) -> int | None:
    """Indented JSON for people; past a few hundred files, compact (the C encoder is ~10x faster)."""
    return 2 if size <= 200 else None


def finding_json(finding: Finding) -> dict:
    return {"kind": finding.kind, "severity": finding.severity, "path": finding.path, "subject": finding.subject,
            "key": finding.key, "class": finding.klass, "message": finding.message, "fix": finding.fix,
            "via": list(finding.via)}


def _recipient_json(view: RecipientView, with_group: bool = True) -> dict:
    data = {"recipient": view.recipient, "key": view.key, "owner": view.owner}
    if with_group:
        data = {"recipient": view.recipient, "group": view.group, "key": view.key, "owner": view.owner}
    return data


def audit_json(report: AuditReport) -> str:
    return json.dumps({
        "findings": [finding_json(f) for f in report.findings],
        "files": [{"path": f.path, "class": f.klass, "format": f.format, "status": f.status,
                   "threshold": f.threshold, "recipients": [_recipient_json(r) for r in f.recipients]}
                  for f in report.files],
        "summary": {"files": len(report.files), "errors": report.errors, "warnings": report.warnings},
    }, indent=_indent(len(report.files))) + "\n"


def audit_text(report: AuditReport) -> str:
    lines = []
    for finding in report.findings:
        subject = f" [{finding.subject}]" if finding.subject else ""
        lines.append(f"{finding.path}: {finding.severity}: {finding.kind}{subject}: {finding.message}")
        lines.append(f"    fix: {finding.fix}")
    lines.append(f"{len(report.files)} file(s) audited: {report.errors} error(s), {report.warnings} warning(s)")
    return "\n".join(lines) + "\n"


def who_json(report: WhoReport) -> str:
    return json.dumps({
        "path": report.path, "source": report.source, "threshold": report.threshold,
        "groups": [[_recipient_json(v, with_group=False) for v in group] for group in report.groups],
        "readers": [{"subject": r.subject, "keys": list(r.keys), "alone": r.alone} for r in report.readers],
        "coalitions": [list(c) for c in report.coalitions],
        "coalitions_truncated": report.coalitions_cut,
    }, indent=2) + "\n"


def who_text(report: WhoReport) -> str:
    lines = [f"{report.path} (from the {report.source}; {len(report.groups)} key group(s), "
             f"threshold {report.threshold})"]
    for reader in report.readers:
        how = "alone" if reader.alone else "only together with others"
        lines.append(f"  {reader.subject:<32} {how:<26} keys: {', '.join(reader.keys)}")
    if len(report.groups) > 1:
        lines.append("  smallest sets that can read it:")
        lines += [f"    {' + '.join(c)}" for c in report.coalitions]
        if report.coalitions_cut:
            lines.append(f"    … (first {len(report.coalitions)} shown)")
    return "\n".join(lines) + "\n"


def access_json(subject: str, accesses: list[Access]) -> str:
    return json.dumps({"subject": subject, "files": [
        {"path": a.path, "alone": a.alone, "direct": a.direct, "via": list(a.via)} for a in accesses]},
        indent=2) + "\n"


def access_text(subject: str, accesses: list[Access]) -> str:
    lines = [f"{subject} can read {sum(a.alone for a in accesses)} file(s):"]
    for a in accesses:
        how = "directly" if a.direct else "through " + " -> ".join(a.via)
        if not a.alone:
            how = "only together with others (holds one Shamir share)"
        lines.append(f"  {a.path:<60} {how}")
    return "\n".join(lines) + "\n"
