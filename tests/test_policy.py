"""Policy loading: every section, merging a directory, and every kind of mistake named by file:line."""

from __future__ import annotations

import re

import pytest

from sopsctl.errors import PolicyError
from sopsctl.model import Owner, Selector
from sopsctl.policy import key_owners, load_policy, parse_selector

from .policy_helpers import AGE, SMALL_POLICY, SSH, policy_sources


def test_small_policy_loads_every_section() -> None:
    policy = load_policy(policy_sources())
    assert set(policy.keys) == {"recovery", "alice", "bob", "web1", "db1", "old"}
    assert policy.keys["web1"].ssh == SSH["web1"].rsplit(" ", 1)[0]  # comment dropped
    assert policy.keys["web1"].age is not None and policy.keys["web1"].age.startswith("age1")
    assert policy.keys["old"].status == "retired" and policy.keys["old"].retired == "2026-01-01"
    assert policy.identities["alice"].accounts == ("alice", "al")
    assert policy.identities["bob"].accounts == ("bob",)  # default: its own name
    assert policy.hosts["web1"].users == {"al": "admin", "bob": "primary"}
    assert policy.hosts["old"].status == "retired"
    assert [c.name for c in policy.classes] == ["home", "host", "shared"]
    assert policy.classes[2].paths == ("secrets/shared.yaml", "secrets/services/**")
    assert policy.settings.always_readers == (Selector("key", "recovery"),)
    assert key_owners(policy)["alice"] == Owner("identity", "alice")
    assert key_owners(policy)["db1"] == Owner("host", "db1")
    assert key_owners(policy)["recovery"] == Owner("key", "recovery")
    assert policy.keys["alice"].source is not None and policy.keys["alice"].source.line == 6


def test_directory_of_files_merges_by_section_and_names_both_files_on_a_clash() -> None:
    head, classes = SMALL_POLICY.split("classes:\n")
    sources = [("p/a.yaml", head.encode()), ("p/b.yaml", ("classes:\n" + classes).encode())]
    assert [c.name for c in load_policy(sources).classes] == ["home", "host", "shared"]
    clash = f"keys:\n  alice: {{age: {AGE['carol']}}}\n"
    with pytest.raises(PolicyError) as info:
        load_policy([*sources, ("p/c.yaml", clash.encode())])
    message = str(info.value)
    assert "p/c.yaml:2" in message and "p/a.yaml:6" in message and "defined twice" in message


def test_classes_may_appear_in_one_file_only() -> None:
    head, classes = SMALL_POLICY.split("classes:\n")
    sources = [("a.yaml", SMALL_POLICY.encode()), ("b.yaml", ("classes:\n" + classes).encode())]
    with pytest.raises(PolicyError, match=r"b.yaml:1: .*one policy file only"):
        load_policy(sources)


def test_ssh_and_age_given_together_must_agree() -> None:
    bad = SMALL_POLICY.replace(f'web1: {{ssh: "{SSH["web1"]}"}}', f'web1: {{ssh: "{SSH["web1"]}", age: {AGE["bob"]}}}')
    with pytest.raises(PolicyError, match=r"policy.yaml:\d+: .*not the ssh-to-age form"):
        load_policy(policy_sources(bad))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("readers: [role:admin, hosts]", "readers: [identity:zed]"), r"class 'shared': selector 'identity:zed' names no identity 'zed'"),
        (("readers: [role:admin, hosts]", "readers: [colour:red]"), r"unknown selector kind 'colour'"),
        (("readers: [role:admin, hosts]", 'readers: ["host:{account}"]'), r"uses \{account\} but no path of the class binds it"),
        (("keys: [bob]}", "keys: [bobby]}"), r"lists key 'bobby', which is not defined"),
        (("users: {alice: admin}", "users: {mallory: admin}"), r"account 'mallory' belongs to no identity"),
        (("users: {alice: admin}", "users: {alice: owner}"), r"relation 'owner'"),
        ((AGE["bob"], AGE["bob"][:-1] + "q"), r"key 'bob': .*"),
        (("platform: nixos, keys: [db1]", "platform: nixos, keys: [alice]"), r"key 'alice' is listed by"),
        (("  - name: shared\n", "  - name: home\n"), r"class 'home' is defined twice"),
        (("path: secrets/hosts/{host}/**", "path: /abs/{host}/**"), r"bad path glob"),
        (("version: 1", "version: 2"), r"unsupported policy version"),
        (("version: 1", "version: 1\nextra: 1"), r"unknown section 'extra'"),
        (("role: user, keys", "role: user, colour: red, keys"), r"unknown field 'colour'"),
        (("readers: [role:admin, hosts]", "readers: [role:admin]\n    threshold: 2"), r"threshold needs key_groups"),
        (("readers: [role:admin, hosts]", "readers: [hosts]\n    sops: {encrypted_regex: a, unencrypted_suffix: b}"), r"only one of"),
        (("readers: [role:admin, hosts]", "readers: [hosts]\n    sops: {age: x}"), r"'age' is not passed through"),
        (("paths: [secrets/shared.yaml, secrets/services/**]", "path_regex: 'a(?=b)'"), r"not RE2-compatible"),
        (("  - name: home\n", "  - name: home\n    path_regex: x\n"), r"give one of path, paths or path_regex"),
        (("accounts: [alice, al]", "accounts: [alice, al, bob]"), r"account 'bob' belongs to identities"),
    ],
)
def test_mistakes_are_reported_with_file_and_line(edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in SMALL_POLICY
    with pytest.raises(PolicyError) as info:
        load_policy(policy_sources(SMALL_POLICY.replace(old, new, 1)))
    message = str(info.value)
    assert re.search(expected, message), message
    assert all(re.match(r"policy\.yaml:\d+: error: ", line) for line in message.splitlines()), message


def test_all_problems_are_reported_not_just_the_first() -> None:
    text = SMALL_POLICY.replace("keys: [bob]}", "keys: [bobby]}").replace("role:admin, hosts", "identity:nobody")
    with pytest.raises(PolicyError) as info:
        load_policy(policy_sources(text))
    assert len(info.value.problems) == 2


@pytest.mark.parametrize(
    "text",
    ["classes: [\n", "keys: {a: 1}\n  bad indent: [", "- just\n- a list\n", "a: &x [*x]\n", "\x00\x01binary",
     "keys:\n  a: {age: x}\n  a: {age: y}\n", "---\nversion: 1\n---\nversion: 1\n"],
)
def test_broken_yaml_is_a_problem_with_a_line(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(policy_sources(text))
    assert re.match(r"policy\.yaml:\d+: error: ", str(info.value)), str(info.value)


def test_alias_bomb_is_refused_quickly() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 12):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [*{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}]\n"
    bomb += "groups:\n  g: *l\n"
    with pytest.raises(PolicyError):
        load_policy(policy_sources(bomb))


def test_selector_parsing() -> None:
    assert parse_selector("hosts", None) == Selector("hosts", None)
    assert parse_selector("admins-of:web1", None) == Selector("admins-of", "web1")
    assert parse_selector("identity:{identity}", None) == Selector("identity", "{identity}")
    for bad in ("host", "nope:x", "host:", "host:a b", "host:{other}"):
        with pytest.raises(ValueError):
            parse_selector(bad, None)
