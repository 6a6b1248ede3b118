"""Audit reports as Markdown and SARIF 2.1.0, and the readers × files matrix as text, CSV, JSON and HTML (pure)."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
from collections import Counter
from urllib.parse import quote

from . import __version__
from .audit import AuditReport
from .matrix import DIRECT, MISSING, SHARE, STATES, TRANSITIVE, UNEXPECTED, Matrix
from .model import FINDING_KINDS, WARNING_KINDS, Finding

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "%SRCROOT%"

# kind -> (what it means, what to do about it): the SARIF rules' texts and the Markdown summary.
RULES: dict[str, tuple[str, str]] = {
    "missing-reader": ("The policy grants a reader none of whose keys is a recipient of the file.",
                       "Re-key the file so its recipients are what its rule says: sops updatekeys -y PATH."),
    "unexpected-reader": ("A known key is a recipient of the file, but the policy does not grant it.",
                          "Re-key the file (sops updatekeys -y PATH), then rotate its data key if that reader "
                          "must lose access."),
    "unknown-recipient": ("A recipient of the file belongs to no key in the policy.",
                          "Add the key to the policy if it belongs to someone, else re-key the file."),
    "retired-recipient": ("A recipient is a retired key, or a key of a retired host or identity.",
                          "Re-key the file without it, then rotate: the retired key could read the data key."),
    "group-mismatch": ("The file's key groups or Shamir threshold differ from its rule.",
                       "Re-key the file: sops updatekeys -y PATH."),
    "plaintext": ("A file under a secrets directory is not SOPS-encrypted.",
                  "Encrypt it (sops encrypt -i PATH) or list it in settings.ignore."),
    "uncovered": ("No class governs the file: sops would refuse to create or re-key it.",
                  "Add a class whose path covers the file, or move the file."),
    "fallback-only": ("Only the fallback class governs the file.", "Give the file a class of its own."),
    "stale-config": (".sops.yaml differs from what the policy generates.", "Run sopsctl generate."),
    "transitive-reader": ("A subject reads the file only through a key-bearing secret.",
                          "Narrow who reads the key-bearing secret, or accept this access."),
    "unreadable": ("The file claims to be SOPS-encrypted but its metadata is malformed.",
                   "Restore the file from version control: sops cannot decrypt it either."),
    "orphaned": ("A clan secret or var whose generator, machine or user no longer exists.",
                 "Delete the secret, or restore what it belongs to."),
}


# -- Markdown ----------------------------------------------------------------------------------------------

# Backslash-escaping any ASCII punctuation is valid CommonMark, so escape every character that could start
# emphasis, a link, raw HTML, an entity, a heading or a table cell boundary.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#!])")


def _md_text(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", _one_line(text))


def _code(text: str, *, cell: bool = True) -> str:
    """A code span that survives backticks inside; in a table cell `|` is escaped too (GFM splits cells first)."""
    text = _one_line(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    span = f"{fence}{padded}{fence}"
    return span.replace("|", "\\|") if cell else span


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def audit_markdown(report: AuditReport) -> str:
    """A summary table by kind, then each file's findings with subject, class, message and fix."""
    lines = ["# sopsctl audit", "",
             f"{_plural(len(report.files), 'file')} audited: {_plural(report.errors, 'error')}, "
             f"{_plural(report.warnings, 'warning')}.", ""]
    if not report.findings:
        lines.append("No findings: every audited file matches the policy.")
        return "\n".join(lines) + "\n"
    counts = Counter(f.kind for f in report.findings)
    lines += ["| Kind | Severity | Findings | Meaning |", "|---|---|---:|---|"]
    for kind in sorted(counts, key=_kind_position):
        severity = "warning" if kind in WARNING_KINDS else "error"
        meaning = RULES.get(kind, ("",))[0]
        lines.append(f"| {_code(kind)} | {severity} | {counts[kind]} | {_md_text(meaning)} |")
    lines += ["", "## Findings by file"]
    by_file: dict[str, list[Finding]] = {}
    for finding in report.findings:
        by_file.setdefault(finding.path, []).append(finding)
    for path in sorted(by_file):
        lines += ["", f"### {_code(path, cell=False)}", "",
                  "| Severity | Kind | Subject | Class | Message | Fix |", "|---|---|---|---|---|---|"]
        for f in by_file[path]:
            subject = _code(f.subject) if f.subject else "—"
            if f.key and f.subject != f"key:{f.key}":
                subject += f" (key {_code(f.key)})"
            klass = _code(f.klass) if f.klass else "—"
            lines.append(f"| {f.severity} | {_code(f.kind)} | {subject} | {klass} | {_md_text(f.message)} "
                         f"| {_code(f.fix)} |")
    return "\n".join(lines) + "\n"


