"""Interop: generated YAML and JSON documents that the real sops encrypted verify with sopsctl, for every option."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pyrage
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopsctl import tree
from sopsctl import values as v
from sopsctl.datakey import recover
from sopsctl.formats import read_metadata
from sopsctl.verify import verify_file
from tests.test_tree_verify import TAMPERING, _tamper, identities

pytestmark = pytest.mark.interop

IDENTITY = pyrage.x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
# Creation-rule options, each with keys below that it selects.
OPTIONS = [
    {}, {"unencrypted_suffix": "_u"}, {"encrypted_suffix": "_secret"}, {"unencrypted_regex": "^a"},
    {"encrypted_regex": "^(data|x)$"}, {"encrypted_suffix": "_secret", "mac_only_encrypted": True},
    {"mac_only_encrypted": True},
]
# Keys sops accepts (go-yaml must read them as strings): letters, plus names the options above select.
KEYS = st.one_of(
    st.sampled_from(["a", "data", "x", "b_u", "c_secret", "pw_unencrypted", "nested", "ключ", "clé"]),
    st.text(alphabet="abcdefgxz_éü", min_size=1, max_size=6),
).filter(lambda k: k != "sops")
SCALARS = st.one_of(
    st.text(max_size=12),  # unicode, empty strings included
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != 0 or str(f) == "0.0"),  # no -0.0
    st.booleans(),
    st.none(),
)
TREES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=3)
                     | st.dictionaries(KEYS, children, max_size=3), max_leaves=12)
DOCUMENTS = st.dictionaries(KEYS, TREES, min_size=1, max_size=5)
COMMENTS = st.lists(st.text(alphabet="abc é#", max_size=10), max_size=2)


def _sops(sops: Path, command: str, name: str, content: bytes, options: dict) -> subprocess.CompletedProcess[bytes]:
    """`sops COMMAND NAME` in a scratch directory whose .sops.yaml rule carries `options`."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        rule = {"path_regex": ".*", "age": RECIPIENT, **options}
        (root / ".sops.yaml").write_text(yaml.safe_dump({"creation_rules": [rule]}))
        (root / name).write_bytes(content)
        env = {k: val for k, val in os.environ.items() if not k.startswith("SOPS_")}
        env.update(HOME=str(root), XDG_CONFIG_HOME=str(root / ".config"), SOPS_AGE_KEY_FILE="/dev/null",
                   SOPS_AGE_KEY=str(IDENTITY))
        return subprocess.run([str(sops), command, name], cwd=root, env=env, capture_output=True,
                              timeout=60, check=False)


def _encrypt(sops: Path, name: str, content: bytes, options: dict) -> bytes:
    result = _sops(sops, "encrypt", name, content, options)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def _check(encrypted: bytes, fmt: str, options: dict) -> None:
    result = verify_file(encrypted, fmt, [IDENTITY])
    assert result.status == "ok", result.message
    metadata = read_metadata(encrypted, fmt, full=True)
    assert metadata is not None
    assert set(options) <= {name for name, _ in metadata.options}  # the options really reached the file


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(DOCUMENTS, min_size=1, max_size=2), st.sampled_from(OPTIONS), COMMENTS)
def test_yaml_encrypted_by_sops_verifies(sops_bin: Path, documents: list[dict], options: dict,
                                          comments: list[str]) -> None:
    text = yaml.safe_dump_all(documents, allow_unicode=True, width=float("inf"), sort_keys=False)
    text = "".join(f"# {c}\n" for c in comments) + text  # comments are encrypted, never in the MAC
    _check(_encrypt(sops_bin, "doc.yaml", text.encode(), options), "yaml", options)


@SETTINGS
@given(DOCUMENTS, st.sampled_from(OPTIONS))
def test_json_encrypted_by_sops_verifies(sops_bin: Path, document: dict, options: dict) -> None:
    content = json.dumps(document, ensure_ascii=False).encode()
    _check(_encrypt(sops_bin, "doc.json", content, options), "json", options)


# Plain scalars whose go-yaml typing differs from YAML 1.1 / PyYAML, and tags: typed as sops types them.
TRICKY = ["0x1F", "0X1f", "012", "0o17", "1_000", "+1", "-0x10", "0b101", "-0b101", "yes", "on", "y", "n", "off",
          "True", "TRUE", "tRUE", ".inf", "-.Inf", ".nan", "1e3", "1.", ".5", "+.5", "+12e3", "09", "00", "-0", "1e400",
          "1e-400", "99999999999999999999", "0.0000001", "1e20", "1.0", "0.1", "1_0.5", "0x_1F", "1__0", "_1", "0o",
          "0x", "0b", "9223372036854775807", "-9223372036854775808", "2024-01-02", "2024-1-2", "2024-01-02 3:4:5",
          "2001-12-14t21:59:43.10-05:00", "2024-01-02T10:00:00+00:00", "2024-01-02T10:00:00.123456789123Z",
          "2024-02-30", "1:20", "~", "null", "Null", "", "'quoted'", '"1.0"', "!!float 1", "!!str 12", "! 12",
          '! "12"', '!!int "12"', "!!binary aGk=", "!custom x", "|\n  block\n"]


