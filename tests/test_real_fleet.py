"""The real fleet: a policy regenerates rules that give every path the recipients head/.sops.yaml gives it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopsctl import automata
from sopsctl.engine import build_rules, match_rule
from sopsctl.policy import key_owners, load_policy
from sopsctl.sopsconfig import parse_rules, render

POLICY = Path(__file__).parent / "fixtures" / "real-fleet-policy.yaml"

# New paths a person might add, per rule of the real config (and a few that no rule takes).
NEW_PATHS = [
    "secrets/users/admin-user/signing-key.yaml",
    "secrets/users/admin-user/new-token.yaml",
    "secrets/users/admin-user/deep/er/x.yaml",
    "secrets/users/admin-user/notes.txt",
    "secrets/users/raquel-user/signing-key.yaml",
    "secrets/users/raquel-user/a/b.yaml",
    "secrets/users/someone-else/x.yaml",
    "secrets/home-manager/users/crs58/extra.yaml",
    "secrets/home-manager/users/tara/nested/extra.yaml",
    "secrets/home-manager/users/nobody/secrets.yaml",
    "secrets/home-manager/users/raquel/secrets.json",
    "secrets/bridge/new-age-key.enc",
    "secrets/bridge/sub/dir/file",
    "secrets/hosts/stibnite/wifi.yaml",
    "secrets/hosts/orb-nixos/a/b.yaml",
    "secrets/hosts/cinnabar/x.yaml",
    "secrets/hosts/blackphos/x.json",
    "secrets/clusters/local/new.enc.yaml",
    "secrets/clusters/remote/new.enc.yaml",
    "secrets/services/grafana.yaml",
    "secrets/services/deep/grafana.yaml",
    "secrets/services/grafana.json",
    "secrets/shared.yaml",
    "secrets/test.yaml",
    "secrets/other.yaml",
    "elsewhere/file.yaml",
    "README.md",
]


def _recipient_groups(rules, path):
    index = match_rule(rules, path)
    if index is None:
        return None
    rule = rules[index]
    return (tuple(frozenset(k.recipient for k in g) for g in rule.key_groups), rule.effective_threshold)


@pytest.fixture(scope="module")
def rules_pair(real_fleet: Path):
    policy = load_policy([(POLICY.name, POLICY.read_bytes())])
    generated = build_rules(policy)
    assert not generated.errors
    text = render(generated.rules, policy, key_owners(policy), "tests/fixtures/real-fleet-policy.yaml")
    # Read the generated text back the way sops reads it: that checks the renderer too.
    ours = parse_rules(text.encode())
    theirs = parse_rules((real_fleet / "head" / ".sops.yaml").read_bytes())
    return ours, theirs


def _sample_paths(real_fleet: Path, ours) -> list[str]:
    head = real_fleet / "head"
    existing = sorted(p.relative_to(head).as_posix() for p in (head / "secrets").rglob("*") if p.is_file())
    assert len(existing) >= 18
    generated = []
    for rule in ours:
        prefix = automata.literal_prefix(rule.path_regex) if rule.path_regex else ""
        generated += [prefix + "new.yaml", prefix + "a/b/new.yaml", prefix + "new.json"]
    return existing + NEW_PATHS + generated


def test_every_real_and_new_path_gets_the_same_recipients(real_fleet: Path, rules_pair) -> None:
    ours, theirs = rules_pair
    paths = _sample_paths(real_fleet, ours)
    mismatches = {p: (_recipient_groups(ours, p), _recipient_groups(theirs, p)) for p in paths
                  if _recipient_groups(ours, p) != _recipient_groups(theirs, p)}
    assert mismatches == {}
    # The comparison is not vacuous: most paths are governed, and by different rules.
    governed = [p for p in paths if _recipient_groups(theirs, p) is not None]
    assert len(governed) > 40
    assert len({_recipient_groups(theirs, p) for p in governed}) >= 10


def test_matching_follows_sops_first_match_and_unanchored_search(rules_pair) -> None:
    _, theirs = rules_pair
    # signing-key rules come first but give the same readers as the broader rule below them
    assert match_rule(theirs, "secrets/users/admin-user/signing-key.yaml") == 0
    assert match_rule(theirs, "secrets/users/admin-user/llm-api-keys.yaml") == 2
    # unanchored: the shared rule's regex is found inside a longer path
    assert match_rule(theirs, "x/secrets/shared.yaml") == 14
    # catch-all-ish fallback `.*\.yaml$` takes any other yaml; nothing takes a .txt
    assert match_rule(theirs, "secrets/other.yaml") == 15
    assert match_rule(theirs, "secrets/other.txt") is None
