"""The policy JSON Schema (`sopsctl schema`): the example policies validate, broken ones are rejected,
and for every broken case the loader refuses it too, so schema and loader agree. The schema check
`lint` runs (sopsctl/schemacheck.py) passes every policy the tests load: no false positives."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from sopsctl import schemacheck
from sopsctl.cli import main
from sopsctl.errors import ExitCode, PolicyError
from sopsctl.model import SELECTOR_KINDS_BARE, SELECTOR_KINDS_WITH_ARG
from sopsctl.policy import CRYPT_OPTIONS, RELATIONS, SECTIONS, load_policy

from .policy_helpers import SMALL_POLICY
from .strategies import fleet_policy_text, fleets

ROOT = Path(__file__).resolve().parent.parent
POLICY_FILES = sorted((ROOT / "policies").glob("*.yaml"))
REAL_FLEET = ROOT / "tests" / "fixtures" / "real-fleet-policy.yaml"

SCHEMA = json.loads(resources.files("sopsctl").joinpath("schema/policy.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def as_json(data: object) -> object:
    """What a JSON-Schema validator (or yaml-language-server) sees: YAML dates become strings."""
    return json.loads(json.dumps(data, default=str))


def errors(data: object) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(as_json(data))]


# A complete single-file policy that the loader accepts; every broken case below is one change to it.
BASE_TEXT = """\
version: 1
settings:
  secrets_dirs: [secrets]
  always_readers: [key:recovery]
  fallback: deny
  host_key_form: age
  ignore: ["**/README.md"]
