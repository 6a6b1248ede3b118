"""Property-based fuzzing of every parser: random and mutated real inputs raise only the parser's own error.

Each parser is fed arbitrary bytes and mutations (truncation, byte flips, deletions, spliced tokens)
of real inputs: the shared sops vectors, the example policy, real keys. The property is the same for
all: the parser returns, or raises the one documented error type that the CLI turns into one line
and exit 3. Any other exception (a TypeError, an OverflowError, a RecursionError) is a bug.

`EXAMPLES` is the number of inputs per target; the module prints the total tried (`pytest -s`).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pyrage
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopsctl import identities as ids
from sopsctl import values as v
from sopsctl.crypto import agekeys, agewrap
from sopsctl.errors import InputError, KeyFormatError, PolicyError
from sopsctl.formats import FORMATS, MetadataError, detect_format, read_metadata
from sopsctl.model import SopsMetadata
from sopsctl.policy import load_policy
from sopsctl.sopsconfig import parse_rules
from sopsctl.verify import STATUSES, verify_file

from .conftest import REPO, VECTORS

EXAMPLES = 150  # inputs per fuzz target and run (hypothesis max_examples)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TRIED: collections.Counter[str] = collections.Counter()

# Tokens that break parsers in interesting ways, spliced into real inputs.
TOKENS = [b"\x00", b"\xff\xfe", b"\r", b"\n", b"\t", b"  ", b"'", b'"', b"\\", b"[", b"]", b"{", b"}", b"&a ",
          b"*a", b"<<: *a", b"!!binary ", b"!!python/object:os.system ", b"---\n", b"...\n", b"- ", b": ", b"#",
          b"~", b"null", b"1e999", b"-1", b"0", b"99999999999999999999999", b"NaN", b"Infinity", b"true",
          "é\u202e\ufeff".encode(), b"ENC[AES256_GCM,data:", b",type:str]", b"age1", b"AGE-SECRET-KEY-1",
          b"-----BEGIN AGE ENCRYPTED FILE-----\n", b"-----END AGE ENCRYPTED FILE-----", b"=", b"__list_0__map_",
          b"sops_", b"[sops]\n", b'"sops": ', b"sops:\n", b"key_groups", b"shamir_threshold: ", b"../", b"/etc/",
          b"__list_99999999999", b"__list_\xc2\xb2", b"__map_x", b"__map_", b"merge: "]


@pytest.fixture(scope="module", autouse=True)
def _report_count() -> Iterator[None]:
    yield
    total = sum(TRIED.values())
    detail = ", ".join(f"{name} {count}" for name, count in sorted(TRIED.items()))
    print(f"\nfuzzed {total} parser inputs ({EXAMPLES} per target): {detail}")


def _seeds(*patterns: str) -> list[bytes]:
    found = sorted({p for pattern in patterns for p in VECTORS.glob(pattern) if p.is_file()})
    return [p.read_bytes() for p in found]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real input after 1–4 edits; one draw in eight is plain random bytes instead."""
    if draw(st.integers(0, 7)) == 0:
        return draw(st.binary(max_size=400))
    data = bytearray(seeds[draw(st.integers(0, len(seeds) - 1), label="seed")])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["truncate", "flip", "delete", "insert", "token", "duplicate"]))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 200))]
    return bytes(data)


