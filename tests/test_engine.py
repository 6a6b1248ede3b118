"""The rule engine: template expansion, selector resolution, determinism, and sops matching."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopsctl.engine import build_rules, match_rule
from sopsctl.errors import PolicyError
from sopsctl.model import CreationRule, RuleKey
from sopsctl.policy import key_owners, load_policy
from sopsctl.sopsconfig import parse_rules, render

from .policy_helpers import AGE, SMALL_POLICY, policy_sources
from .strategies import Fleet, fleet_policy_text, fleets, key_pool


def _rules(text: str = SMALL_POLICY):
    generated = build_rules(load_policy(policy_sources(text)))
    assert not generated.errors, generated.errors
    return generated.rules


def _names(rule: CreationRule) -> list[list[str | None]]:
    return [[k.name for k in group] for group in rule.key_groups]


def test_templates_expand_per_active_entity_sorted_by_name() -> None:
    rules = _rules()
    labels = [r.label() for r in rules]
    assert labels == [
        "home (account=al, identity=alice)",
        "home (account=alice, identity=alice)",
        "home (account=bob, identity=bob)",
        "host (host=db1)",  # the retired host `old` gets no instance
        "host (host=web1)",
        "shared",
    ]
    assert rules[0].path_regex == "^secrets/home/al/.*$"


def test_selectors_resolve_to_keys_with_always_readers_first() -> None:
    rules = {r.label(): r for r in _rules()}
    assert _names(rules["home (account=bob, identity=bob)"]) == [["recovery", "bob"]]
    # admins-of: the account `al` is alice's; bob is only primary on web1
    assert _names(rules["host (host=web1)"]) == [["recovery", "web1", "alice"]]
    # hosts: only active ones; role:admin: alice
    assert _names(rules["shared"]) == [["recovery", "alice", "db1", "web1"]]
    assert rules["shared"].path_regex == r"^(?:secrets/shared\.yaml|secrets/services/.*)$"


def test_every_selector_kind() -> None:
    text = SMALL_POLICY + (
        "  - name: kinds\n"
        "    path: secrets/kinds/**\n"
        "    key_groups:\n"
        "      - [users-of:web1]\n"
        "      - [primary-of:web1, platform:nixos]\n"
        "      - [hosts-of:alice, group:ops]\n"
        "    threshold: 2\n"
        "groups:\n  ops: [key:bob, identity:alice]\n"
    )
    rule = {r.label(): r for r in _rules(text)}["kinds"]
    assert _names(rule) == [["recovery", "alice", "bob"], ["recovery", "bob", "db1", "web1"],
                            ["recovery", "db1", "web1", "bob", "alice"]]
    assert rule.threshold == 2


def test_host_key_form_ssh_emits_host_keys_verbatim_without_comment() -> None:
    text = SMALL_POLICY.replace("always_readers: [key:recovery]", "always_readers: [key:recovery]\n  host_key_form: ssh")
    rule = {r.label(): r for r in _rules(text)}["host (host=web1)"]
    recipients = [k.recipient for k in rule.key_groups[0]]
    assert recipients[1].startswith("ssh-ed25519 AAAA") and recipients[1].count(" ") == 1
    assert recipients[2] == AGE["alice"]  # identity keys stay age


def test_a_class_with_no_active_reader_is_an_error() -> None:
    text = SMALL_POLICY.replace("always_readers: [key:recovery]", "always_readers: []").replace(
        "readers: [role:admin, hosts]", "readers: [platform:darwin]")
    generated = build_rules(load_policy(policy_sources(text)))
    assert [p.code for p in generated.errors] == ["empty-class"]
    assert "shared" in generated.errors[0].message


@pytest.mark.parametrize("threshold", [1, 4])
def test_shamir_threshold_outside_two_to_groups_is_an_error(threshold: int) -> None:
    text = SMALL_POLICY + (
        "  - name: split\n    path: secrets/split/**\n"
        f"    key_groups: [[identity:alice], [host:db1], [host:web1]]\n    threshold: {threshold}\n")
    generated = build_rules(load_policy(policy_sources(text)))
    assert [p.code for p in generated.errors] == ["threshold"]


def test_match_rule_is_sops_first_match_unanchored_search() -> None:
    rules = (
        CreationRule("^secrets/prod/.*\\.yaml$", ((RuleKey("a"),),)),
        CreationRule("dev", ((RuleKey("b"),),)),
        CreationRule("\\.json$", ((RuleKey("c"),),)),
        CreationRule(None, ((RuleKey("d"),),)),
        CreationRule(".*", ((RuleKey("e"),),)),
    )
    assert match_rule(rules, "secrets/prod/a.yaml") == 0
    assert match_rule(rules, "secrets/dev/a.yaml") == 1
    assert match_rule(rules, "sub/x.json") == 2
    assert match_rule(rules, "sub/prod.yaml") == 3  # the catch-all shadows `.*`
    assert match_rule(rules[:3], "nested/prod.yaml") is None


def _render(text: str) -> str:
    policy = load_policy(policy_sources(text))
    generated = build_rules(policy)
    if generated.errors:
        raise PolicyError(generated.errors)
    return render(generated.rules, policy, key_owners(policy), "policies/")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), seed=st.integers(0, 10_000))
def test_output_does_not_depend_on_listing_order(fleet: Fleet, seed: int) -> None:
    order = list(range(20))
    random.Random(seed).shuffle(order)
    # Every class has the recovery key, so no random fleet leaves a class empty.
    expected = _render(fleet_policy_text(fleet))
    assert _render(fleet_policy_text(fleet, order)) == expected


def _granted(fleet: Fleet, path: str) -> set[str] | None:
    """A naive, independent model of what the fleet policy grants for a path."""
    pool = key_pool()
    active_ids = {n for n, i in fleet.identities.items() if i["active"]}
    account_owner = {a: n for n, i in fleet.identities.items() for a in i["accounts"]}
    admins = {fleet.key_of(n) for n in active_ids if fleet.identities[n]["role"] == "admin"}
    parts = path.split("/")
    if parts[:2] == ["secrets", "home"] and len(parts) > 3:
        owner = account_owner.get(parts[2])
        return {pool[0], fleet.key_of(owner)} if owner in active_ids else None
    if parts[:2] == ["secrets", "hosts"] and len(parts) > 3:
        host = fleet.hosts.get(parts[2])
        if host is None or not host["active"]:
            return None
        admin_ids = {account_owner[a] for a, rel in host["users"].items() if rel == "admin"} & active_ids
        return {pool[0], fleet.key_of(parts[2])} | {fleet.key_of(i) for i in admin_ids}
    active_hosts = {n for n, h in fleet.hosts.items() if h["active"]}
    if path == "secrets/darwin.yaml":
        return {pool[0]} | admins | {fleet.key_of(h) for h in active_hosts if fleet.hosts[h]["platform"] == "darwin"}
    if len(parts) == 3 and parts[:2] == ["secrets", "shared"] and path.endswith(".yaml"):
        return {pool[0]} | admins | {fleet.key_of(h) for h in active_hosts}
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets())
def test_generated_rules_read_back_give_each_path_the_granted_readers(fleet: Fleet) -> None:
    text = _render(fleet_policy_text(fleet))
    rules = parse_rules(text.encode())
    accounts = [a for i in fleet.identities.values() for a in i["accounts"]]
    paths = [f"secrets/home/{a}/x.yaml" for a in accounts] + [f"secrets/hosts/{h}/a/b.json" for h in fleet.hosts]
    paths += ["secrets/darwin.yaml", "secrets/shared/x.yaml", "secrets/shared/a/x.yaml", "secrets/other.yaml"]
    for path in paths:
        index = match_rule(rules, path)
        got = None if index is None else {k.recipient for g in rules[index].key_groups for k in g}
        assert got == _granted(fleet, path), path


_PATH_PARTS = st.sampled_from(["secrets", "hosts", "a", "b", "x.yaml", "y.json", "dev", "prod", "s.env"])
_GLOBS = st.lists(st.sampled_from(["secrets", "hosts", "a", "b", "*", "**", "*.yaml", "{a,b}", "x.yaml", "[ab]"]),
                  min_size=1, max_size=4).map("/".join)
_REGEXES = st.sampled_from(["dev", "\\.json$", "^secrets/a", "^a|b$", "^(a|secrets)/", "x\\.yaml", "^secrets/[ab]+/"])


@settings(max_examples=300, deadline=None)
@given(patterns=st.lists(st.one_of(_GLOBS, _REGEXES, st.none()), min_size=1, max_size=8),
       paths=st.lists(st.lists(_PATH_PARTS, min_size=1, max_size=4).map("/".join), min_size=1, max_size=10))
def test_rule_matcher_agrees_with_first_match(patterns, paths) -> None:
    from sopsctl.engine import RuleMatcher
    from sopsctl.globs import glob_to_regex

    rules = []
    for pattern in patterns:
        if pattern is not None and not pattern.startswith(("^", "\\")) and pattern not in ("dev", "x\\.yaml"):
            try:
                pattern = glob_to_regex(pattern)
            except ValueError:
                continue
        rules.append(CreationRule(pattern, ((RuleKey("k"),),)))
    matcher = RuleMatcher(rules)
    for path in paths:
        assert matcher.match(path) == match_rule(rules, path), (path, [r.path_regex for r in rules])


def test_literal_prefix() -> None:
    from sopsctl.engine import literal_prefix

    assert literal_prefix("^secrets/hosts/web1/.*$") == "secrets/hosts/web1/"
    assert literal_prefix(r"^secrets/a\.yaml$") == "secrets/a.yaml"
    assert literal_prefix("^ab*c") == "a"  # b may vanish
    assert literal_prefix("^a|b") == ""  # the anchor covers one branch only
    assert literal_prefix("secrets/a") == ""  # unanchored: found anywhere
    assert literal_prefix("^(?:a|b)/x") == ""


def test_a_key_named_directly_resolves_to_nothing_once_its_owner_is_retired() -> None:
    text = SMALL_POLICY.replace("readers: [role:admin, hosts]", "readers: [key:bob, key:db1]")
    assert _names({r.label(): r for r in _rules(text)}["shared"]) == [["recovery", "bob", "db1"]]
    retired = text.replace("bob: {role: user, keys: [bob]}", "bob: {role: user, keys: [bob], status: retired}")
    retired = retired.replace("db1: {platform: nixos, keys: [db1], users: {alice: admin}}",
                              "db1: {platform: nixos, keys: [db1], users: {alice: admin}, status: retired}")
    assert _names({r.label(): r for r in _rules(retired)}["shared"]) == [["recovery"]]