keys:
  recovery: {age: age17xnaa08x0ym4lpkyzp4pcctmld837n03x2nqvtfq8smxsssdp3tsrt55w6, note: offline}
  cameron: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGUVx7My5cXyednyd1TXJ9Dyn8XIokW8eZiJS7KXV25D cameron@stibnite"
  raquel: {age: age1lx2exccsuyt8h63wyujktv3nqhctct0vky7yyqats57g44jcfsfqg359f7, status: retired, retired: 2026-07-10}
  stibnite: {ssh: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKYcPrPHsyNxIkcGz4tKHQOHa9/jb6TfllNHCE27yi7U root@stibnite"}
  ops-pgp: {pgp: "FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4"}
identities:
  cameron: {role: admin, accounts: [crs58, cameron], keys: [cameron], note: one person}
  raquel: {role: user, keys: raquel, status: retired}
hosts:
  stibnite: {platform: darwin, keys: [stibnite], users: {crs58: admin, raquel: primary}, status: active}
groups:
  operators: [identity:cameron, key:ops-pgp]
classes:
  - name: home
    path: secrets/home-manager/users/{account}/**
    readers: ["identity:{identity}"]
  - name: host
    path: secrets/hosts/{host}/**
    readers: ["host:{host}", "admins-of:{host}"]
  - name: shared
    paths: [secrets/shared.yaml, secrets/services/**]
    readers: [role:admin, hosts, group:operators]
    sops: {encrypted_regex: "^(data|stringData)$", mac_only_encrypted: true}
  - name: root-ca
    path_regex: ^secrets/root-ca/.*$
    key_groups: [[role:admin], [host:stibnite]]
    threshold: 2
    note: Shamir
key_bearing:
  secrets/bridge/crs58-age-key.enc: cameron
  secrets/bridge/host.enc: host:stibnite
"""
BASE = yaml.safe_load(BASE_TEXT)


def _set(path: str, value: object) -> Callable[[dict], None]:
    """A change that sets one value, the path dotted (list items by index)."""

    def change(doc: dict) -> None:
        *parents, last = path.split(".")
        node: object = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value  # type: ignore[index]

    return change


def _drop(path: str) -> Callable[[dict], None]:
    def change(doc: dict) -> None:
        *parents, last = path.split(".")
        node: object = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        del node[last]  # type: ignore[attr-defined]

    return change


BROKEN: dict[str, Callable[[dict], None]] = {
    # unknown sections and fields
    "unknown section": _set("extras", {"a": 1}),
    "unknown setting": _set("settings.colour", "blue"),
    "unknown key field": _set("keys.recovery.comment", "x"),
    "unknown identity field": _set("identities.cameron.email", "c@example.org"),
    "unknown host field": _set("hosts.stibnite.arch", "arm64"),
    "unknown class field": _set("classes.0.owner", "cameron"),
    "unknown sops option": _set("classes.2.sops.key_groups", "x"),
    # wrong types
    "version is a string": _set("version", "1"),
    "version 2": _set("version", 2),
    "settings is a list": _set("settings", ["secrets"]),
    "keys is a list": _set("keys", ["recovery"]),
    "key is a list": _set("keys.recovery", ["age1"]),
    "key is empty": _set("keys.recovery", None),
    "key without recipient": _set("keys.recovery", {"note": "nothing"}),
    "key age is a mapping": _set("keys.recovery.age", {"x": 1}),
    "pgp with age": _set("keys.ops-pgp.age", BASE["keys"]["recovery"]["age"]),
    "identity is a string": _set("identities.cameron", "admin"),
    "identity accounts is a mapping": _set("identities.cameron.accounts", {"crs58": 1}),
    "bad account name": _set("identities.cameron.accounts", ["crs 58"]),
    "identity keys is a boolean": _set("identities.cameron.keys", True),
    "bad key name": _set("keys.bad name", "age1x"),
    "hosts is a list": _set("hosts", ["stibnite"]),
    "host users is a list": _set("hosts.stibnite.users", ["crs58"]),
    "group is a mapping": _set("groups.operators", {"a": "identity:cameron"}),
    "classes is a mapping": _set("classes", {"home": {}}),
    "class is a string": _set("classes.0", "home"),
    "class without name": _drop("classes.0.name"),
    "class readers is a mapping": _set("classes.0.readers", {"identity": "cameron"}),
    "class key_groups is empty": _set("classes.3.key_groups", []),
    "class paths is empty": _set("classes.2.paths", []),
    "class with path and paths": _set("classes.0.paths", ["secrets/other/**"]),
    "class with path and path_regex": _set("classes.0.path_regex", "^x$"),
    "sops is a list": _set("classes.2.sops", ["encrypted_regex"]),
    "mac_only_encrypted is a string": _set("classes.2.sops.mac_only_encrypted", "yes"),
    "two crypt options": _set("classes.2.sops.unencrypted_suffix", "_plain"),
    "key_bearing is a list": _set("key_bearing", ["secrets/x.enc"]),
    # selectors
    "unknown selector kind": _set("classes.0.readers", ["person:cameron"]),
    "selector without name": _set("groups.operators", ["identity:"]),
    "bare selector that needs a name": _set("settings.always_readers", ["role"]),
    "selector is a number": _set("classes.1.readers", [5]),
    "bad key_bearing selector": lambda d: d["key_bearing"].update({"secrets/bridge/host.enc": "hostx:stibnite"}),
    # enumerations
    "key status not active/retired": _set("keys.recovery.status", "gone"),
    "identity status not active/retired": _set("identities.raquel.status", "inactive"),
    "host status not active/retired": _set("hosts.stibnite.status", "decommissioned"),
    "relation not primary/admin/user": _set("hosts.stibnite.users.crs58", "owner"),
    "host_key_form not age/ssh": _set("settings.host_key_form", "pgp"),
    # readers xor key_groups, threshold
    "class with readers and key_groups": _set("classes.0.key_groups", [["role:admin"]]),
    "class with neither readers nor key_groups": _drop("classes.0.readers"),
    "threshold with readers": _set("classes.0.threshold", 1),
    "threshold is a string": _set("classes.3.threshold", "two"),
    "threshold is a float": _set("classes.3.threshold", 1.5),
}


def broken(case: str) -> dict:
    doc = copy.deepcopy(BASE)
    BROKEN[case](doc)
    return doc


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_names_exactly_the_loader_vocabulary() -> None:
    assert tuple(SCHEMA["properties"]) == SECTIONS
    defs = SCHEMA["$defs"]
    assert set(defs["key"]["anyOf"][1]["properties"]) == {"age", "ssh", "pgp", "clan_user", "clan_machine",
                                                          "status", "retired", "note"}
    setting_fields = SCHEMA["properties"]["settings"]["anyOf"][1]["properties"]
    assert set(setting_fields) == {"secrets_dirs", "always_readers", "fallback", "host_key_form", "ignore", "clan_root"}
    assert set(defs["identity"]["properties"]) == {"role", "accounts", "keys", "status", "note"}
    assert set(defs["host"]["properties"]) == {"platform", "keys", "users", "status", "note"}
    assert set(defs["class"]["properties"]) == {"name", "path", "paths", "path_regex", "readers", "key_groups",
                                                "threshold", "sops", "note"}
    assert set(defs["class"]["properties"]["sops"]["properties"]) == {*CRYPT_OPTIONS, "mac_only_encrypted"}
    assert defs["host"]["properties"]["users"]["additionalProperties"]["enum"] == list(RELATIONS)
    assert defs["status"]["enum"] == ["active", "retired"]
    pattern = defs["selector"]["pattern"]
    for kind in SELECTOR_KINDS_WITH_ARG:
        assert kind.replace("-", "\\-") in pattern
    for kind in SELECTOR_KINDS_BARE:
        assert kind in pattern


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_every_example_policy_file_validates(path: Path) -> None:
    assert errors(yaml.safe_load(path.read_text())) == []


def test_the_example_policy_loads() -> None:
    load_policy([(p.name, p.read_bytes()) for p in POLICY_FILES])


def test_real_fleet_policy_validates() -> None:
    assert errors(yaml.safe_load(REAL_FLEET.read_text())) == []


def test_base_policy_validates_and_loads() -> None:
    assert errors(BASE) == []
    load_policy([("p.yaml", BASE_TEXT.encode())])
    load_policy([("p.yaml", yaml.safe_dump(BASE, sort_keys=False).encode())])  # the round trip the cases use


def test_empty_sections_and_an_empty_file_are_allowed() -> None:
    assert errors({section: None for section in SECTIONS}) == []
    assert errors(None) == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_policy_is_rejected_by_the_schema(case: str) -> None:
    assert errors(broken(case)), f"the schema accepts: {case}"


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_loader_refuses_what_the_schema_rejects(case: str) -> None:
    text = yaml.safe_dump(broken(case), sort_keys=False)
    with pytest.raises(PolicyError):
        load_policy([("p.yaml", text.encode())])


def test_schema_command_prints_the_shipped_schema(capsys) -> None:
    assert main(["schema"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out) == SCHEMA


# -- the check lint runs: no false positives on any policy the loader accepts ---------------------


def _policy_texts_in_tests() -> dict[str, str]:
    """Policy texts the test suite writes, module-level (f-strings included) or literal anywhere."""
    import ast
    import importlib
    import textwrap

    found: dict[str, str] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "conftest.py":
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        texts = [(f"line {node.lineno}", node.value) for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts]
        try:  # module-level texts built with f-strings exist only once the module runs
            values = vars(importlib.import_module(module))
        except Exception:  # noqa: BLE001 - a module that cannot import fails its own tests, not these
            values = {}
        texts += [(name, value) for name, value in values.items() if isinstance(value, str)]
        for where, text in texts:
            text = textwrap.dedent(text)
            if "\nclasses:" in f"\n{text}" and ("keys:" in text or "version:" in text):
                found.setdefault(text, f"{path.relative_to(ROOT)} {where}")
    return {where: text for text, where in found.items()}


def _loads(text: str) -> bool:
    try:
        load_policy([("p.yaml", text.encode())])
    except PolicyError:
        return False
    return True


# templates and policies broken on purpose do not load: only the ones that do must pass the schema
TEST_POLICIES = {where: text for where, text in _policy_texts_in_tests().items() if _loads(text)}


def test_the_suite_writes_policies_to_check() -> None:
    assert len(TEST_POLICIES) >= 4, TEST_POLICIES.keys()
    assert SMALL_POLICY in TEST_POLICIES.values()


@pytest.mark.parametrize("where", sorted(TEST_POLICIES))
def test_every_policy_the_tests_load_passes_the_schema_check(where: str) -> None:
    assert schemacheck.check([("p.yaml", TEST_POLICIES[where].encode())]).problems == []


def test_example_and_real_fleet_policies_pass_the_schema_check() -> None:
    sources = [(p.name, p.read_bytes()) for p in [*POLICY_FILES, REAL_FLEET]]
    assert schemacheck.check(sources).problems == []
    assert schemacheck.check([("p.yaml", BASE_TEXT.encode())]).problems == []


def test_an_imported_policy_passes_the_schema_check(tmp_path: Path) -> None:
    from sopsctl.importer import import_sops_yaml

    assert main(["generate", "--root", str(tmp_path), "--policy", str(ROOT / "policies")]) == ExitCode.OK
    text = import_sops_yaml((tmp_path / ".sops.yaml").read_bytes()).text
    assert _loads(text)
    assert schemacheck.check([("imported.yaml", text.encode())]).problems == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_random_fleet_policies_pass_the_schema_check(fleet) -> None:  # type: ignore[no-untyped-def]
    text = fleet_policy_text(fleet)
    assert _loads(text)
    assert schemacheck.check([("p.yaml", text.encode())]).problems == []


def test_a_policy_directory_is_checked_file_by_file_without_top_level_requirements() -> None:
    assert "required" not in SCHEMA  # each file of a directory is a fragment: nothing is required of it
    head, classes = SMALL_POLICY.split("classes:\n")
    sources = [("p/a.yaml", head.encode()), ("p/b.yaml", ("classes:\n" + classes).encode()), ("p/c.yaml", b"")]
    load_policy(sources)
    assert schemacheck.check(sources).problems == []


def test_clan_keys_and_clan_root_pass_the_schema() -> None:
    """Keys read from clan name a user or machine instead of a recipient; lint must not reject them."""
    text = SMALL_POLICY.replace("always_readers: [key:recovery]\n",
                                "always_readers: [key:recovery]\n  clan_root: infra/clan\n")
    text = text.replace("keys:\n", "keys:\n  crs58: {clan_user: crs58, note: from clan}\n"
                                    "  cinnabar: {clan_machine: cinnabar}\n", 1)
    assert schemacheck.check([("p.yaml", text.encode())]).problems == []
    both = text.replace("{clan_machine: cinnabar}", "{clan_machine: cinnabar, clan_user: crs58}")
    assert [p.message for p in schemacheck.check([("p.yaml", both.encode())]).problems] == [
        "keys.cinnabar: clan_machine and clan_user cannot be given together (choose one)"]
    nothing = text.replace("{clan_machine: cinnabar}", "{note: cinnabar}")
    assert [p.message for p in schemacheck.check([("p.yaml", nothing.encode())]).problems] == [
        "keys.cinnabar: needs one of age, ssh, pgp, clan_user, clan_machine"]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_schema_check_explains_every_broken_case_in_words(case: str) -> None:
    text = yaml.safe_dump(broken(case), sort_keys=False)
    problems = schemacheck.check([("p.yaml", text.encode())]).problems
    assert problems, f"the schema check accepts: {case}"
    for problem in problems:
        assert problem.code == "schema" and problem.source and problem.source.line > 1 or case.startswith(
            ("version", "settings")), problem
        assert not any(raw in problem.message for raw in ("given schemas", "should not be valid", "{'")), problem
