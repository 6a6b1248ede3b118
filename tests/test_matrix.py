"""The readers × files matrix: each cell state from a small hand-built fleet, and its four renderings."""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap

import pytest

from sopsctl.audit import AuditedFile, AuditReport, RecipientView, ScannedFile, audit
from sopsctl.engine import build_rules
from sopsctl.matrix import STATES, Matrix, build_matrix, subject_order
from sopsctl.model import FileKey, Finding, SopsMetadata
from sopsctl.policy import load_policy
from sopsctl.render import matrix_csv, matrix_html, matrix_json, matrix_text

from .policy_helpers import AGE, SSH

UNKNOWN = "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"

POLICY_TEXT = textwrap.dedent(f"""\
    version: 1
    settings:
      always_readers: [key:recovery]
    keys:
      recovery: {{age: {AGE['recovery']}}}
      alice: {{age: {AGE['alice']}}}
      bob: {{age: {AGE['bob']}}}
      carol: {{age: {AGE['carol']}}}
      web1: {{ssh: "{SSH['web1']}"}}
      db1: {{ssh: "{SSH['db1']}"}}
      old: {{ssh: "{SSH['old']}", status: retired}}
    identities:
      alice: {{role: admin, keys: [alice]}}
      bob: {{role: user, keys: [bob]}}
      carol: {{role: user, keys: [carol]}}
    hosts:
      web1: {{platform: nixos, keys: [web1], users: {{bob: primary}}}}
      db1: {{platform: nixos, keys: [db1]}}
    classes:
      - name: ca
        path: secrets/ca/**
        key_groups: [[identity:alice], [host:db1]]
        threshold: 2
      - name: home
        path: secrets/home/{{identity}}/**
        readers: ["identity:{{identity}}"]
      - name: host
        path: secrets/hosts/{{host}}/**
        readers: ["host:{{host}}", "primary-of:{{host}}"]
      - name: shared
        path: secrets/shared.yaml
        readers: [role:admin]
    key_bearing:
      secrets/hosts/web1/bob-age-key.enc: identity:bob
    """)

POLICY = load_policy([("policy.yaml", POLICY_TEXT.encode())])


def encrypted(path: str, *groups: list[str], threshold: int | None = None) -> ScannedFile:
    """A file whose metadata lists these keys (policy key names, or raw recipients) per key group."""
    def entry(name: str) -> FileKey:
        return FileKey("age", POLICY.keys[name].age if name in POLICY.keys else name)

    metadata = SopsMetadata(tuple(tuple(entry(n) for n in g) for g in groups), threshold=threshold,
                            layout="groups" if len(groups) > 1 else "flat")
    return ScannedFile(path, "yaml", metadata)


SCANNED = [
    # Shamir: alice and db1 each hold one of two required shares; recovery sits in both groups.
    encrypted("secrets/ca/root.yaml", ["alice", "recovery"], ["db1", "recovery"], threshold=2),
    encrypted("secrets/home/bob/token.yaml", ["bob", "recovery"]),
    # Key-bearing: holds bob's private key, so web1 reads bob's token transitively.
    encrypted("secrets/hosts/web1/bob-age-key.enc", ["web1", "bob", "recovery"]),
    # bob is web1's primary user, so the policy grants him this, but he is not a recipient.
    encrypted("secrets/hosts/web1/app.yaml", ["web1", "recovery"]),
    # carol is not granted, `old` is retired, the last recipient belongs to nobody.
    encrypted("secrets/shared.yaml", ["alice", "recovery", "carol", "old", UNKNOWN]),
    ScannedFile("secrets/notes.txt", "binary"),  # plaintext: a column, but nobody's key opens it
]


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    report = audit(POLICY, build_rules(POLICY).rules, SCANNED)
    return build_matrix(POLICY, report, SCANNED)


def test_rows_are_identities_then_hosts_then_keys_then_raw_recipients(matrix: Matrix) -> None:
    assert matrix.subjects == (
        "identity:alice", "identity:bob", "identity:carol", "host:db1", "host:web1",
        "key:old", "key:recovery", UNKNOWN)
    assert matrix.files == tuple(sorted(s.path for s in SCANNED))


