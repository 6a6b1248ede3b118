"""Audit reports as Markdown and as SARIF 2.1.0, the latter checked against the official OASIS schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import jsonschema
import pytest

from sopsctl import __version__
from sopsctl.audit import AuditedFile, AuditReport, audit
from sopsctl.engine import build_rules
from sopsctl.model import FINDING_KINDS, Finding
from sopsctl.render import audit_markdown, audit_sarif

from .test_matrix import POLICY, SCANNED

SCHEMA_PATH = Path(__file__).parent / "fixtures" / "sarif-schema-2.1.0.json"

FINDINGS = (
    Finding("stale-config", ".sops.yaml", ".sops.yaml differs from what the policy generates", "sopsctl generate"),
    Finding("missing-reader", "secrets/a b.yaml", "host (host=web1) grants identity:bob ('bob') but that key is "
            "not a recipient", "sops updatekeys -y secrets/a b.yaml", "identity:bob", "bob", "host (host=web1)"),
    Finding("unexpected-reader", "secrets/a b.yaml", "a | pipe, *stars* and <script>x</script>",
            "run `cmd | tee`", "identity:carol", "carol", "shared"),
    Finding("transitive-reader", "secrets/ü/t.yaml", "host:web1 can read this only through secrets/k.enc",
            "narrow who reads the key-bearing secret", "host:web1", None, "home (identity=bob)",
            ("secrets/k.enc",)),
)
REPORT = AuditReport(
    tuple(AuditedFile(p, "yaml", "encrypted", 0, "c", 1) for p in ("secrets/a b.yaml", "secrets/ü/t.yaml")),
    FINDINGS)


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")  # the OASIS file, not a stand-in
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _cells(row: str) -> list[str]:
    """A Markdown table row's cells, split on the pipes that are not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


# -- Markdown -------------------------------------------------------------------------------------------------


def test_markdown_summary_table_counts_each_kind_in_table_order() -> None:
    text = audit_markdown(REPORT)
    assert text.startswith("# sopsctl audit\n\n2 files audited: 3 errors, 1 warning.\n")
    summary = [line for line in text.split("## Findings by file")[0].splitlines() if line.startswith("| `")]
    assert [_cells(r)[:3] for r in summary] == [
        ["`missing-reader`", "error", "1"], ["`unexpected-reader`", "error", "1"],
        ["`stale-config`", "error", "1"], ["`transitive-reader`", "warning", "1"]]


def test_markdown_groups_findings_by_file_with_subject_class_and_fix_in_code_spans() -> None:
    text = audit_markdown(REPORT)
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    assert [s.splitlines()[0] for s in sections] == ["`.sops.yaml`", "`secrets/a b.yaml`", "`secrets/ü/t.yaml`"]
    rows = [_cells(line) for line in sections[1].splitlines() if line.startswith("| error")]
    assert len(rows) == 2
    missing = rows[0]
    assert missing[:4] == ["error", "`missing-reader`", "`identity:bob` (key `bob`)", "`host (host=web1)`"]
    assert missing[5] == "`sops updatekeys -y secrets/a b.yaml`"
    assert all(len(_cells(line)) == 6 for s in sections for line in s.splitlines()[4:] if line.startswith("|"))


def test_markdown_escapes_pipes_markup_and_backticks() -> None:
    text = audit_markdown(REPORT)
    row = next(line for line in text.splitlines() if "unexpected-reader`" in line and "carol" in line)
    cells = _cells(row)
    assert len(cells) == 6  # the `|` in the message and in the fix did not split the row
    assert cells[4] == r"a \| pipe, \*stars\* and \<script\>x\</script\>"
    assert cells[5] == r"`` run `cmd \| tee` ``"  # a longer fence, padded, around a fix holding backticks
    assert "<script>" not in text


def test_markdown_without_findings_says_so() -> None:
    text = audit_markdown(AuditReport(REPORT.files, ()))
    assert "No findings" in text and "|" not in text


# -- SARIF ------------------------------------------------------------------------------------------------------


def test_sarif_is_valid_against_the_oasis_schema(validator) -> None:
    validator.validate(json.loads(audit_sarif(REPORT)))
    real = audit(POLICY, build_rules(POLICY).rules, SCANNED, config_stale=True)
    assert len(real.findings) >= 5
    validator.validate(json.loads(audit_sarif(real)))
    validator.validate(json.loads(audit_sarif(AuditReport((), ()))))


def test_the_schema_really_rejects_a_bad_log(validator) -> None:
    log = json.loads(audit_sarif(REPORT))
    log["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(log)
    log = json.loads(audit_sarif(REPORT))
    del log["runs"][0]["tool"]["driver"]["name"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(log)


def test_sarif_driver_and_one_rule_per_finding_kind() -> None:
    log = json.loads(audit_sarif(REPORT))
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-schema-2.1.0.json")
    assert len(log["runs"]) == 1
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "sopsctl" and driver["version"] == __version__
    assert "informationUri" not in driver  # no home page yet: better absent than invented
    assert [r["id"] for r in driver["rules"]] == list(FINDING_KINDS)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in driver["rules"]}
    assert levels["transitive-reader"] == "warning" and levels["missing-reader"] == "error"


def test_sarif_results_carry_rule_level_message_fix_location_and_properties() -> None:
    log = json.loads(audit_sarif(REPORT))
    run = log["runs"][0]
    results = run["results"]
    assert len(results) == len(FINDINGS)
    for finding, result in zip(FINDINGS, results, strict=True):
        assert result["ruleId"] == finding.kind
        assert run["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == finding.kind
        assert result["level"] == finding.severity
        assert finding.message in result["message"]["text"] and finding.fix in result["message"]["text"]
        location = result["locations"][0]["physicalLocation"]["artifactLocation"]
        assert location["uriBaseId"] == "%SRCROOT%" and unquote(location["uri"]) == finding.path
        assert result["properties"] == {"subject": finding.subject, "key": finding.key,
                                        "class": finding.klass, "via": list(finding.via)}
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results]
    assert uris == [".sops.yaml", "secrets/a%20b.yaml", "secrets/a%20b.yaml", "secrets/%C3%BC/t.yaml"]
    assert results[3]["level"] == "warning"
    fingerprints = [r["partialFingerprints"]["sopsctl/v1"] for r in results]
    assert len(set(fingerprints)) == len(fingerprints)


def test_sarif_is_deterministic_with_sorted_keys() -> None:
    text = audit_sarif(REPORT)
    assert text == audit_sarif(REPORT)
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