def _kind_position(kind: str) -> tuple[int, str]:
    return (FINDING_KINDS.index(kind) if kind in FINDING_KINDS else len(FINDING_KINDS), kind)


# -- SARIF 2.1.0 ---------------------------------------------------------------------------------------------


def _sarif_rule(kind: str) -> dict:
    short, fix = RULES.get(kind, (kind, "See the finding's message."))
    return {
        "id": kind,
        "name": "".join(part.capitalize() for part in kind.split("-")),
        "shortDescription": {"text": short},
        "help": {"text": fix},
        "defaultConfiguration": {"level": "warning" if kind in WARNING_KINDS else "error"},
    }


def _sarif_result(finding: Finding, rule_index: int) -> dict:
    message = finding.message.rstrip()
    text = f"{message}{'' if message.endswith('.') else '.'} Fix: {finding.fix}"
    identity = "\0".join((finding.kind, finding.path, finding.subject or "", finding.key or ""))
    return {
        "ruleId": finding.kind,
        "ruleIndex": rule_index,
        "level": {"error": "error", "warning": "warning"}.get(finding.severity, "note"),
        "message": {"text": text},
        # a URI reference: percent-encode what a path may hold but a URI may not (spaces, %, #, ?, non-ASCII)
        "locations": [{"physicalLocation": {"artifactLocation": {
            "uri": quote(finding.path, safe="/"), "uriBaseId": SRCROOT}}}],
        # Code scanning otherwise fingerprints the file's lines, which change at every re-key.
        "partialFingerprints": {"sopsctl/v1": hashlib.sha256(identity.encode()).hexdigest()},
        "properties": {"subject": finding.subject, "key": finding.key, "class": finding.klass,
                       "via": list(finding.via)},
    }


def audit_sarif(report: AuditReport) -> str:
    """One SARIF run: a rule per finding kind (all of them, so rule indexes never move), one result per finding."""
    kinds = list(FINDING_KINDS) + sorted({f.kind for f in report.findings} - set(FINDING_KINDS))
    position = {kind: i for i, kind in enumerate(kinds)}
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "sopsctl", "version": __version__,
                                "rules": [_sarif_rule(kind) for kind in kinds]}},
            "originalUriBaseIds": {SRCROOT: {"description": {
                "text": "The repository root: the directory of .sops.yaml."}}},
            "results": [_sarif_result(f, position[f.kind]) for f in report.findings],
        }],
    }
    return json.dumps(log, indent=2, sort_keys=True) + "\n"


# -- the matrix ----------------------------------------------------------------------------------------------

CODES = {DIRECT: "D", SHARE: "s", TRANSITIVE: "T", MISSING: "M", UNEXPECTED: "U"}
EMPTY_CODE = "."
MEANINGS = {
    DIRECT: "reads it alone, from the file's own metadata",
    SHARE: "holds a Shamir share: reads it only together with others",
    TRANSITIVE: "reads it only through a key-bearing secret",
    MISSING: "the policy grants it, but it is not a recipient",
    UNEXPECTED: "a recipient the policy does not grant (extra, retired or unknown)",
}
_SHORT = {DIRECT: "reads it alone", SHARE: "holds a Shamir share: reads only with others",
          TRANSITIVE: "through a key-bearing secret", MISSING: "granted, not a recipient",
          UNEXPECTED: "a recipient, not granted"}
_KIND_LETTER = {"identity": "i", "host": "h", "key": "k"}
_LABEL_MAX = 24


def _column_label(subject: str) -> str:
    kind, _, name = subject.partition(":")
    label = name if kind in _KIND_LETTER and name else subject
    return label if len(label) <= _LABEL_MAX else label[:_LABEL_MAX - 5] + "…" + label[-4:]