# Any value a YAML or JSON document can hold, the odd ones included.
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.sampled_from([float("inf"), 10**30, -1, 0, "", "age1", "ENC[AES256_GCM,data:,iv:,tag:,type:str]"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _nodes(tree: object, path: tuple = ()) -> list[tuple]:
    """Every path into a decoded document (keys of mappings, indices of lists)."""
    found = [path]
    if isinstance(tree, dict):
        found += [p for key, value in tree.items() for p in _nodes(value, (*path, key))]
    elif isinstance(tree, list):
        found += [p for index, value in enumerate(tree) for p in _nodes(value, (*path, index))]
    return found


@st.composite
def retyped(draw: st.DrawFn, documents: list[object]) -> object:
    """A real decoded document with one to three nodes replaced by a value of any type (wrong types)."""
    import copy

    tree = copy.deepcopy(documents[draw(st.integers(0, len(documents) - 1), label="document")])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_nodes(tree)))
        if not path:
            continue
        parent = tree
        for step in path[:-1]:
            parent = parent[step]  # type: ignore[index]
        parent[path[-1]] = draw(VALUES)  # type: ignore[index]
    return tree


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def only_raises(name: str, allowed: tuple[type[BaseException], ...], call: Callable[[], object]) -> object:
    """Run one fuzz input: it may return or raise an `allowed` error, and an error's message is one line."""
    TRIED[name] += 1
    try:
        return call()
    except allowed as exc:
        lines = exc.lines() if hasattr(exc, "lines") else str(exc).splitlines()
        assert lines and all(line.strip() for line in lines), f"{name}: an empty error message"
        if not isinstance(exc, PolicyError):  # a policy error lists every problem, one per line
            assert len(str(exc).splitlines()) <= 1, f"{name}: a multi-line message: {exc}"
        return None


# -- the sops block of each format ------------------------------------------------------------------

FORMAT_SEEDS = {fmt: _seeds(*patterns) for fmt, patterns in {
    "yaml": ("*/*.enc.yaml",), "json": ("*/*.enc.json", "binary/blob.enc"), "binary": ("binary/blob.enc",),
    "dotenv": ("dotenv/*.enc.env",), "ini": ("ini/*.enc.ini",)}.items()}


@pytest.mark.parametrize("full", [False, True], ids=["scan", "full"])
@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(data=st.data())
def test_sops_block_of_every_format(fmt: str, full: bool, data: st.DataObject) -> None:
    # Any format's seeds, not only its own: a YAML file read as INI is a real mistake.
    seeds = FORMAT_SEEDS[fmt] + FORMAT_SEEDS[data.draw(st.sampled_from(FORMATS), label="seeds from")]
    document = data.draw(mutated(seeds))
    result = only_raises(f"read_metadata[{fmt}]", (MetadataError,), lambda: read_metadata(document, fmt, full))
    assert result is None or isinstance(result, SopsMetadata)
    if isinstance(result, SopsMetadata):
        assert result.groups and all(result.groups)
        assert result.threshold is None or isinstance(result.threshold, int)


JSON_DOCUMENTS = [json.loads(seed) for seed in FORMAT_SEEDS["json"]]


@FUZZ
@given(document=retyped(JSON_DOCUMENTS), as_yaml=st.booleans())
def test_sops_block_with_wrong_types(document: object, as_yaml: bool) -> None:
    """The metadata with a field of the wrong type (a list for a threshold, .inf, a number for a recipient)."""
    if as_yaml:
        fmt, data = "yaml", yaml.safe_dump(document, allow_unicode=True).encode()
    else:
        fmt, data = "json", json.dumps(document).encode()
    for full in (False, True):
        result = only_raises(f"read_metadata[{fmt}, retyped]", (MetadataError,),
                             lambda full=full: read_metadata(data, fmt, full))  # type: ignore[misc]
        assert result is None or isinstance(result, SopsMetadata)


# -- verify: the values, the MAC and the data key of a mutated real file -----------------------------

VERIFY_SEEDS = {name: (VECTORS / name).read_bytes() for name in
                ("yaml/nested.enc.yaml", "json/basic.enc.json", "dotenv/app.enc.env", "ini/app.enc.ini",
                 "binary/blob.enc", "shamir/three-groups.enc.yaml")}


@pytest.fixture(scope="module")
def vector_identities() -> list[object]:
    return [pyrage.x25519.Identity.from_str(line)
            for name in ("vec-admin.txt", "vec-host1.txt", "vec-host2.txt", "vec-user.txt")
            for line in (VECTORS / "identities" / name).read_text().splitlines() if line.startswith("AGE-")]