@pytest.mark.parametrize(("subject", "path", "state"), [
    ("key:recovery", "secrets/ca/root.yaml", "direct"),  # in both groups: reads alone
    ("identity:alice", "secrets/ca/root.yaml", "share"),
    ("host:db1", "secrets/ca/root.yaml", "share"),
    ("identity:bob", "secrets/home/bob/token.yaml", "direct"),
    ("host:web1", "secrets/home/bob/token.yaml", "transitive"),
    ("host:web1", "secrets/hosts/web1/app.yaml", "direct"),
    ("identity:bob", "secrets/hosts/web1/app.yaml", "missing"),
    ("identity:alice", "secrets/shared.yaml", "direct"),
    ("identity:carol", "secrets/shared.yaml", "unexpected"),  # a recipient, so also direct: the finding wins
    ("key:old", "secrets/shared.yaml", "unexpected"),  # retired
    (UNKNOWN, "secrets/shared.yaml", "unexpected"),  # unknown
    ("identity:carol", "secrets/ca/root.yaml", None),
    ("host:db1", "secrets/home/bob/token.yaml", None),
])
def test_cell_states(matrix: Matrix, subject: str, path: str, state: str | None) -> None:
    assert matrix.cell(subject, path) == state


def test_a_plaintext_file_is_a_column_with_no_cells(matrix: Matrix) -> None:
    assert "secrets/notes.txt" in matrix.files
    assert all(matrix.cell(s, "secrets/notes.txt") is None for s in matrix.subjects)
    assert matrix.statuses["secrets/notes.txt"] == "plaintext"


def test_findings_override_plain_states_and_unexpected_beats_missing() -> None:
    """Hand-built report: one subject both a recipient and in two findings for the same file."""
    view = RecipientView(AGE["carol"], 0, "carol", "identity:carol")
    report = AuditReport(
        (AuditedFile("a.yaml", "yaml", "encrypted", 0, "c", 1, (view,)),),
        (Finding("missing-reader", "a.yaml", "m", "f", "identity:carol", "carol", "c"),
         Finding("unexpected-reader", "a.yaml", "u", "f", "identity:carol", "carol", "c"),
         Finding("stale-config", ".sops.yaml", "s", "f")))  # not a column: ignored
    result = build_matrix(POLICY, report, [])
    assert result.cell("identity:carol", "a.yaml") == "unexpected"
    report = AuditReport(report.files, report.findings[:1])
    assert build_matrix(POLICY, report, []).cell("identity:carol", "a.yaml") == "missing"
    assert build_matrix(POLICY, AuditReport(report.files, ()), []).cell("identity:carol", "a.yaml") == "direct"


def test_subject_order_puts_unknown_kinds_last() -> None:
    names = ["key:a", "zz-raw", "host:b", "identity:z", "identity:a"]
    assert sorted(names, key=subject_order) == ["identity:a", "identity:z", "host:b", "key:a", "zz-raw"]


def test_counts_cover_every_state(matrix: Matrix) -> None:
    counts = matrix.counts()
    assert set(counts) == set(STATES)
    assert counts["share"] == 2 and counts["transitive"] == 1 and counts["missing"] == 1
    assert counts["unexpected"] == 3


# -- renderings ---------------------------------------------------------------------------------------------


def test_csv_is_long_format_with_only_non_empty_cells(matrix: Matrix) -> None:
    rows = list(csv.reader(io.StringIO(matrix_csv(matrix))))
    assert rows[0] == ["path", "subject", "access"]
    body = [tuple(r) for r in rows[1:]]
    assert ("secrets/home/bob/token.yaml", "host:web1", "transitive") in body
    assert ("secrets/ca/root.yaml", "identity:alice", "share") in body
    assert len(body) == sum(matrix.counts().values())
    order = {p: i for i, p in enumerate(matrix.files)}
    assert [order[p] for p, _, _ in body] == sorted(order[p] for p, _, _ in body)  # grouped by file


def test_csv_quotes_a_path_with_a_comma() -> None:
    m = Matrix(("identity:a",), ("x,y.yaml",), {"identity:a": {"x,y.yaml": "direct"}}, {}, {})
    assert matrix_csv(m).splitlines()[1] == '"x,y.yaml",identity:a,direct'


def test_json_shape(matrix: Matrix) -> None:
    data = json.loads(matrix_json(matrix))
    assert set(data) == {"subjects", "files", "cells"}
    assert data["subjects"] == list(matrix.subjects) and data["files"] == list(matrix.files)
    assert {"path": "secrets/hosts/web1/app.yaml", "subject": "identity:bob", "access": "missing"} in data["cells"]
    assert all(set(c) == {"path", "subject", "access"} and c["access"] in STATES for c in data["cells"])
    assert len(data["cells"]) == sum(matrix.counts().values())