def matrix_text(matrix: Matrix) -> str:
    """Files as rows (there are many), subjects as columns, their names written top to bottom."""
    lines = ["legend: " + "  ".join(f"{CODES[s]} {s}" for s in STATES) + f"  {EMPTY_CODE} none",
             "rows: files; columns: subjects (i identity, h host, k key, ? other recipient), names read downwards"]
    if not matrix.files or not matrix.subjects:
        lines.append("no audited files" if not matrix.files else "no subjects")
        return "\n".join(lines) + "\n"
    labels = [_column_label(s) for s in matrix.subjects]
    width = max(len(p) for p in matrix.files)
    margin = " " * (width + 2)
    lines.append("")
    lines.append(margin + " ".join(_KIND_LETTER.get(s.partition(":")[0], "?") for s in matrix.subjects))
    for depth in range(max(len(label) for label in labels)):
        lines.append((margin + " ".join(label[depth] if depth < len(label) else " " for label in labels)).rstrip())
    lines.append(margin + "-" * (2 * len(labels) - 1))
    column = {subject: i for i, subject in enumerate(matrix.subjects)}
    by_path: dict[str, list[tuple[int, str]]] = {}
    for subject, row in matrix.rows.items():
        for path, state in row.items():
            by_path.setdefault(path, []).append((column[subject], CODES[state]))
    blank = [EMPTY_CODE] * len(matrix.subjects)
    for path in matrix.files:
        codes = blank.copy()
        for i, code in by_path.get(path, ()):
            codes[i] = code
        lines.append(path.ljust(width) + "  " + " ".join(codes))
    cut = [s for s, label in zip(matrix.subjects, labels, strict=True) if "…" in label and "…" not in s]
    if cut:
        lines += ["", "columns whose names are cut above:"] + [f"  {s}" for s in cut]
    return "\n".join(lines) + "\n"