@FUZZ
@given(name=st.sampled_from(sorted(VERIFY_SEEDS)), data=st.data())
def test_verify_of_a_mutated_real_file_is_a_verdict(name: str, data: st.DataObject,
                                                    vector_identities: list[object]) -> None:
    document = data.draw(mutated([VERIFY_SEEDS[name]]))
    result = only_raises("verify_file", (), lambda: verify_file(document, detect_format(name), vector_identities))
    assert result.status in STATUSES  # type: ignore[attr-defined]
    if document != VERIFY_SEEDS[name] and result.ok:  # type: ignore[attr-defined]
        # An edit sops would also accept (layout, an unauthenticated comment or metadata field) is fine; an
        # edit of any encrypted value or of the MAC never is.
        assert b"ENC[" in document


# -- .sops.yaml -----------------------------------------------------------------------------------

RULE_SEEDS = [(VECTORS / ".sops.yaml").read_bytes(), (VECTORS / "rekey" / "before.sops.yaml").read_bytes(),
              (REPO / ".sops.yaml.example").read_bytes()]


@FUZZ
@given(document=mutated(RULE_SEEDS))
def test_sops_yaml_creation_rules(document: bytes) -> None:
    rules = only_raises("parse_rules", (InputError,), lambda: parse_rules(document))
    for rule in rules or ():  # type: ignore[attr-defined]
        assert rule.threshold is None or isinstance(rule.threshold, int)
        assert all(isinstance(key.recipient, str) for group in rule.key_groups for key in group)


@FUZZ
@given(document=retyped([yaml.safe_load(seed) for seed in RULE_SEEDS]))
def test_sops_yaml_with_wrong_types(document: object) -> None:
    data = yaml.safe_dump(document, allow_unicode=True).encode()
    only_raises("parse_rules[retyped]", (InputError,), lambda: parse_rules(data))


# -- policy files ---------------------------------------------------------------------------------

POLICY_FILES = sorted((REPO / "policies").glob("*.yaml"))


@FUZZ
@given(index=st.integers(0, len(POLICY_FILES) - 1), data=st.data())
def test_policy_files(index: int, data: st.DataObject) -> None:
    sources = [(p.name, p.read_bytes()) for p in POLICY_FILES]
    sources[index] = (sources[index][0], data.draw(mutated([sources[index][1]])))
    only_raises("load_policy", (PolicyError,), lambda: load_policy(sources))


@FUZZ
@given(index=st.integers(0, len(POLICY_FILES) - 1), data=st.data())
def test_policy_files_with_wrong_types(index: int, data: st.DataObject) -> None:
    sources = [(p.name, p.read_bytes()) for p in POLICY_FILES]
    document = data.draw(retyped([yaml.safe_load(sources[index][1])]))
    sources[index] = (sources[index][0], yaml.safe_dump(document, allow_unicode=True).encode())
    only_raises("load_policy[retyped]", (PolicyError,), lambda: load_policy(sources))


# -- age recipients and identities, ssh keys --------------------------------------------------------

IDENTITY_DIR = VECTORS / "identities"
RECIPIENT_SEEDS = [p.read_bytes().strip() for p in sorted(IDENTITY_DIR.glob("vec-*.pub")) if b"age1" in p.read_bytes()]
AGE_IDENTITY_SEEDS = [p.read_bytes() for p in sorted(IDENTITY_DIR.glob("vec-*.txt"))]
SSH_PUBLIC_SEEDS = [(IDENTITY_DIR / "vec-ssh_ed25519.pub").read_bytes()]
SSH_PRIVATE_SEEDS = [(IDENTITY_DIR / "vec-ssh_ed25519").read_bytes()]


@FUZZ
@given(text=mutated(RECIPIENT_SEEDS + SSH_PUBLIC_SEEDS))
def test_age_recipients(text: bytes) -> None:
    only_raises("parse_age_recipient", (KeyFormatError,), lambda: agekeys.parse_age_recipient(_text(text)))


