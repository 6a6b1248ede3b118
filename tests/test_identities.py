"""identities: every source sops reads, all combined, one error per broken source, and never a secret in a message."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sopsctl.crypto import agewrap, bech32
from sopsctl.identities import IdentitySet, default_keys_file, load_identities

NAMES = ("admin", "user", "host1", "host2")
SECRET_SHAPE = re.compile(r"AGE-(SECRET-KEY|PLUGIN-[A-Z0-9]+-)1[0-9A-Z]{6,}")


def _secret(vectors: Path, name: str) -> str:
    text = (vectors / "identities" / f"vec-{name}.txt").read_text()
    return next(line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-1"))


def _public(vectors: Path, name: str) -> str:
    return (vectors / "identities" / f"vec-{name}.pub").read_text().strip()


def _opens(identities: IdentitySet, recipient: str) -> bool:
    payload = os.urandom(32)
    return agewrap.unwrap(agewrap.wrap(payload, recipient), identities) == payload


def _no_secret_anywhere(result: IdentitySet, *secrets: str) -> None:
    shown = "\n".join([*result.errors, *result.sources, repr(result), result.describe()])
    assert not SECRET_SHAPE.search(shown.upper())  # the prefix alone may appear in a hint
    assert "PRIVATE KEY" not in shown
    for secret in secrets:
        for piece in (secret, secret[16:40]):
            assert piece not in shown


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def _rsa_pem() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return pem, public.decode()


def _ed25519_pem() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return pem, public.decode()


# --- each source alone ----------------------------------------------------------------------------


def test_nothing_anywhere(home: Path) -> None:
    result = load_identities({}, home, system="linux")
    assert not result and result.identities == () and result.errors == ()
    assert result.sources == ("~/.ssh/id_ed25519", "~/.ssh/id_rsa", "~/.config/sops/age/keys.txt")
    assert result.describe().startswith("no identities found in ~/.ssh/id_ed25519")


def test_sops_age_key(vectors: Path, home: Path) -> None:
    text = f"# a comment\n\n{_secret(vectors, 'admin')}\n{_secret(vectors, 'host1')}"
    result = load_identities({"SOPS_AGE_KEY": text}, home, system="linux")
    assert len(result) == 2 and result.errors == ()
    assert result.recipients() == (_public(vectors, "admin"), _public(vectors, "host1"))
    assert _opens(result, _public(vectors, "host1"))
    assert not _opens(result, _public(vectors, "host2"))
    assert result.loaded == (("SOPS_AGE_KEY", 2),)
    assert "SOPS_AGE_KEY" in result.sources


def test_sops_age_key_file_as_age_keygen_writes_it(vectors: Path, home: Path) -> None:
    result = load_identities({"SOPS_AGE_KEY_FILE": str(vectors / "identities" / "vec-user.txt")}, home,
                             system="linux")
    assert result.recipients() == (_public(vectors, "user"),)
    assert _opens(result, _public(vectors, "user"))


def test_sops_age_ssh_private_key_file(vectors: Path, home: Path) -> None:
    env = {"SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(vectors / "identities" / "vec-ssh_ed25519")}
    result = load_identities(env, home, system="linux")
    assert len(result) == 1 and result.errors == ()
    assert result.recipients() == ()  # only X25519 identities have an age1 recipient
    assert _opens(result, (vectors / "identities" / "vec-ssh_ed25519.pub").read_text().strip())
    assert not _opens(result, _public(vectors, "ssh-as-age"))


def test_home_ssh_keys_always_load(vectors: Path, home: Path) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_bytes((vectors / "identities" / "vec-ssh_ed25519").read_bytes())
    pem, rsa_public = _rsa_pem()
    (home / ".ssh" / "id_rsa").write_bytes(pem)
    # with the env variable set too: sops loads the ~/.ssh keys regardless
    env = {"SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(vectors / "identities" / "vec-ssh_ed25519")}
    result = load_identities(env, home, system="linux")
    assert len(result) == 3 and result.errors == ()
    assert [name for name, _ in result.loaded] == ["SOPS_AGE_SSH_PRIVATE_KEY_FILE", "~/.ssh/id_ed25519",
                                                   "~/.ssh/id_rsa"]
    assert _opens(result, rsa_public)
    assert _opens(result, (vectors / "identities" / "vec-ssh_ed25519.pub").read_text().strip())


def test_key_cmd(vectors: Path, home: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "dir with space" / "key.txt"
    key_file.parent.mkdir()
    key_file.write_text(_secret(vectors, "host2") + "\n")
    command = shlex.join([sys.executable, "-c", "import sys; sys.stdout.write(open(sys.argv[1]).read())",
                          str(key_file)])
    result = load_identities({"SOPS_AGE_KEY_CMD": command}, home, system="linux")
    assert result.errors == ()
    assert result.recipients() == (_public(vectors, "host2"),)


def test_key_cmd_runs_without_a_shell(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = load_identities({"SOPS_AGE_KEY_CMD": f"{sys.executable} -c pass ; touch {marker}"}, home,
                             system="linux")
    assert not marker.exists()  # `;` went to python as an argument, not to a shell
    assert result.identities == ()


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("/nonexistent/age-key-helper", "command not found"),
        (f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'", "exited with status 3"),
        (f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(5)'", "did not finish within 0.5 s"),
        ("'unbalanced", "cannot split"),
        ("   ", "empty"),
    ],
)
def test_key_cmd_failures(command: str, reason: str, home: Path) -> None:
    result = load_identities({"SOPS_AGE_KEY_CMD": command}, home, system="linux", key_cmd_timeout=0.5)
    assert result.identities == ()
    assert len(result.errors) == 1
    assert result.errors[0].startswith("SOPS_AGE_KEY_CMD: ") and reason in result.errors[0]


def test_key_cmd_never_echoes_its_output(vectors: Path, home: Path) -> None:
    secret = _secret(vectors, "admin")
    script = f"import sys; print({secret!r}); print(' ' + {secret!r}); sys.stderr.write({secret!r}); sys.exit(0)"
    result = load_identities({"SOPS_AGE_KEY_CMD": shlex.join([sys.executable, "-c", script])}, home,
                             system="linux")
    assert result.identities == () and len(result.errors) == 1
    assert "line 2" in result.errors[0]
    failing = script.replace("sys.exit(0)", "sys.exit(1)")
    result = load_identities({"SOPS_AGE_KEY_CMD": shlex.join([sys.executable, "-c", failing])}, home,
                             system="linux")
    assert len(result.errors) == 1
    _no_secret_anywhere(result, secret)


# --- the default keys.txt ----------------------------------------------------------------------------


def test_default_keys_file_paths(home: Path) -> None:
    assert default_keys_file({}, home, "linux") == home / ".config" / "sops" / "age" / "keys.txt"
    assert default_keys_file({"XDG_CONFIG_HOME": "/x"}, home, "linux") == Path("/x/sops/age/keys.txt")
    assert default_keys_file({"XDG_CONFIG_HOME": ""}, home, "linux") == home / ".config/sops/age/keys.txt"
    mac = home / "Library" / "Application Support" / "sops" / "age" / "keys.txt"
    assert default_keys_file({}, home, "darwin") == mac
    assert default_keys_file({"XDG_CONFIG_HOME": ""}, home, "darwin") == mac
    assert default_keys_file({"XDG_CONFIG_HOME": "/x"}, home, "darwin") == Path("/x/sops/age/keys.txt")
    with pytest.raises(ValueError, match="relative"):
        default_keys_file({"XDG_CONFIG_HOME": "rel"}, home, "linux")


def _write_keys(base: Path, text: str) -> Path:
    path = base / "sops" / "age" / "keys.txt"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_default_keys_file_on_linux(vectors: Path, home: Path, tmp_path: Path) -> None:
    _write_keys(home / ".config", _secret(vectors, "host1") + "\n")
    assert load_identities({}, home, system="linux").recipients() == (_public(vectors, "host1"),)
    xdg = tmp_path / "xdg"
    _write_keys(xdg, _secret(vectors, "host2") + "\n")
    result = load_identities({"XDG_CONFIG_HOME": str(xdg)}, home, system="linux")
    assert result.recipients() == (_public(vectors, "host2"),)  # XDG wins over ~/.config on Linux
    assert str(xdg / "sops" / "age" / "keys.txt") in result.sources


def test_default_keys_file_on_macos(vectors: Path, home: Path, tmp_path: Path) -> None:
    _write_keys(home / "Library" / "Application Support", _secret(vectors, "user") + "\n")
    _write_keys(home / ".config", _secret(vectors, "host1") + "\n")
    assert load_identities({}, home, system="darwin").recipients() == (_public(vectors, "user"),)
    assert load_identities({"XDG_CONFIG_HOME": ""}, home, system="darwin").recipients() == (
        _public(vectors, "user"),)
    xdg = tmp_path / "xdg"
    _write_keys(xdg, _secret(vectors, "host2") + "\n")
    assert load_identities({"XDG_CONFIG_HOME": str(xdg)}, home, system="darwin").recipients() == (
        _public(vectors, "host2"),)


def test_relative_xdg_is_reported_only_when_nothing_else_loads(vectors: Path, home: Path) -> None:
    result = load_identities({"XDG_CONFIG_HOME": "relative"}, home, system="linux")
    assert len(result.errors) == 1 and "relative" in result.errors[0]
    result = load_identities({"XDG_CONFIG_HOME": "relative", "SOPS_AGE_KEY": _secret(vectors, "admin")}, home,
                             system="linux")
    assert result.errors == () and len(result) == 1


# --- --identity files ----------------------------------------------------------------------------------


def test_extra_files_age_and_ssh_told_apart(vectors: Path, home: Path, tmp_path: Path) -> None:
    pem, rsa_public = _rsa_pem()
    rsa_file = tmp_path / "deploy_rsa"
    rsa_file.write_bytes(pem)
    extra = [vectors / "identities" / "vec-host2.txt", vectors / "identities" / "vec-ssh_ed25519", rsa_file]
    result = load_identities({}, home, extra, system="linux")
    assert result.errors == () and len(result) == 3
    assert result.recipients() == (_public(vectors, "host2"),)
    assert _opens(result, rsa_public)
    assert _opens(result, (vectors / "identities" / "vec-ssh_ed25519.pub").read_text().strip())
    assert f"--identity {rsa_file}" in result.sources


# --- all together --------------------------------------------------------------------------------------


def test_every_source_at_once_is_combined(vectors: Path, home: Path, tmp_path: Path) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_bytes((vectors / "identities" / "vec-ssh_ed25519").read_bytes())
    pem, rsa_public = _rsa_pem()
    (home / ".ssh" / "id_rsa").write_bytes(pem)
    other_pem, other_public = _ed25519_pem()
    (tmp_path / "other_ed25519").write_bytes(other_pem)
    _write_keys(home / ".config", _secret(vectors, "host2") + "\n")
    cmd_file = tmp_path / "cmd.txt"
    cmd_file.write_text(_secret(vectors, "host1") + "\n")
    extra_secret = pyrage.x25519.Identity.generate()
    extra_public = str(extra_secret.to_public())
    extra_file = tmp_path / "extra.txt"
    extra_file.write_text(f"# extra\n{extra_secret}\n")
    env = {
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(tmp_path / "other_ed25519"),
        "SOPS_AGE_KEY": _secret(vectors, "admin"),
        "SOPS_AGE_KEY_FILE": str(vectors / "identities" / "vec-user.txt"),
        "SOPS_AGE_KEY_CMD": shlex.join([sys.executable, "-c",
                                        "import sys; sys.stdout.write(open(sys.argv[1]).read())",
                                        str(cmd_file)]),
    }
    result = load_identities(env, home, [extra_file], system="linux")
    assert result.errors == ()
    assert [name for name, _ in result.loaded] == [
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE", "~/.ssh/id_ed25519", "~/.ssh/id_rsa", "SOPS_AGE_KEY",
        "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD", "~/.config/sops/age/keys.txt", f"--identity {extra_file}"]
    assert len(result) == 8
    assert set(result.recipients()) == {*(_public(vectors, n) for n in NAMES), extra_public}
    for recipient in [*(_public(vectors, n) for n in NAMES), extra_public, rsa_public, other_public,
                      (vectors / "identities" / "vec-ssh_ed25519.pub").read_text().strip()]:
        assert _opens(result, recipient), recipient
    assert result.describe().startswith("identities from SOPS_AGE_SSH_PRIVATE_KEY_FILE (1)")


def test_a_broken_source_does_not_stop_the_others(vectors: Path, home: Path, tmp_path: Path) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("not a key at all\n")
    bad = tmp_path / "bad.txt"
    bad.write_text(_secret(vectors, "host1") + "\nAGE-SECRET-KEY-1NOTAKEY\n")
    env = {
        "SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(tmp_path / "missing"),
        "SOPS_AGE_KEY": _secret(vectors, "admin"),
        "SOPS_AGE_KEY_FILE": str(bad),
        "SOPS_AGE_KEY_CMD": "/nonexistent/helper",
    }
    result = load_identities(env, home, [tmp_path / "also-missing"], system="linux")
    assert result.recipients() == (_public(vectors, "admin"),)  # the one good source
    sources = [error.split(":", 1)[0] for error in result.errors]
    assert sources == ["SOPS_AGE_SSH_PRIVATE_KEY_FILE", "~/.ssh/id_ed25519", "SOPS_AGE_KEY_FILE",
                       "SOPS_AGE_KEY_CMD", f"--identity {tmp_path / 'also-missing'}"]
    assert "line 2: not a valid AGE-SECRET-KEY-1 identity" in result.errors[2]
    assert "No such file" in result.errors[0]
    _no_secret_anywhere(result, _secret(vectors, "host1"), _secret(vectors, "admin"))


# --- the exact parsing rules ------------------------------------------------------------------------------


def test_crlf_is_fine(vectors: Path, home: Path) -> None:
    text = f"# created: x\r\n\r\n{_secret(vectors, 'admin')}\r\n{_secret(vectors, 'user')}\r\n"
    result = load_identities({"SOPS_AGE_KEY": text}, home, system="linux")
    assert result.errors == () and len(result) == 2


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: " " + s, "line 1: leading or trailing spaces"),
        (lambda s: s + " ", "line 1: leading or trailing spaces"),
        (lambda s: s + "\t", "line 1: leading or trailing spaces"),
        (lambda s: "# ok\n  # indented comment\n" + s, "line 2: leading or trailing spaces"),
        (lambda s: s + " " + s, "line 1: not a valid AGE-SECRET-KEY-1"),
        (lambda s: s.lower(), "line 1: not an age identity"),
        (lambda s: s[:-1] + ("A" if s[-1] != "A" else "C"), "line 1: not a valid AGE-SECRET-KEY-1"),
        (lambda s: "age1notasecret", "line 1: not an age identity"),
        (lambda s: s + "\n \n", "line 2: leading or trailing spaces"),
        (lambda s: "\ufeff" + s, "line 1: not an age identity"),
        (lambda s: s + "\r\r\n", "line 1: leading or trailing spaces"),
    ],
    ids=["leading", "trailing", "tab", "indented-comment", "two-on-a-line", "lower-case", "checksum",
         "a-recipient", "blank-with-space", "bom", "double-cr"],
)
def test_a_bad_line_fails_its_whole_source(make, reason: str, vectors: Path, home: Path) -> None:
    secret = _secret(vectors, "user")
    text = make(secret) + "\n" + _secret(vectors, "host1") + "\n"
    result = load_identities({"SOPS_AGE_KEY": text}, home, system="linux")
    assert result.identities == ()
    assert len(result.errors) == 1 and result.errors[0].startswith("SOPS_AGE_KEY: ")
    assert reason in result.errors[0]
    _no_secret_anywhere(result, secret, _secret(vectors, "host1"))


def test_a_file_that_is_not_utf8(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"# caf\xe9\n")
    result = load_identities({"SOPS_AGE_KEY_FILE": str(path)}, home, system="linux")
    assert result.errors == ("SOPS_AGE_KEY_FILE: not UTF-8 text, so not an age identity file",)


@pytest.mark.parametrize("armored", [False, True])
def test_passphrase_protected_age_file(armored: bool, vectors: Path, home: Path, tmp_path: Path) -> None:
    inner = (vectors / "identities" / "vec-admin.txt").read_bytes()
    path = tmp_path / "protected.age"
    path.write_bytes(pyrage.passphrase.encrypt(inner, "correct horse", armored=armored))
    result = load_identities({"SOPS_AGE_KEY_FILE": str(path), "SOPS_AGE_KEY": _secret(vectors, "host1")},
                             home, system="linux")
    assert result.recipients() == (_public(vectors, "host1"),)
    assert len(result.errors) == 1 and "passphrase-protected age identity" in result.errors[0]
    assert result.errors[0].startswith("SOPS_AGE_KEY_FILE: ")


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_passphrase_protected_ssh_key(key_type: str, home: Path, tmp_path: Path, ssh_keygen: str) -> None:
    path = tmp_path / "id"
    subprocess.run([ssh_keygen, "-q", "-t", key_type, "-N", "secret passphrase", "-C", "x", "-f", str(path)],
                   check=True)
    result = load_identities({"SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(path)}, home, [path], system="linux")
    assert result.identities == ()
    assert len(result.errors) == 2
    assert all("passphrase-protected ssh key" in error for error in result.errors)
    assert "secret passphrase" not in "\n".join(result.errors)


def test_unsupported_ssh_key_type(home: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    path = tmp_path / "id_ecdsa"
    path.write_bytes(pem)
    result = load_identities({}, home, [path], system="linux")
    assert len(result.errors) == 1 and "only ed25519 and rsa" in result.errors[0]


def test_a_plugin_identity_without_its_plugin_is_skipped_alone(vectors: Path, home: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # rage looks plugins up on this process's PATH
    plugin_line = bech32.encode("AGE-PLUGIN-NOSUCHPLUGIN-", b"\x01\x02\x03")
    text = f"{plugin_line}\n{_secret(vectors, 'admin')}\n"
    result = load_identities({"SOPS_AGE_KEY": text}, home, system="linux")
    assert result.recipients() == (_public(vectors, "admin"),)
    assert len(result.errors) == 1
    assert "age-plugin-nosuchplugin" in result.errors[0] and "line 1" in result.errors[0]
    assert plugin_line not in result.errors[0]


def test_a_plugin_identity_with_its_plugin_on_path(home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "age-plugin-present"
    shim.write_text("#!/bin/sh\nexit 1\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    plugin_line = bech32.encode("AGE-PLUGIN-PRESENT-", b"\x01\x02\x03")
    result = load_identities({"SOPS_AGE_KEY": plugin_line}, home, system="linux")
    assert result.errors == () and len(result) == 1
    assert result.recipients() == ()
    # A plugin may prompt (a YubiKey's PIN, a touch): batches then run in one process, whatever was asked.
    from sopsctl.identities import batch_processes

    assert batch_processes(result) == 1 and batch_processes(result, 4) == 1
    with_key = load_identities({"SOPS_AGE_KEY": f"{plugin_line}\n{_secret_text()}"}, home, system="linux")
    assert len(with_key) == 2 and batch_processes(with_key, 4) == 1
    plain = load_identities({"SOPS_AGE_KEY": _secret_text()}, home, system="linux")
    assert batch_processes(plain) is None and batch_processes(plain, 3) == 3


def _secret_text() -> str:
    import pyrage

    return str(pyrage.x25519.Identity.generate())


def test_identity_set_repr_hides_keys(vectors: Path, home: Path) -> None:
    result = load_identities({"SOPS_AGE_KEY": _secret(vectors, "admin")}, home, system="linux")
    assert "identities=" not in repr(result)
    _no_secret_anywhere(result, _secret(vectors, "admin"))