def test_go_yaml_typing_matches_sops(sops_bin: Path) -> None:
    """Each scalar twice, encrypted and `_unencrypted`: sops's ENC type and plaintext equal sopsctl's reading."""
    text = "".join(f"k{i}: {s}\nk{i}_unencrypted: {s}\n" for i, s in enumerate(TRICKY)).encode()
    encrypted = _encrypt(sops_bin, "doc.yaml", text, {})
    _check(encrypted, "yaml", {})
    metadata = read_metadata(encrypted, "yaml", full=True)
    assert metadata is not None
    rules = tree.Rules.from_options(metadata.options)
    key = recover(metadata, [IDENTITY]).key
    plain = {leaf.aad: leaf for leaf in tree.leaves(text, "yaml", rules)}
    stored = {leaf.aad: leaf for leaf in tree.leaves(encrypted, "yaml", rules)}
    assert stored.keys() == plain.keys() and len(plain) > 2 * len(TRICKY) - 12  # the nulls are skipped
    for aad, leaf in stored.items():
        if not leaf.encrypted:
            assert v.to_bytes(leaf.value) == v.to_bytes(plain[aad].value), aad
        elif leaf.value:
            assert leaf.type == v.value_type(plain[aad].value), aad
            decrypted = v.decrypt_value(key, v.parse_enc(leaf.value), aad)  # type: ignore[arg-type]
            assert v.canonical_bytes(decrypted, leaf.type) == v.to_bytes(plain[aad].value), aad


def test_where_sops_fails_on_its_own_file_verify_agrees(sops_bin: Path) -> None:
    """A clear -0.0 is hashed as float "-0" but written back as `-0`, which go-yaml reads as int 0."""
    encrypted = _encrypt(sops_bin, "doc.yaml", b"a: 1\nz_unencrypted: -0.0\n", {})
    assert _sops(sops_bin, "decrypt", "doc.yaml", encrypted, {}).returncode == 51  # MAC mismatch
    assert verify_file(encrypted, "yaml", [IDENTITY]).status == "mac-mismatch"


COMMENTED = {
    "dotenv": "# nocrypt\nA=1\nB=2\n# other\n# nocrypt too\nC=3\n#crypt\nD=4\nE=5\n# crypt here\n# more\nF=6\n",
    "ini": "; nocrypt\n[s]\n; nocrypt k\na = 1\nb = 2 ; nocrypt inline\nc = 3\n; crypt\nd = 4\ne = 5\n[t]\nx = 1\n",
    "yaml": "# nocrypt\na: 1\nb: 2\nm:\n  # crypt\n  c: 3\n  d: [1, 2]\nl:\n  - 1\n  # nocrypt\n  - 2\n  - 3\n",
}


@pytest.mark.parametrize("option", ["unencrypted_comment_regex", "encrypted_comment_regex"])
@pytest.mark.parametrize("fmt", sorted(COMMENTED))
def test_comment_regexes(sops_bin: Path, fmt: str, option: str) -> None:
    options = {option: "crypt" if option.startswith("encrypted") else "nocrypt"}
    text = COMMENTED[fmt].encode()
    encrypted = _encrypt(sops_bin, {"dotenv": "d.env", "ini": "d.ini", "yaml": "d.yaml"}[fmt], text, options)
    _check(encrypted, fmt, options)
    rules = tree.Rules.from_options(options.items())
    chosen = [(leaf.aad, leaf.encrypted) for leaf in tree.leaves(encrypted, fmt, rules)]
    assert {flag for _, flag in chosen} == {True, False}
    if fmt != "yaml":  # dotenv and INI comments are read: the rules alone pick what sops encrypted
        assert [(leaf.aad, leaf.encrypted) for leaf in tree.leaves(text, fmt, rules)] == chosen


SOPS_EXIT = {"ok": 0, "corrupt-value": 25, "mac-mismatch": 51}


@pytest.mark.parametrize(("name", "how", "status"), [case[:3] for case in TAMPERING])
def test_tampering_verdicts_agree_with_sops(sops_bin: Path, vectors: Path, name: str, how: str, status: str) -> None:
    """Each tampered vector: `sops decrypt` fails with the exit code that matches verify's status."""
    text = _tamper(vectors, name, how).encode()
    fmt = {"yaml": "yaml", "json": "json", "env": "dotenv", "ini": "ini"}.get(name.rsplit(".", 1)[-1], "binary")
    assert verify_file(text, fmt, identities(vectors, "vec-admin.txt")).status == status
    env = {k: val for k, val in os.environ.items() if not k.startswith("SOPS_")}
    env.update(SOPS_AGE_KEY_FILE=str(vectors / "identities" / "vec-admin.txt"))
    result = subprocess.run([str(sops_bin), "decrypt", "--input-type", fmt, "/dev/stdin"], input=text, env=env,
                            capture_output=True, timeout=60, check=False)
    # A key entry wrapping another key: sops unwraps it, then fails on the first value.
    assert result.returncode == SOPS_EXIT.get(status, 25), result.stderr.decode(errors="replace")