@FUZZ
@given(text=mutated([line for seed in AGE_IDENTITY_SEEDS for line in seed.splitlines() if line.startswith(b"AGE")]))
def test_age_identity_strings(text: bytes) -> None:
    only_raises("identity_to_recipient", (KeyFormatError,), lambda: agekeys.identity_to_recipient(_text(text)))


@FUZZ
@given(data=mutated(AGE_IDENTITY_SEEDS + SSH_PRIVATE_SEEDS))
def test_age_identity_files(data: bytes) -> None:
    collector = ids._Collector({})
    found = only_raises("parse_identity_text", (ids._SourceError,), lambda: ids.parse_identity_text(data, collector))
    for identity, recipient in found or ():  # type: ignore[attr-defined]
        assert recipient is None or agekeys.validate_age_recipient(recipient) == recipient
        assert str(identity.to_public()) == recipient


@FUZZ
@given(text=mutated(SSH_PUBLIC_SEEDS + RECIPIENT_SEEDS))
def test_ssh_public_keys(text: bytes) -> None:
    key = only_raises("parse_ssh_public_key", (KeyFormatError,), lambda: agekeys.parse_ssh_public_key(_text(text)))
    if key is not None:
        only_raises("ssh_to_age_recipient", (KeyFormatError,), lambda: agekeys.ssh_to_age_recipient(key))


@FUZZ
@given(data=mutated(SSH_PRIVATE_SEEDS + AGE_IDENTITY_SEEDS))
def test_ssh_private_keys(data: bytes) -> None:
    only_raises("ssh_private_to_age_identity", (KeyFormatError,), lambda: agekeys.ssh_private_to_age_identity(data))
    only_raises("parse_ssh_identity", (ids._SourceError,), lambda: ids.parse_ssh_identity(data))


# -- armored age stanzas and ENC[] values ----------------------------------------------------------


def _enc_blobs() -> list[bytes]:
    metadata = read_metadata((VECTORS / "json/basic.enc.json").read_bytes(), "json", full=True)
    assert metadata is not None
    return [entry.enc.encode() for group in metadata.groups for entry in group if entry.enc]


ARMOR_SEEDS = _enc_blobs()


@FUZZ
@given(text=mutated(ARMOR_SEEDS))
def test_armored_age_stanzas(text: bytes, vector_identities: list[object]) -> None:
    enc = _text(text)
    only_raises("dearmor", (agewrap.ArmorError,), lambda: agewrap.dearmor(enc))
    payload = only_raises("unwrap", (agewrap.ArmorError, agewrap.UnwrapError),
                          lambda: agewrap.unwrap(enc, vector_identities))
    assert payload is None or isinstance(payload, bytes)


ENC_SEEDS = [token.split(b'"')[0].split(b"\n")[0] for seed in _seeds("*/*.enc.*")
             for token in seed.split(b"ENC[")[1:]]
ENC_SEEDS = [b"ENC[" + token for token in ENC_SEEDS[:40]]


@FUZZ
@given(text=mutated(ENC_SEEDS), key=st.binary(min_size=32, max_size=32), aad=st.text(max_size=20))
def test_enc_values(text: bytes, key: bytes, aad: str) -> None:
    enc = only_raises("parse_enc", (ValueError,), lambda: v.parse_enc(_text(text)))
    if enc is not None:
        only_raises("decrypt_value", (v.DecryptError,), lambda: v.decrypt_value(key, enc, aad))  # type: ignore[arg-type]