def matrix_csv(matrix: Matrix) -> str:
    """Long format, one line per non-empty cell: any spreadsheet filters or pivots it, at any fleet size."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "subject", "access"))
    writer.writerows(matrix.cells())
    return buffer.getvalue()


def matrix_json(matrix: Matrix) -> str:
    return json.dumps({
        "subjects": list(matrix.subjects),
        "files": list(matrix.files),
        "cells": [{"path": p, "subject": s, "access": a} for p, s, a in matrix.cells()],
    }, indent=2) + "\n"


_CSS = """
:root{--d:#81c784;--s:#90caf9;--t:#ffb74d;--m:#f8bbd0;--u:#e53935}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,sans-serif;color:#222;display:flex;flex-direction:column;height:100vh}
header{padding:8px 12px;border-bottom:1px solid #ccc;background:#fafafa}
h1{font-size:18px;margin:0 0 4px}
.controls{display:flex;gap:12px;align-items:center;flex-wrap:wrap}
#filter{font:inherit;padding:3px 6px;width:22em}
.legend{display:flex;gap:14px;flex-wrap:wrap;list-style:none;margin:6px 0 0;padding:0}
.wrap{flex:1;overflow:auto}
table{border-collapse:separate;border-spacing:0;font-family:ui-monospace,monospace;font-size:12px}
th,td{border-right:1px solid #eee;border-bottom:1px solid #eee;padding:0}
thead th{position:sticky;top:0;background:#fff;z-index:2;vertical-align:bottom}
thead th.f span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap;padding:4px 2px}
tbody th{position:sticky;left:0;background:#fff;z-index:1;text-align:left;padding:0 8px;white-space:nowrap}
thead th.corner{left:0;z-index:3;text-align:left;padding:4px 8px}
tbody tr:hover th{background:#fff3c4}
tr[hidden]{display:none}
td{width:18px;min-width:18px;height:18px;text-align:center}
.d{background:var(--d)}.s{background:var(--s)}.t{background:var(--t)}
.m{background:var(--m);outline:1px dashed #ad1457;outline-offset:-2px}.u{background:var(--u);color:#fff}
th.x span{color:#999}
.key{display:inline-block;width:18px;text-align:center;font-family:ui-monospace,monospace}
#status{margin:0;padding:4px 12px;border-top:1px solid #ccc;background:#fafafa;min-height:1.6em}
"""

_JS = """
(function () {
  var box = document.getElementById("filter");
  var shown = document.getElementById("shown");
  var status = document.getElementById("status");
  var rows = Array.prototype.slice.call(document.querySelectorAll("#matrix tbody tr[data-subject]"));
  var heads = document.querySelectorAll("#matrix thead th.f");
  var names = {d: "direct", s: "share", t: "transitive", m: "missing", u: "unexpected"};
  function apply() {
    var needle = box.value.trim().toLowerCase();
    var count = 0;
    rows.forEach(function (row) {
      var match = row.getAttribute("data-subject").toLowerCase().indexOf(needle) !== -1;
      row.hidden = !match;
      if (match) { count++; }
    });
    shown.textContent = count + " of " + rows.length + " subjects";
  }
  box.addEventListener("input", apply);
  var preset = /^#filter=(.*)$/.exec(location.hash);  /* a link like page.html#filter=raquel */
  if (preset) { try { box.value = decodeURIComponent(preset[1]); } catch (e) { box.value = preset[1]; } }
  apply();  /* a value the browser restored (back button) filters too */
  document.getElementById("matrix").addEventListener("mouseover", function (event) {
    var cell = event.target.closest("td");
    if (!cell) { return; }
    var head = heads[cell.cellIndex - 1];
    status.textContent = cell.parentNode.getAttribute("data-subject") + "  \u00d7  " +
      head.getAttribute("title") + " (" + head.getAttribute("data-note") + "): " +
      (names[cell.className] || "no access");
  });
})();
"""

_HTML_CLASS = {DIRECT: "d", SHARE: "s", TRANSITIVE: "t", MISSING: "m", UNEXPECTED: "u"}
_HEAD_MAX = 48


def _head_label(path: str) -> str:
    # The file name is at the end of a path: when cutting, keep the end.
    return path if len(path) <= _HEAD_MAX else "…" + path[-(_HEAD_MAX - 1):]


def matrix_html(matrix: Matrix) -> str:
    """One self-contained page: sticky headers, a colour per state, a filter box over the subjects."""
    esc = html.escape
    counts = matrix.counts()
    title = f"sopsctl matrix: {_plural(len(matrix.subjects), 'subject')} × {_plural(len(matrix.files), 'file')}"
    legend = "".join(f'<li title="{esc(MEANINGS[s])}"><span class="key {_HTML_CLASS[s]}">{CODES[s]}</span> '
                     f"<b>{s}</b> {esc(_SHORT[s])} ({counts[s]})</li>" for s in STATES)
    heads = []
    for path in matrix.files:
        note = matrix.classes.get(path) or "no class"
        status = matrix.statuses.get(path, "encrypted")
        if status != "encrypted":
            note += f"; {status}"
        grey = "" if status == "encrypted" else " x"
        heads.append(f'<th class="f{grey}" title="{esc(path)}" data-note="{esc(note)}">'
                     f"<span>{esc(_head_label(path))}</span></th>")
    column = {path: i for i, path in enumerate(matrix.files)}
    tags = {state: f"<td class={_HTML_CLASS[state]}>{CODES[state]}" for state in STATES}
    blank = ["<td>"] * len(matrix.files)  # end tags are optional in HTML; a big matrix is half the size
    body = []
    for subject in matrix.subjects:
        cells = blank.copy()
        for path, state in matrix.rows.get(subject, {}).items():
            cells[column[path]] = tags[state]
        body.append(f'<tr data-subject="{esc(subject)}"><th scope="row">{esc(subject)}</th>{"".join(cells)}</tr>')
    empty = "" if matrix.files and matrix.subjects else "<p>Nothing to show: no audited files or no subjects.</p>"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{esc(title)}</h1>",
        '<div class="controls"><label for="filter">Show subjects containing</label>',
        '<input id="filter" type="search" placeholder="e.g. raquel, host:, key:" autocomplete="off">',
        f'<span id="shown">{len(matrix.subjects)} of {len(matrix.subjects)} subjects</span></div>',
        f'<ul class="legend">{legend}</ul>',
        "</header>",
        '<div class="wrap">',
        empty,
        '<table id="matrix">',
        f'<thead><tr><th class="corner">subject \\ file</th>{"".join(heads)}</tr></thead>',
        "<tbody>",
        *body,
        "</tbody>",
        "</table>",
        "</div>",
        f'<p id="status">Generated by sopsctl {esc(__version__)}. Point at a cell to see who and which file.</p>',
        f"<script>{_JS}</script>",
        "</body>",
        "</html>",
    ]) + "\n"


MATRIX_RENDERERS = {"text": matrix_text, "csv": matrix_csv, "json": matrix_json, "html": matrix_html}