def test_text_grid_has_a_legend_files_as_rows_and_one_letter_per_subject(matrix: Matrix) -> None:
    text = matrix_text(matrix)
    assert "legend: D direct  s share  T transitive  M missing  U unexpected  . none" in text
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("secrets/")}
    assert lines["secrets/ca/root.yaml"] == ["s", ".", ".", "s", ".", ".", "D", "."]
    assert lines["secrets/shared.yaml"] == ["D", ".", "U", ".", ".", "U", "D", "U"]
    assert lines["secrets/home/bob/token.yaml"][4] == "T"
    assert lines["secrets/hosts/web1/app.yaml"][1] == "M"
    # the raw recipient's column name is cut, and listed in full below the grid
    assert text.rstrip().endswith(f"columns whose names are cut above:\n  {UNKNOWN}")


def test_text_without_files_says_so() -> None:
    assert "no audited files" in matrix_text(Matrix(("identity:a",), (), {}, {}, {}))


def test_html_rows_filter_box_legend_and_colours(matrix: Matrix) -> None:
    page = matrix_html(matrix)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('id="filter"') == 1
    for subject in matrix.subjects:
        assert f'<tr data-subject="{subject}">' in page
    assert '<tr data-subject="host:web1"><th scope="row">host:web1</th>' in page
    for css_class in ("d", "s", "t", "m", "u"):
        assert re.search(rf"\.{css_class}\{{background:", page), css_class
    assert page.count("<td class=t>T") == 1 and page.count("<td class=m>M") == 1
    assert "<style>" in page and "<script>" in page


def test_html_loads_nothing_from_outside() -> None:
    page = matrix_html(Matrix(("identity:a",), ("a.yaml",), {"identity:a": {"a.yaml": "direct"}}, {}, {}))
    assert "http" not in page.lower()
    assert not re.search(r"\b(src|href)\s*=", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(", page)


def test_html_escapes_every_path_and_name() -> None:
    path = 'secrets/<script>alert("x")</script>&.yaml'
    subject = 'identity:<b>"eve"</b>'
    m = Matrix((subject,), (path,), {subject: {path: "unexpected"}}, {path: "<i>class</i>"}, {path: "encrypted"})
    page = matrix_html(m)
    assert "<script>alert" not in page and '<b>"eve"' not in page and "<i>class" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;.yaml" in page
    assert 'data-subject="identity:&lt;b&gt;&quot;eve&quot;&lt;/b&gt;"' in page
    assert page.count("<script>") == 1  # only the page's own


def test_html_cuts_long_paths_from_the_front_and_keeps_the_full_one_in_the_title() -> None:
    path = "secrets/" + "deep/" * 20 + "the-file-name.yaml"
    page = matrix_html(Matrix(("identity:a",), (path,), {}, {}, {}))
    assert f'title="{path}"' in page
    assert re.search(r"<span>…[^<]*/the-file-name\.yaml</span>", page)


@pytest.mark.slow
def test_ten_thousand_files_by_three_hundred_subjects_stay_fast() -> None:
    """A guard against per-cell Python work: build and every rendering well under the bound on a CI machine."""
    import random
    import time

    from sopsctl.model import Host, Identity, Key, KeyBearing, Policy, Selector, Settings

    keys = {f"k{i}": Key(f"k{i}", age=f"age1k{i}") for i in range(300)}
    identities = {f"u{i}": Identity(f"u{i}", "user", (f"u{i}",), (f"k{i}",)) for i in range(100)}
    hosts = {f"h{i}": Host(f"h{i}", "nixos", (f"k{i + 100}",)) for i in range(200)}
    bearing = tuple(KeyBearing(f"secrets/kb{i}.enc", Selector("identity", f"u{i}")) for i in range(5))
    policy = Policy(Settings(), keys, identities, hosts, {}, (), bearing)
    pick = random.Random(1).sample
    scanned = [ScannedFile(f"secrets/kb{i}.enc" if i < 5 else f"secrets/d{i % 97}/f{i}.yaml", "yaml",
                           SopsMetadata((tuple(FileKey("age", f"age1{k}") for k in pick(list(keys), 8)),)))
               for i in range(10_000)]
    report = audit(policy, [], scanned)
    start = time.perf_counter()
    result = build_matrix(policy, report, scanned)
    for render in (matrix_text, matrix_csv, matrix_json, matrix_html):
        render(result)
    elapsed = time.perf_counter() - start
    assert len(result.subjects) == 300 and len(result.files) == 10_000
    assert result.counts()["transitive"] > 0  # the transitive walk really ran
    assert elapsed < 10, f"{elapsed:.1f}s"