def test_the_seeds_are_real_and_the_property_has_teeth() -> None:
    """Every target gets real seeds, and only_raises lets a foreign exception through."""
    for seeds in (*FORMAT_SEEDS.values(), RULE_SEEDS, RECIPIENT_SEEDS, AGE_IDENTITY_SEEDS, SSH_PUBLIC_SEEDS,
                  SSH_PRIVATE_SEEDS, ARMOR_SEEDS, ENC_SEEDS):
        assert seeds and all(seeds)
    assert len(ENC_SEEDS) >= 20 and len(POLICY_FILES) >= 3
    for fmt, seeds in FORMAT_SEEDS.items():
        assert all(isinstance(read_metadata(seed, fmt, True), SopsMetadata) for seed in seeds if fmt != "json"
                   or b'"sops"' in seed)
    with pytest.raises(OverflowError):
        only_raises("probe", (ValueError,), lambda: int(float("inf")))
    assert only_raises("probe", (ValueError,), lambda: int("x")) is None
    assert Path(IDENTITY_DIR).is_dir()


# -- what the fuzzing found: each was a traceback (exit 4), a hang or a two-line error --------------

_BLOCK = b'"mac": "x", "version": "3.11.0", "age": [{"recipient": "age1x", "enc": "e"}]'
METADATA_REGRESSIONS = [
    ("json", b'{"sops": {' + _BLOCK + b', "shamir_threshold": 1e999}}'),  # OverflowError
    ("yaml", b"sops:\n  mac: x\n  version: '1'\n  age: [{recipient: a, enc: e}]\n  shamir_threshold: .inf\n"),
    ("yaml", b"sops:\n    age:\n        - recipient: \xe1ge1x\n          enc: e\n    mac: x\n    version: '1'\n"),
    ("dotenv", b"sops_version=1\nsops_mac=x\nsops_age__list_999999999999__map_recipient=a\n"),  # a 1e12 list
    ("dotenv", "sops_version=1\nsops_mac=x\nsops_age__list_\u00b2__map_recipient=a\n".encode()),  # int('²')
    ("ini", b"[sops]\nversion=1\nmac=x\nage__list_0__map_recipient=a\nage__list_0__map_recipient__map_x=b\n"),
]


@pytest.mark.parametrize(("fmt", "data"), METADATA_REGRESSIONS)
def test_metadata_regressions_are_metadata_errors(fmt: str, data: bytes) -> None:
    for full in (False, True):
        with pytest.raises(MetadataError) as caught:
            read_metadata(data, fmt, full)
        assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("document", [
    b"creation_rules:\n- shamir_threshold: abc\n  age: age1x\n",
    b"creation_rules:\n- shamir_threshold: .inf\n  age: age1x\n",
    b"creation_rules:\n- shamir_threshold: [2]\n  age: age1x\n",
    b"creation_rules:\n- key_groups: 5\n",
    b"creation_rules:\n- key_groups: [{kms: 5}]\n",
    b"creation_rules:\n- key_groups: [{merge: 5}]\n",
])
def test_sops_yaml_regressions_are_input_errors(document: bytes) -> None:
    with pytest.raises(InputError):
        parse_rules(document)


def test_a_merge_alias_bomb_in_sops_yaml_is_refused_quickly() -> None:
    """Fourteen lines that merge a key group into itself 4^14 times: it used to run for hours."""
    import time

    lines = ["g0: &g0 {age: [age1x]}"]
    lines += [f"g{i}: &g{i} {{merge: [*g{i - 1}, *g{i - 1}, *g{i - 1}, *g{i - 1}]}}" for i in range(1, 15)]
    document = ("\n".join(lines) + "\ncreation_rules:\n" + "- key_groups: [*g14]\n" * 50).encode()
    start = time.monotonic()
    with pytest.raises(InputError, match="alias bomb"):
        parse_rules(document)
    assert time.monotonic() - start < 2


def test_an_age_error_of_two_lines_is_one_line(vector_identities: list[object]) -> None:
    """age says "Unknown age format.\\nHave you tried upgrading…": the message must stay one line."""
    blob = agewrap.dearmor(ARMOR_SEEDS[0].decode())
    broken = agewrap.armor(blob.replace(b"age-encryption.org/v1", b"age-encryption.org/v9", 1))
    with pytest.raises(agewrap.UnwrapError) as caught:
        agewrap.unwrap(broken, vector_identities)
    assert len(str(caught.value).splitlines()) == 1
