"""agekeys: recipient checks, identities, and ssh-ed25519 → age against the sops-made vectors."""

from __future__ import annotations

import ast
import base64
import hashlib
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl.crypto import agekeys, bech32
from sopsctl.crypto.agekeys import RecipientKind
from sopsctl.errors import KeyFormatError

P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
YUBIKEY_RECIPIENT = "age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t"


def _identity_line(path: Path) -> str:
    return next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1"))


def _ssh_line(raw_point: bytes, key_type: bytes = b"ssh-ed25519", comment: str = "") -> str:
    """An ssh public key line around an arbitrary 32-byte point (which may be off the curve)."""
    blob = len(key_type).to_bytes(4, "big") + key_type + len(raw_point).to_bytes(4, "big") + raw_point
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}".strip()


def _ed25519_pair(seed: bytes) -> tuple[str, bytes]:
    """(public line, OpenSSH private key) for a given seed."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    public_line = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return public_line, pem


def _is_square(value: int) -> bool:
    return pow(value, (P - 1) // 2, P) in (0, 1)


def _off_curve_point() -> bytes:
    """The smallest y whose x² = (y²−1)/(d·y²+1) has no square root: not an ed25519 point."""
    for y in range(2, 1000):
        x_squared = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
        if not _is_square(x_squared):
            return y.to_bytes(32, "little")
    raise AssertionError("no off-curve y below 1000")


# --- the sops-made vectors ---------------------------------------------------------------------


def test_vector_ssh_public_key_converts_to_its_recipient(vectors: Path) -> None:
    identities = vectors / "identities"
    line = (identities / "vec-ssh_ed25519.pub").read_text()
    expected = (identities / "vec-ssh-as-age.pub").read_text().strip()
    assert expected == "age124wpsqwkwep99vcwsqtptkn3e5uvfsn7gpxprmau8vs6qhl549dsj5gvr7"  # the README's
    assert agekeys.ssh_to_age_recipient(line) == expected
    parsed = agekeys.parse_ssh_public_key(line)
    assert parsed.key == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINE2jIPaKGNZfTq0P/dvmDWgsCRNhwmSIiF0ObZpIqO/"
    assert parsed.comment == "vec-ssh@sopsctl-test"
    assert len(parsed.raw) == 32
    assert agekeys.ssh_to_age_recipient(parsed) == expected


def test_vector_ssh_private_key_converts_to_its_identity(vectors: Path) -> None:
    identities = vectors / "identities"
    identity = agekeys.ssh_private_to_age_identity((identities / "vec-ssh_ed25519").read_bytes())
    assert identity == _identity_line(identities / "vec-ssh-as-age.txt")
    assert len(identity) == 74
    assert agekeys.identity_to_recipient(identity) == (identities / "vec-ssh-as-age.pub").read_text().strip()


@pytest.mark.parametrize("name", ["vec-admin", "vec-user", "vec-host1", "vec-host2", "vec-ssh-as-age"])
def test_vector_identities_give_their_recipients(vectors: Path, name: str) -> None:
    identities = vectors / "identities"
    recipient = (identities / f"{name}.pub").read_text().strip()
    assert agekeys.identity_to_recipient(_identity_line(identities / f"{name}.txt")) == recipient
    assert agekeys.validate_age_recipient(recipient) == recipient
    assert agekeys.recipient_kind(recipient) is RecipientKind.X25519


# --- recipients ---------------------------------------------------------------------------------


def test_recipient_is_normalized() -> None:
    recipient = "age192jp2xpg3gnlgr89mrt2pxv8g97dcgaz9zee52czdufnrf6trajqgfvvzt"
    assert agekeys.validate_age_recipient(f"  {recipient}\n") == recipient
    assert agekeys.validate_age_recipient(recipient.upper()) == recipient


def test_plugin_recipients_are_accepted_with_their_name() -> None:
    parsed = agekeys.parse_age_recipient(YUBIKEY_RECIPIENT)
    assert parsed == agekeys.AgeRecipient(YUBIKEY_RECIPIENT, RecipientKind.PLUGIN, "yubikey")
    # Plugin payloads have any length; only the checksum is checked.
    post_quantum = bech32.encode("age1pq", bytes(range(256)) * 5)
    assert agekeys.recipient_kind(post_quantum) is RecipientKind.PLUGIN
    assert agekeys.parse_age_recipient(post_quantum).plugin == "pq"


def test_plugin_recipient_with_bad_checksum_is_rejected() -> None:
    corrupted = YUBIKEY_RECIPIENT[:-1] + ("q" if YUBIKEY_RECIPIENT[-1] != "q" else "p")
    with pytest.raises(KeyFormatError, match="checksum"):
        agekeys.validate_age_recipient(corrupted)


@pytest.mark.parametrize("hrp", ["age1", "age1yu!bikey"])
def test_plugin_recipient_with_bad_name_is_rejected(hrp: str) -> None:
    with pytest.raises(KeyFormatError, match="invalid plugin name"):
        agekeys.validate_age_recipient(bech32.encode(hrp, b"payload"))


@given(data=st.binary(min_size=32, max_size=32), position=st.integers(min_value=0, max_value=57),
       shift=st.integers(min_value=1, max_value=31))
def test_corrupted_recipient_checksum_is_rejected(data: bytes, position: int, shift: int) -> None:
    recipient = bech32.encode("age", data)
    assert agekeys.validate_age_recipient(recipient) == recipient
    index = 4 + position
    wrong = bech32.CHARSET[(bech32.CHARSET.index(recipient[index]) + shift) % 32]
    with pytest.raises(KeyFormatError, match=r"^age recipient '.*': bad bech32 checksum"):
        agekeys.validate_age_recipient(recipient[:index] + wrong + recipient[index + 1 :])


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_x25519_recipient_of_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(KeyFormatError, match=f"decodes to {length} bytes, an X25519 recipient has 32"):
        agekeys.validate_age_recipient(bech32.encode("age", bytes(length)))


@pytest.mark.parametrize("hrp", ["agf", "ag", "bc", "agex"])
def test_wrong_hrp_is_rejected(hrp: str) -> None:
    with pytest.raises(KeyFormatError, match=f"wrong prefix '{hrp}'"):
        agekeys.validate_age_recipient(bech32.encode(hrp, bytes(32)))


def test_mixed_case_recipient_is_rejected() -> None:
    mixed = "age192jp2xpg3gnlgr89mrt2pxv8g97dcgaz9zee52czdufnrf6trajqgfvvzT"
    with pytest.raises(KeyFormatError, match="mixed upper and lower case"):
        agekeys.validate_age_recipient(mixed)


def test_truncated_or_empty_recipients_are_rejected() -> None:
    with pytest.raises(KeyFormatError, match="checksum"):
        agekeys.validate_age_recipient("age192jp2xpg3gnlgr89mrt2pxv8g97dcgaz9zee52czdufnrf6trajqgfvv")
    with pytest.raises(KeyFormatError, match="empty"):
        agekeys.validate_age_recipient("   ")
    with pytest.raises(KeyFormatError, match="must be a string"):
        agekeys.validate_age_recipient(42)  # type: ignore[arg-type]


def test_secret_given_as_recipient_is_refused_without_echoing_it(vectors: Path) -> None:
    secret = _identity_line(vectors / "identities" / "vec-admin.txt")
    with pytest.raises(KeyFormatError, match="secret identity, not a recipient") as caught:
        agekeys.validate_age_recipient(secret)
    assert secret not in str(caught.value)
    assert secret[20:40] not in str(caught.value)


def test_ssh_key_given_as_recipient_says_so(vectors: Path) -> None:
    line = (vectors / "identities" / "vec-ssh_ed25519.pub").read_text()
    with pytest.raises(KeyFormatError, match="an ssh public key, not an age recipient"):
        agekeys.validate_age_recipient(line)


# --- identities ---------------------------------------------------------------------------------


def test_generated_identity_matches_age() -> None:
    secret, recipient = agekeys.generate_identity()
    assert secret.startswith("AGE-SECRET-KEY-1") and len(secret) == 74
    assert agekeys.validate_age_recipient(recipient) == recipient
    assert str(pyrage.x25519.Identity.from_str(secret).to_public()) == recipient
    assert agekeys.generate_identity()[0] != secret


def test_pyrage_identities_give_the_same_recipient() -> None:
    identity = pyrage.x25519.Identity.generate()
    assert agekeys.identity_to_recipient(str(identity)) == str(identity.to_public())


def test_identity_case_and_errors(vectors: Path) -> None:
    secret = _identity_line(vectors / "identities" / "vec-admin.txt")
    recipient = (vectors / "identities" / "vec-admin.pub").read_text().strip()
    assert agekeys.identity_to_recipient(secret.lower()) == recipient
    corrupted = secret[:-1] + ("Q" if secret[-1] != "Q" else "P")
    with pytest.raises(KeyFormatError, match="checksum") as caught:
        agekeys.identity_to_recipient(corrupted)
    assert corrupted[16:] not in str(caught.value)
    with pytest.raises(KeyFormatError, match="must start with AGE-SECRET-KEY-1"):
        agekeys.identity_to_recipient(recipient)
    with pytest.raises(KeyFormatError, match="plugin identity"):
        agekeys.identity_to_recipient("AGE-PLUGIN-YUBIKEY-1XYZ")
    with pytest.raises(KeyFormatError, match="decodes to 31 bytes"):
        agekeys.identity_to_recipient(bech32.encode("AGE-SECRET-KEY-", bytes(31)))


def test_identity_file_format() -> None:
    created = datetime(2026, 11, 28, 13, 39, 4, 123456, tzinfo=UTC)
    assert agekeys.format_identity_file("AGE-SECRET-KEY-1X", "age1y", created) == (
        "# created: 2026-11-28T13:39:04Z\n# public key: age1y\nAGE-SECRET-KEY-1X\n"
    )
    offset = created.astimezone(timezone(timedelta(hours=-5, minutes=-30)))
    assert agekeys.format_identity_file("S", "R", offset).startswith("# created: 2026-11-28T08:09:04-05:30\n")
    with pytest.raises(ValueError, match="time zone"):
        agekeys.format_identity_file("S", "R", datetime(2026, 1, 1))


# --- ssh public keys ----------------------------------------------------------------------------


def test_comment_known_hosts_and_blank_lines() -> None:
    line, _ = _ed25519_pair(bytes(32))
    with_comment = agekeys.parse_ssh_public_key(f"\n# host key\n{line}  root@host  (old box) \n\n")
    assert with_comment.key == line and with_comment.comment == "root@host  (old box)"
    no_comment = agekeys.parse_ssh_public_key(line)
    assert no_comment.comment == "" and no_comment.raw == with_comment.raw
    keyscan = agekeys.parse_ssh_public_key(f"host.example,10.0.0.1 {line}")
    assert keyscan.key == line and keyscan.comment == ""


@pytest.mark.parametrize("key_type", ["ssh-rsa", "ecdsa-sha2-nistp256", "sk-ssh-ed25519@openssh.com", "ssh-dss"])
def test_other_key_types_are_refused(key_type: str) -> None:
    with pytest.raises(KeyFormatError, match=f"key type {key_type}; only ssh-ed25519 host keys convert to age"):
        agekeys.parse_ssh_public_key(f"{key_type} AAAAB3NzaC1yc2EAAAADAQABAAABAQC0uGPS4dDYJxoBeCJw user@host")


def test_real_rsa_public_key_is_refused() -> None:
    public = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    with pytest.raises(KeyFormatError, match="only ssh-ed25519"):
        agekeys.ssh_to_age_recipient(line)


def test_off_curve_point_is_refused() -> None:
    with pytest.raises(KeyFormatError, match="not a point on the ed25519 curve"):
        agekeys.parse_ssh_public_key(_ssh_line(_off_curve_point()))


@given(y=st.integers(min_value=2, max_value=P - 2), sign=st.booleans())
@settings(max_examples=200)
def test_every_point_is_accepted_exactly_when_it_is_on_the_curve(y: int, sign: bool) -> None:
    raw = (y | sign << 255).to_bytes(32, "little")
    on_curve = _is_square((y * y - 1) * pow(D * y * y + 1, -1, P) % P)
    if on_curve:
        recipient = agekeys.ssh_to_age_recipient(_ssh_line(raw))
        # u = (1 + y) / (1 − y), little-endian: recomputed here from the formula in the spec.
        u = (1 + y) * pow(1 - y, -1, P) % P
        assert bech32.decode(recipient) == ("age", u.to_bytes(32, "little"))
    else:
        with pytest.raises(KeyFormatError, match="not a point on the ed25519 curve"):
            agekeys.ssh_to_age_recipient(_ssh_line(raw))


@pytest.mark.parametrize("y", [P, P + 1, 2**255 - 1])
def test_non_canonical_y_is_refused(y: int) -> None:
    with pytest.raises(KeyFormatError, match="not a canonical ed25519 point"):
        agekeys.parse_ssh_public_key(_ssh_line(y.to_bytes(32, "little")))


@pytest.mark.parametrize("y", [1, P - 1])
def test_degenerate_points_are_refused(y: int) -> None:
    with pytest.raises(KeyFormatError, match="degenerate"):
        agekeys.parse_ssh_public_key(_ssh_line(y.to_bytes(32, "little")))


def test_malformed_blobs_are_refused(vectors: Path) -> None:
    good = (vectors / "identities" / "vec-ssh_ed25519.pub").read_text().split()[1]
    raw = agekeys.parse_ssh_public_key(f"ssh-ed25519 {good}").raw
    cases = {
        "ssh-ed25519 " + good[:-4]: "truncated",
        "ssh-ed25519 " + good[:-1]: "not valid base64",
        "ssh-ed25519 " + good[:10] + "!" + good[11:]: "not valid base64",
        _ssh_line(raw, key_type=b"ssh-rsa"): "the key data is a 'ssh-rsa' key",
        _ssh_line(raw[:31]): "the ed25519 point is 31 bytes",
        "ssh-ed25519 " + base64.b64encode(base64.b64decode(good) + b"\0\0\0").decode(): "extra bytes",
        "ssh-ed25519": "base64 key after ssh-ed25519 is missing",
        "AAAAC3NzaC1lZDI1NTE5AAAAINE2 foo": "must start with a key type",
        "": "empty",
        "# just a comment\n": "empty",
        f"ssh-ed25519 {good}\nssh-ed25519 {good}": "expected one key line, found 2",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----": "this is a private key",
    }
    for text, reason in cases.items():
        with pytest.raises(KeyFormatError, match=reason):
            agekeys.parse_ssh_public_key(text)


# --- ssh private keys ---------------------------------------------------------------------------


@given(seed=st.binary(min_size=32, max_size=32))
@settings(max_examples=50, deadline=None)
def test_private_and_public_conversions_agree(seed: bytes) -> None:
    public_line, pem = _ed25519_pair(seed)
    identity = agekeys.ssh_private_to_age_identity(pem)
    # Unclamped, as ssh-to-age writes it: the first half of SHA-512(seed), verbatim.
    assert bech32.decode(identity) == ("age-secret-key-", hashlib.sha512(seed).digest()[:32])
    assert identity == identity.upper()
    # Two independent routes to the recipient: Edwards → Montgomery map, and X25519 scalar × base.
    assert agekeys.identity_to_recipient(identity) == agekeys.ssh_to_age_recipient(public_line)


def test_converted_pair_encrypts_and_decrypts_with_age() -> None:
    public_line, pem = _ed25519_pair(bytes(range(32)))
    recipient = pyrage.x25519.Recipient.from_str(agekeys.ssh_to_age_recipient(public_line))
    identity = pyrage.x25519.Identity.from_str(agekeys.ssh_private_to_age_identity(pem))
    assert pyrage.decrypt(pyrage.encrypt(b"hello", [recipient]), [identity]) == b"hello"
    other = pyrage.x25519.Identity.from_str(agekeys.generate_identity()[0])
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(pyrage.encrypt(b"hello", [recipient]), [other])


def test_pkcs8_ed25519_key_converts_like_openssh() -> None:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pkcs8 = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _, openssh = _ed25519_pair(bytes(range(32)))
    assert agekeys.ssh_private_to_age_identity(pkcs8) == agekeys.ssh_private_to_age_identity(openssh)
    assert agekeys.ssh_private_to_age_identity(openssh.decode()) == agekeys.ssh_private_to_age_identity(openssh)


def test_passphrase_protected_key_says_how_to_decrypt(tmp_path: Path, ssh_keygen: str) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(key)], check=True)
    with pytest.raises(KeyFormatError, match=r"passphrase-protected.*ssh-keygen -p"):
        agekeys.ssh_private_to_age_identity(key.read_bytes())


@pytest.mark.parametrize(
    ("private", "kind"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "ssh-rsa"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ecdsa"),
    ],
)
def test_other_private_key_types_are_refused(private, kind: str) -> None:  # type: ignore[no-untyped-def]
    pem = private().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    with pytest.raises(KeyFormatError, match=f"key type {kind}; only ed25519 keys convert to age"):
        agekeys.ssh_private_to_age_identity(pem)


def test_bad_private_key_inputs(vectors: Path) -> None:
    pem = (vectors / "identities" / "vec-ssh_ed25519").read_bytes()
    public = (vectors / "identities" / "vec-ssh_ed25519.pub").read_bytes()
    lines = pem.splitlines()
    corrupted = b"\n".join([lines[0], lines[1][:20] + b"A" * 50, *lines[2:]])
    cases = {
        b"": "empty",
        public: "not a private key",
        corrupted: "malformed or corrupted",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n": "malformed or corrupted",
    }
    for data, reason in cases.items():
        with pytest.raises(KeyFormatError, match=reason) as caught:
            agekeys.ssh_private_to_age_identity(data)
        assert "AAAA" not in str(caught.value)  # never echoes key material


# --- purity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [agekeys, bech32])
def test_pure_modules_do_no_io(module: object) -> None:
    tree = ast.parse(Path(module.__file__).read_text())  # type: ignore[attr-defined]
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"os", "io", "pathlib", "subprocess", "shutil", "sys", "tempfile"}
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"open", "print", "input"}
