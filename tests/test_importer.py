"""`sopsctl import`: a hand-written .sops.yaml becomes a policy regenerating rules that give
every path the same recipient groups and threshold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopsctl import automata
from sopsctl.cli import main
from sopsctl.engine import build_rules, match_rule
from sopsctl.errors import InputError
from sopsctl.importer import import_sops_yaml, regex_to_glob
from sopsctl.policy import key_owners, load_policy
from sopsctl.sopsconfig import parse_rules, render

from .strategies import key_pool

PGP = "85D77543B3D624B63CEA9E6DBC17301B491B3F21"


def _regenerate(policy_text: str) -> tuple[str, tuple]:
    policy = load_policy([("imported.yaml", policy_text.encode())])
    generated = build_rules(policy)
    assert not generated.errors, generated.errors
    config = render(generated.rules, policy, key_owners(policy), "imported.yaml")
    return config, parse_rules(config.encode())


def _norm(key) -> str:
    return key.recipient.replace(" ", "").upper() if key.kind == "pgp" else key.recipient


def _effect(rules, path: str):
    index = match_rule(rules, path)
    if index is None:
        return None
    rule = rules[index]
    groups = tuple(frozenset((k.kind, _norm(k)) for k in g) for g in rule.key_groups)
    return groups, rule.effective_threshold, rule.options


def _regex_literals(regex: str) -> list[str]:
    """Literal runs of a regex (its prefixes as a person would write paths with them)."""
    text = re.sub(r"\\(.)", r"\1", regex.lstrip("^"))
    return [p for p in re.split(r"[.*+?()\[\]{}|$^]+", text) if p]


def _sample(rules, extra: list[str] = ()) -> list[str]:
    paths = list(extra) + ["README.md", "elsewhere/file.yaml", "x.txt", "secrets/other.yaml", "secrets/other.bin"]
    for rule in rules:
        if rule.path_regex is None:
            continue
        prefixes = {automata.literal_prefix(rule.path_regex), *_regex_literals(rule.path_regex)}
        for prefix in prefixes:
            base = prefix if prefix.endswith("/") or not prefix else prefix
            paths += [base + "new.yaml", base + "a/b/x.yaml", base + "x.json", base, base + "/x.yaml",
                      "x/" + base + "new.yaml", base.rstrip("/") + ".yaml", base + "x.txt"]
    return sorted({p.strip("/") for p in paths if p.strip("/")})


def _assert_same_effect(original: bytes, head_paths: list[str] = ()) -> tuple[str, list[str]]:
    theirs = parse_rules(original)
    result = import_sops_yaml(original)
    _, ours = _regenerate(result.text)
    paths = _sample(theirs, head_paths)
    mismatches = {p: (_effect(ours, p), _effect(theirs, p)) for p in paths if _effect(ours, p) != _effect(theirs, p)}
    assert mismatches == {}
    return result.text, paths


# -- the real fleet --------------------------------------------------------------------------


def _configs(real_fleet: Path) -> list[Path]:
    return sorted((real_fleet / "history" / "sops-yaml").glob("*.yaml")) + [real_fleet / "head" / ".sops.yaml"]


def test_every_real_config_imports_with_the_same_effect(real_fleet: Path) -> None:
    head = real_fleet / "head"
    existing = sorted(p.relative_to(head).as_posix() for p in (head / "secrets").rglob("*") if p.is_file())
    configs = _configs(real_fleet)
    assert len(configs) == 20
    total = 0
    for config in configs:
        original = config.read_bytes()
        text, paths = _assert_same_effect(original, existing)
        total += len(paths)
        theirs = parse_rules(original)
        governed = [p for p in paths if _effect(theirs, p) is not None]
        assert len(governed) > 10, config.name
        # same number of classes as reachable rules; anchor names become key names
        assert text.count("\n  - name: ") == len(theirs)
    assert total > 2000


def test_head_keeps_anchor_names_and_comments_as_notes(real_fleet: Path) -> None:
    text = import_sops_yaml((real_fleet / "head" / ".sops.yaml").read_bytes()).text
    assert "\n  admin: age1vy7wsnf8" in text
    assert "note: 'from sops-dev-ssh in Bitwarden'" in text
    assert "always_readers" not in text


def test_fixed_point_on_real_history(real_fleet: Path) -> None:
    for config in _configs(real_fleet):
        first = import_sops_yaml(config.read_bytes()).text
        generated, _ = _regenerate(first)
        assert import_sops_yaml(generated.encode()).text.replace("from .sops.yaml", "") == \
            first.replace("from .sops.yaml", ""), config.name


# -- forms sops accepts -----------------------------------------------------------------------


def test_forms_string_list_merge_shamir_pgp_options_and_catch_all() -> None:
    k = key_pool()
    config = f"""
keys:
  - &alice {k[1]}
  - &bob {k[2]}
groups:
  - &base {{age: [*alice]}}
