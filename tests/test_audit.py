"""The pure audit: one cause one finding, Shamir 'alone' semantics, coalitions, transitive chains."""

from __future__ import annotations

from sopsctl.audit import KeyIndex, ReadGraph, ScannedFile, audit, minimal_coalitions, who
from sopsctl.engine import build_rules
from sopsctl.model import FileKey, SopsMetadata
from sopsctl.policy import load_policy

from .policy_helpers import AGE, SMALL_POLICY, policy_sources

POLICY = SMALL_POLICY + (
    "  - name: ca\n    path: secrets/ca/**\n"
    "    key_groups: [[role:admin], [host:db1], [identity:bob]]\n    threshold: 2\n"
    "key_bearing:\n  secrets/shared.yaml: bob\n"
)


def _setup(text: str = POLICY):
    policy = load_policy(policy_sources(text))
    rules = build_rules(policy).rules
    return policy, rules, KeyIndex.build(policy)


def _rule_meta(rules, label: str, drop: set[str] = frozenset(), add: tuple[str, ...] = ()) -> SopsMetadata:
    rule = next(r for r in rules if r.label() == label)
    groups = [[FileKey("age", k.recipient) for k in g if k.name not in drop] for g in rule.key_groups]
    groups[0] += [FileKey("age", r) for r in add]
    layout = "flat" if len(groups) == 1 else "groups"
    return SopsMetadata(tuple(tuple(g) for g in groups), rule.threshold, layout, "t", "mac", "3.11.0")


def _findings(files, text: str = POLICY):
    policy, rules, _ = _setup(text)
    return {(f.kind, f.path, f.subject) for f in audit(policy, rules, files).findings}


def test_a_file_that_matches_its_rule_is_clean() -> None:
    _, rules, _ = _setup()
    files = [ScannedFile("secrets/hosts/web1/a.yaml", "yaml", _rule_meta(rules, "host (host=web1)")),
             ScannedFile("secrets/ca/key.pem", "binary", _rule_meta(rules, "ca"))]
    assert _findings(files) == set()


def test_one_cause_one_finding() -> None:
    policy, rules, index = _setup()
    web1_age = policy.keys["web1"].age
    meta = _rule_meta(rules, "host (host=web1)", drop={"web1", "alice"},
                      add=(AGE["bob"], "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqquzqqdq", policy.keys["old"].age))
    assert web1_age not in {k.recipient for k in meta.groups[0]}
    found = _findings([ScannedFile("secrets/hosts/web1/a.yaml", "yaml", meta)])
    assert found == {
        ("missing-reader", "secrets/hosts/web1/a.yaml", "host:web1"),
        ("missing-reader", "secrets/hosts/web1/a.yaml", "identity:alice"),
        ("unexpected-reader", "secrets/hosts/web1/a.yaml", "identity:bob"),
        ("unknown-recipient", "secrets/hosts/web1/a.yaml", "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqquzqqdq"),
        ("retired-recipient", "secrets/hosts/web1/a.yaml", "key:old"),  # a retired key is only that
    }


def test_the_ssh_form_of_an_expected_age_key_is_one_missing_reader_naming_the_form() -> None:
    policy, rules, _ = _setup()
    meta = _rule_meta(rules, "host (host=web1)", drop={"web1"}, add=(policy.keys["web1"].ssh + " root@web1",))
    policy, rules, index = _setup()
    report = audit(policy, rules, [ScannedFile("secrets/hosts/web1/a.yaml", "yaml", meta)])
    assert [(f.kind, f.subject) for f in report.findings] == [("missing-reader", "host:web1")]
    assert "other form ssh-ed25519" in report.findings[0].message


def test_group_mismatch_only_when_groups_or_threshold_differ() -> None:
    _, rules, _ = _setup()
    good = _rule_meta(rules, "ca")
    wrong_threshold = SopsMetadata(good.groups, 3, "groups", "t", "m", "v")
    one_group = SopsMetadata((good.groups[0] + good.groups[1],), None, "flat", "t", "m", "v")
    assert _findings([ScannedFile("secrets/ca/a", "binary", wrong_threshold)]) == {
        ("group-mismatch", "secrets/ca/a", None)}
    assert _findings([ScannedFile("secrets/ca/a", "binary", one_group)]) == {("group-mismatch", "secrets/ca/a", None)}


def test_plaintext_uncovered_unreadable_and_stale() -> None:
    policy, rules, _ = _setup()
    files = [ScannedFile("secrets/hosts/web1/plain.yaml", "yaml"),
             ScannedFile("secrets/nowhere/x.yaml", "yaml", _rule_meta(rules, "shared")),
             ScannedFile("secrets/shared.yaml", "yaml", error="the sops entry has no mac")]
    report = audit(policy, rules, files, config_stale=True)
    assert {(f.kind, f.path) for f in report.findings} == {
        ("plaintext", "secrets/hosts/web1/plain.yaml"), ("uncovered", "secrets/nowhere/x.yaml"),
        ("unreadable", "secrets/shared.yaml"), ("stale-config", ".sops.yaml")}
    assert report.errors == 4 and report.warnings == 0


def test_transitive_readers_with_their_chain() -> None:
    policy, rules, index = _setup()
    # shared.yaml holds bob's key; alice, web1 and db1 read shared.yaml, so they read bob's home through it.
    files = [ScannedFile("secrets/shared.yaml", "yaml", _rule_meta(rules, "shared")),
             ScannedFile("secrets/home/bob/x.yaml", "yaml", _rule_meta(rules, "home (account=bob, identity=bob)"))]
    report = audit(policy, rules, files)
    transitive = {(f.path, f.subject): f.via for f in report.findings if f.kind == "transitive-reader"}
    assert transitive == {("secrets/home/bob/x.yaml", "host:db1"): ("secrets/shared.yaml",),
                          ("secrets/home/bob/x.yaml", "identity:alice"): ("secrets/shared.yaml",),
                          ("secrets/home/bob/x.yaml", "host:web1"): ("secrets/shared.yaml",)}
    graph = ReadGraph(policy, index, files)
    accesses = {a.path: a for a in graph.access(set(policy.hosts["web1"].keys))}
    assert accesses["secrets/shared.yaml"].direct and not accesses["secrets/home/bob/x.yaml"].direct


def test_shamir_alone_and_coalitions() -> None:
    policy, rules, index = _setup()
    meta = _rule_meta(rules, "ca")
    report = who("secrets/ca/key.pem", meta.groups, meta.effective_threshold, "file", index)
    alone = {r.subject: r.alone for r in report.readers}
    # recovery is an always_reader: it sits in every group and reads alone; the others need a partner
    assert alone == {"key:recovery": True, "identity:alice": False, "host:db1": False, "identity:bob": False}
    assert set(report.coalitions) == {("key:recovery",), ("host:db1", "identity:alice"),
                                      ("identity:alice", "identity:bob"), ("host:db1", "identity:bob")}


def test_coalitions_are_minimal_and_capped() -> None:
    covers = {f"s{i}": {i % 5} for i in range(30)}
    found, cut = minimal_coalitions(covers, 2)
    assert cut and len(found) == 20
    assert all(len(c) == 2 and covers[c[0]] != covers[c[1]] for c in found)
    assert minimal_coalitions({"a": {0, 1}, "b": {0}, "c": {1}}, 2) == ((("a",), ("b", "c")), False)
