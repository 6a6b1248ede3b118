"""agewrap: the armor sops stores, round trips for every recipient form, plugins, and the real sops reading our blobs."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl.crypto import agewrap, bech32
from sopsctl.errors import KeyFormatError, SopsctlError
from sopsctl.formats import metadata_from_mapping

# A fake age plugin "test" for these tests only: it "wraps" by storing the file key in the
# clear in its stanza, so it protects nothing. It speaks just enough of recipient-v1/identity-v1.
FAKE_PLUGIN = r'''
import base64, sys

def read_command(stream):
    header = stream.readline()
    if not header:
        return None
    words = header.rstrip("\n").split(" ")
    assert words[0] == "->", header
    body = []
    while True:
        line = stream.readline().rstrip("\n")
        body.append(line)
        if len(line) < 64:
            break
    text = "".join(body)
    return words[1], words[2:], base64.b64decode(text + "=" * (-len(text) % 4))

def send(stream, name, args, body):
    text = base64.b64encode(body).decode().rstrip("=")
    lines = [text[i:i + 64] for i in range(0, len(text), 64)] or [""]
    if len(lines[-1]) == 64:
        lines.append("")
    stream.write("-> " + " ".join([name, *args]) + "\n" + "\n".join(lines) + "\n")
    stream.flush()

def main():
    mode = sys.argv[1].split("=", 1)[1]
    commands = []
    while True:
        command = read_command(sys.stdin)
        if command is None or command[0] == "done":
            break
        commands.append(command)
    for name, args, body in commands:
        if mode == "recipient-v1" and name == "wrap-file-key":
            send(sys.stdout, "recipient-stanza", ["0", "test"], body)
            assert read_command(sys.stdin)[0] == "ok"
        if mode == "identity-v1" and name == "recipient-stanza" and args[1] == "test":
            send(sys.stdout, "file-key", [args[0]], body)
            assert read_command(sys.stdin)[0] == "ok"
    send(sys.stdout, "done", [], b"")

main()
'''
TEST_PLUGIN_RECIPIENT = bech32.encode("age1test", b"\x01\x02\x03\x04")
TEST_PLUGIN_IDENTITY = bech32.encode("AGE-PLUGIN-TEST-", b"\x05\x06\x07\x08")


def _identity_text(vectors: Path, name: str) -> str:
    text = (vectors / "identities" / f"vec-{name}.txt").read_text()
    return next(line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-1"))


def _identity(vectors: Path, name: str):
    return pyrage.x25519.Identity.from_str(_identity_text(vectors, name))


def _recipient(vectors: Path, name: str) -> str:
    return (vectors / "identities" / f"vec-{name}.pub").read_text().strip()


def _stanza_types(enc: str) -> list[str]:
    header = agewrap.dearmor(enc).split(b"\n---", 1)[0].decode()
    return [line.split()[1] for line in header.splitlines() if line.startswith("-> ")]


@pytest.fixture
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "fake_plugin.py"
    script.write_text(FAKE_PLUGIN)
    shim = bindir / "age-plugin-test"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bindir


# --- armor ------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(payload=st.binary(min_size=0, max_size=300))
def test_armor_layout_is_sops_s(payload: bytes) -> None:
    text = agewrap.armor(payload)
    lines = text.split("\n")
    assert lines[0] == "-----BEGIN AGE ENCRYPTED FILE-----"
    assert lines[-2:] == ["-----END AGE ENCRYPTED FILE-----", ""]  # a final newline, nothing after
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1])
    assert not body or 0 < len(body[-1]) <= 64
    assert "\r" not in text
    assert base64.b64decode("".join(body)) == payload
    if payload:
        assert agewrap.dearmor(text) == payload


@pytest.mark.parametrize("size", [32, 33])
def test_wrap_gives_one_recipient_armored_like_pyrage(size: int, vectors: Path) -> None:
    payload = os.urandom(size)
    enc = agewrap.wrap(payload, _recipient(vectors, "host2"))
    assert enc.startswith("-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert enc.endswith("\n-----END AGE ENCRYPTED FILE-----\n")
    assert all(len(line) <= 64 for line in enc.splitlines())
    binary = agewrap.dearmor(enc)
    assert binary.startswith(b"age-encryption.org/v1\n")
    assert [t for t in _stanza_types(enc) if t == "X25519"] == ["X25519"]
    # the payload section: 16-byte nonce + ChaCha20-Poly1305 (payload + 16-byte tag)
    assert len(binary.split(b"\n---", 1)[1].split(b"\n", 1)[1]) == 16 + size + 16
    # pyrage's own armor has the same layout: our re-armoring is the identity on it
    theirs = pyrage.encrypt(payload, [pyrage.x25519.Recipient.from_str(_recipient(vectors, "host2"))],
                            armored=True).decode()
    assert agewrap.armor(agewrap.dearmor(theirs)) == theirs
    assert agewrap.unwrap(enc, [_identity(vectors, "host2")]) == payload


def test_unwrap_reads_what_sops_wrote(vectors: Path) -> None:
    document = yaml.safe_load((vectors / "yaml" / "nested.enc.yaml").read_text())
    enc = document["sops"]["age"][0]["enc"]
    key = agewrap.unwrap(enc, [_identity(vectors, "admin")])
    assert key is not None and len(key) == 32
    assert agewrap.unwrap(enc, [_identity(vectors, "host1")]) is None  # host1 has its own entry
    assert agewrap.unwrap(enc, []) is None
    assert agewrap.unwrap(enc, None) is None  # a dry run has no identities at all
    # CRLF and YAML-block indentation are tolerated, as age's armor reader does
    assert agewrap.unwrap(enc.replace("\n", "\r\n"), [_identity(vectors, "admin")]) == key
    indented = "\n".join("    " + line for line in enc.splitlines()) + "\n"
    assert agewrap.unwrap(indented, [_identity(vectors, "admin")]) == key


# --- round trips for every recipient form --------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(payload=st.binary(min_size=1, max_size=64))
def test_x25519_round_trip(payload: bytes) -> None:
    identity = pyrage.x25519.Identity.generate()
    other = pyrage.x25519.Identity.generate()
    enc = agewrap.wrap(payload, str(identity.to_public()))
    assert agewrap.unwrap(enc, [other, identity]) == payload
    assert agewrap.unwrap(enc, [other]) is None


def test_ssh_ed25519_round_trip_with_the_vectors_key(vectors: Path) -> None:
    public = (vectors / "identities" / "vec-ssh_ed25519.pub").read_text().strip()
    assert len(public.split()) == 3  # with its comment, as sops stores it
    private = pyrage.ssh.Identity.from_buffer((vectors / "identities" / "vec-ssh_ed25519").read_bytes())
    payload = os.urandom(32)
    enc = agewrap.wrap(payload, public)
    assert "ssh-ed25519" in _stanza_types(enc)
    assert agewrap.unwrap(enc, [private]) == payload
    # the ssh-to-age twin is a different recipient: its identity does not open an ssh stanza
    assert agewrap.unwrap(enc, [_identity(vectors, "ssh-as-age")]) is None
    # without the comment it is the same key
    assert agewrap.unwrap(agewrap.wrap(payload, " ".join(public.split()[:2])), [private]) == payload


def test_ssh_rsa_round_trip() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode() + " ops@example"
    payload = os.urandom(33)
    enc = agewrap.wrap(payload, public)
    assert "ssh-rsa" in _stanza_types(enc)
    assert agewrap.unwrap(enc, [pyrage.ssh.Identity.from_buffer(pem)]) == payload


@pytest.mark.parametrize(
    "recipient",
    [
        "age1notavalidkey",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNh",
        "ssh-ed25519 AAAA",
        "AGE-SECRET-KEY-1MZ0KSDTD4HLTC9PZT8M8GV4PVMLJ0JDXER65ZJHHQW3Q5VRNFLHSSDZ08A",
        "",
    ],
)
def test_wrap_rejects_bad_recipients(recipient: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        agewrap.wrap(b"k" * 32, recipient)
    assert "AGE-SECRET-KEY-1MZ0" not in str(info.value)


# --- plugins --------------------------------------------------------------------------------------


def test_plugin_recipient_without_its_plugin_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    recipient = "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t"
    with pytest.raises(agewrap.PluginMissingError) as info:
        agewrap.wrap(b"k" * 32, recipient)
    message = str(info.value)
    assert isinstance(info.value, SopsctlError)
    assert "age-plugin-yubikey" in message and "\n" not in message


def test_plugin_round_trip(fake_plugin: Path) -> None:
    payload = os.urandom(32)
    enc = agewrap.wrap(payload, TEST_PLUGIN_RECIPIENT)
    assert "test" in _stanza_types(enc)
    identity = pyrage.plugin.IdentityPluginV1(
        "test", [pyrage.plugin.Identity.from_str(TEST_PLUGIN_IDENTITY)], agewrap.PluginCallbacks())
    assert agewrap.unwrap(enc, [identity]) == payload
    assert agewrap.unwrap(enc, [pyrage.x25519.Identity.generate()]) is None


# --- malformed input --------------------------------------------------------------------------------


@pytest.fixture
def good_enc(vectors: Path) -> str:
    return agewrap.wrap(os.urandom(32), _recipient(vectors, "admin"))


def _edit_lines(enc: str, edit) -> str:
    lines = enc.split("\n")
    edit(lines)
    return "\n".join(lines)


def _join_first_body_lines(lines: list[str]) -> None:
    lines[1:3] = [lines[1] + lines[2]]


def _shorten_first_body_line(lines: list[str]) -> None:
    lines[1] = lines[1][:-4]


def _bad_character(lines: list[str]) -> None:
    lines[1] = "*" + lines[1][1:]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda enc: enc.replace("BEGIN AGE ENCRYPTED FILE", "BEGIN AGE FILE"), "does not start"),
        (lambda enc: enc.replace("-----END AGE ENCRYPTED FILE-----\n", ""), "does not end"),
        (lambda enc: _edit_lines(enc, _join_first_body_lines), "line 2: not a 64-column"),
        (lambda enc: _edit_lines(enc, _shorten_first_body_line), "line 2: not a 64-column"),
        (lambda enc: _edit_lines(enc, _bad_character), "line 2: invalid base64"),
        (lambda enc: "junk\n" + enc, "does not start"),
        (lambda enc: "", "does not start"),
    ],
    ids=["header", "footer", "long-line", "short-middle-line", "bad-base64", "leading-junk", "empty"],
)
def test_malformed_armor_raises(damage, reason: str, good_enc: str, vectors: Path) -> None:
    with pytest.raises(agewrap.ArmorError, match=reason):
        agewrap.unwrap(damage(good_enc), [_identity(vectors, "admin")])


def test_a_tampered_payload_raises_rather_than_says_no(good_enc: str, vectors: Path) -> None:
    binary = bytearray(agewrap.dearmor(good_enc))
    binary[-3] ^= 1
    with pytest.raises(agewrap.UnwrapError):
        agewrap.unwrap(agewrap.armor(bytes(binary)), [_identity(vectors, "admin")])


# --- the real sops reads what wrap writes ------------------------------------------------------------


def _sops_block_entry(recipient: str, enc: str) -> str:
    lines = [f"        - recipient: {recipient}", "          enc: |"]
    lines += [f"            {line}" for line in enc.splitlines()]
    return "\n".join(lines) + "\n"


@pytest.mark.interop
def test_sops_decrypts_with_an_ssh_entry_we_wrapped(vectors: Path, sops_bin: Path, tmp_path: Path) -> None:
    """Replace the native ssh entry of the mixed-recipients vector by our own wrap of the same key."""
    path = vectors / "ssh" / "mixed-recipients.enc.yaml"
    text = path.read_text()
    document = yaml.safe_load(text)
    metadata = metadata_from_mapping(document["sops"])
    key = agewrap.unwrap(document["sops"]["age"][0]["enc"], [_identity(vectors, "admin")])
    assert key is not None
    entries = document["sops"]["age"]
    ssh_index = next(i for i, e in enumerate(entries) if e["recipient"].startswith("ssh-ed25519"))
    old_entry = _sops_block_entry(entries[ssh_index]["recipient"], entries[ssh_index]["enc"])
    assert old_entry in text  # the emitter reproduces sops's layout byte for byte
    new_enc = agewrap.wrap(key, entries[ssh_index]["recipient"])
    assert new_enc != entries[ssh_index]["enc"]
    edited = tmp_path / "mixed.enc.yaml"
    edited.write_text(text.replace(old_entry, _sops_block_entry(entries[ssh_index]["recipient"], new_enc)))
    assert metadata_from_mapping(yaml.safe_load(edited.read_text())["sops"]).groups[0][ssh_index].enc == new_enc
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(vectors / "identities" / "vec-ssh_ed25519")}
    result = subprocess.run([str(sops_bin), "decrypt", str(edited)], env=env, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == (vectors / "ssh" / "mixed-recipients.dec.yaml").read_bytes()
    assert metadata.mac  # untouched: the MAC still verifies inside sops