creation_rules:
  - path_regex: ^secrets/ca/[^/]*\\.yaml$
    shamir_threshold: 2
    key_groups:
      - merge: [*base]
        pgp: ['{PGP.lower()}']
      - age: ['{k[2]},{k[3]}']
      - age: [{k[4]}]  # carol
    encrypted_regex: ^(data|stringData)$
  - path_regex: ^secrets/flat/
    age: "{k[1]}, {k[5]}"
    mac_only_encrypted: true
  - age: [*bob]
  - path_regex: never/reached
    age: [*bob]
""".encode()
    result = import_sops_yaml(config)
    text = result.text
    assert "path: 'secrets/ca/*.yaml'" in text  # proven equal, so a glob
    assert "path_regex: '^secrets/flat/'" in text  # a prefix, not a glob
    assert "fallback: default" in text and "threshold: 2" in text
    assert f"pgp: {PGP}" in text and "  carol: " in text and "  alice: " in text
    assert any("never reaches" in line for line in result.report)
    assert any("named after its comment" in line for line in result.report)
    _assert_same_effect(config)


@pytest.mark.parametrize("bad, message", [
    ("creation_rules:\n  - path_regex: x\n    kms: arn:aws:kms:x\n", "kms key"),
    ("creation_rules:\n  - path_regex: x\n", "no keys"),
    ("creation_rules:\n  - path_regex: x\n    age: age1notakey\n", "rule 1"),
    ("keys: []\n", "no creation_rules"),
])
def test_what_a_policy_cannot_express_is_refused(bad: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        import_sops_yaml(bad.encode())


@pytest.mark.parametrize("regex, glob", [
    (r"^secrets/x/[^/]*\.yaml$", "secrets/x/*.yaml"),
    (r"^secrets/x/.*$", "secrets/x/**"),
    (r"^secrets/x/.*\.yaml$", "secrets/x/**/*.yaml"),
    (r"^secrets/shared\.yaml$", "secrets/shared.yaml"),
    (r"secrets/x/.*\.yaml$", None),  # unanchored: matches inside a longer path
    (r"^secrets/x/.*\.yaml", None),  # no $: matches secrets/x/a.yaml.bak
    (r"^secrets/(a|b)\.yaml$", None),  # not attempted
])
def test_regex_becomes_glob_only_when_proven(regex: str, glob: str | None) -> None:
    assert regex_to_glob(regex) == glob


def test_cli_writes_policy_and_report(tmp_path: Path, real_fleet: Path, capsys) -> None:
    target = tmp_path / "policy.yaml"
    assert main(["import", str(real_fleet / "head" / ".sops.yaml"), "-o", str(target)]) == 0
    load_policy([("policy.yaml", target.read_bytes())])
    assert "no identities or hosts guessed" in capsys.readouterr().err
    assert main(["import", str(real_fleet / "head" / ".sops.yaml"), "-o", str(target)]) == 3  # never overwrites
    assert main(["import", str(real_fleet / "head" / ".sops.yaml")]) == 0
    assert capsys.readouterr().out.startswith("# Imported by `sopsctl import`")


# -- property: import -> generate -> import is a fixed point --------------------------------

REGEXES = [r"^secrets/a/[^/]*\.yaml$", r"secrets/a/.*\.yaml$", r"^secrets/b/", r"\.json$", r"^secrets/.*$",
           r"secrets/shared\.yaml$", r"^secrets/(x|y)/.*", r"^secrets/a/.*$"]
OPTIONS = ["", "    encrypted_regex: ^data$\n", "    mac_only_encrypted: true\n"]


@st.composite
def sops_configs(draw) -> bytes:
    pool = key_pool()[10:16]
    anchored = draw(st.booleans())
    lines = ["keys:"] + [f"  - &k{i} {r}" for i, r in enumerate(pool)] if anchored else []
    lines.append("creation_rules:")
    ref = (lambda i: f"*k{i}") if anchored else (lambda i: pool[i])
    keyset = st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=3)
    for regex in draw(st.lists(st.sampled_from(REGEXES), min_size=1, max_size=5)):
        groups = draw(st.lists(keyset, min_size=1, max_size=3))
        lines.append(f"  - path_regex: '{regex}'")
        if len(groups) == 1 and draw(st.booleans()):
            lines.append("    age: [" + ", ".join(ref(i) for i in groups[0]) + "]")
        else:
            if len(groups) > 1:
                lines.append(f"    shamir_threshold: {draw(st.integers(2, len(groups)))}")
            lines.append("    key_groups:")
            lines += ["      - age: [" + ", ".join(ref(i) for i in g) + "]" for g in groups]
        lines.append(draw(st.sampled_from(OPTIONS)).rstrip("\n") or "    # no options")
    if draw(st.booleans()):
        lines.append("  - age: [" + ref(0) + "]")
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sops_configs())
def test_import_generate_import_is_a_fixed_point(config: bytes) -> None:
    first, _ = _assert_same_effect(config)
    generated, _ = _regenerate(first)
    second = import_sops_yaml(generated.encode()).text
    assert second == first
    # and the regenerated config has the same effect as the original on every sampled path
    theirs, ours = parse_rules(config), parse_rules(generated.encode())
    for path in _sample(theirs):
        assert _effect(ours, path) == _effect(theirs, path), path
