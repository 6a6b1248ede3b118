"""`sopsctl keys from-ssh` and `sopsctl keys generate`, through the CLI's error boundary."""

from __future__ import annotations

import io
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sopsctl.cli import main
from sopsctl.crypto import agekeys
from sopsctl.errors import ExitCode

SSH_AS_AGE = "age124wpsqwkwep99vcwsqtptkn3e5uvfsn7gpxprmau8vs6qhl549dsj5gvr7"
SSH_AS_AGE_IDENTITY = "AGE-SECRET-KEY-1SQRSTF3LSSE3H8V8SYMA9XSWXQWK920N6TUPVEZKN4JQSQG8V9FSAA7ZF4"
IDENTITY_FILE = re.compile(
    r"# created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)\n"
    r"# public key: (?P<recipient>age1[02-9ac-hj-np-z]{58})\n"
    r"(?P<secret>AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58})\n"
)


class _Stdin(io.TextIOWrapper):
    def __init__(self, data: bytes, *, tty: bool = False):
        super().__init__(io.BytesIO(data))
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture
def identities(vectors: Path) -> Path:
    return vectors / "identities"


def _feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes, *, tty: bool = False) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin(data, tty=tty))


# --- from-ssh ------------------------------------------------------------------------------------


def test_from_ssh_file(identities: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "from-ssh", str(identities / "vec-ssh_ed25519.pub")]) == ExitCode.OK
    captured = capsys.readouterr()
    assert captured.out == SSH_AS_AGE + "\n"
    assert captured.err == ""


@pytest.mark.parametrize("args", [["-"], []])
def test_from_ssh_stdin(identities: Path, args: list[str], monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    _feed_stdin(monkeypatch, (identities / "vec-ssh_ed25519.pub").read_bytes())
    assert main(["keys", "from-ssh", *args]) == ExitCode.OK
    assert capsys.readouterr().out == SSH_AS_AGE + "\n"


def test_from_ssh_without_input_on_a_terminal_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _feed_stdin(monkeypatch, b"", tty=True)
    assert main(["keys", "from-ssh"]) == ExitCode.USAGE
    assert "stdin is a terminal" in capsys.readouterr().err


def test_from_ssh_several_lines_give_one_recipient_each(
        tmp_path: Path, identities: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = (identities / "vec-ssh_ed25519.pub").read_text().strip()
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    keys = tmp_path / "authorized_keys"
    keys.write_text(f"# admins\n{line}\n\n{other} other@host\n")
    assert main(["keys", "from-ssh", str(keys)]) == ExitCode.OK
    assert capsys.readouterr().out == f"{SSH_AS_AGE}\n{agekeys.ssh_to_age_recipient(other)}\n"


def test_from_ssh_rsa_line_fails_whole_input(tmp_path: Path, identities: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    line = (identities / "vec-ssh_ed25519.pub").read_text().strip()
    keys = tmp_path / "keys.pub"
    keys.write_text(f"{line}\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0uGPS4dDY user@host\n")
    assert main(["keys", "from-ssh", str(keys)]) == ExitCode.FAILED
    captured = capsys.readouterr()
    assert captured.out == ""  # all or nothing
    assert captured.err.startswith(f"sopsctl: error: {keys}: line 2: ")  # the file, then the line
    assert "only ssh-ed25519 host keys convert to age" in captured.err
    assert "Traceback" not in captured.err


def test_from_ssh_private(identities: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "from-ssh", "--private", str(identities / "vec-ssh_ed25519")]) == ExitCode.OK
    assert capsys.readouterr().out == SSH_AS_AGE_IDENTITY + "\n"


def test_from_ssh_private_stdin(identities: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    _feed_stdin(monkeypatch, (identities / "vec-ssh_ed25519").read_bytes())
    assert main(["keys", "from-ssh", "--private", "-"]) == ExitCode.OK
    assert capsys.readouterr().out == SSH_AS_AGE_IDENTITY + "\n"


def test_from_ssh_private_key_without_flag_says_add_private(
        identities: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "from-ssh", str(identities / "vec-ssh_ed25519")]) == ExitCode.FAILED
    captured = capsys.readouterr()
    assert "add --private" in captured.err
    assert "OPENSSH" not in captured.err and captured.out == ""


def test_from_ssh_passphrase_key(tmp_path: Path, ssh_keygen: str, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "pw", "-f", str(key)], check=True)
    assert main(["keys", "from-ssh", "--private", str(key)]) == ExitCode.FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "ssh-keygen -p" in captured.err


@pytest.mark.parametrize("private", [False, True])
def test_from_ssh_missing_file(tmp_path: Path, private: bool, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["keys", "from-ssh", *(["--private"] if private else []), str(tmp_path / "nope")]
    assert main(args) == ExitCode.FAILED
    assert "not found" in capsys.readouterr().err


def test_from_ssh_binary_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\xff\xfe\x00binary")
    assert main(["keys", "from-ssh", str(junk)]) == ExitCode.FAILED
    assert "not text" in capsys.readouterr().err


# --- generate ------------------------------------------------------------------------------------


def test_generate_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate"]) == ExitCode.OK
    captured = capsys.readouterr()
    match = IDENTITY_FILE.fullmatch(captured.out)
    assert match, captured.out
    assert agekeys.identity_to_recipient(match["secret"]) == match["recipient"]
    # stdout is not a terminal here, so like age-keygen the public key also goes to stderr.
    assert captured.err == f"Public key: {match['recipient']}\n"


def test_generate_to_file_is_private(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "keys.txt"
    assert main(["keys", "generate", "-o", str(target)]) == ExitCode.OK
    captured = capsys.readouterr()
    assert captured.out == ""  # the secret never reaches the terminal
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    match = IDENTITY_FILE.fullmatch(target.read_text())
    assert match
    assert captured.err == f"Public key: {match['recipient']}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keys.txt"]  # no temp file left behind


def test_generate_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "keys.txt"
    target.write_text("AGE-SECRET-KEY-1 the old key\n")
    target.chmod(0o640)
    assert main(["keys", "generate", "--output", str(target)]) == ExitCode.FAILED
    captured = capsys.readouterr()
    assert "already exists; refusing to overwrite it" in captured.err
    assert captured.out == ""
    assert target.read_text() == "AGE-SECRET-KEY-1 the old key\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["keys.txt"]


def test_generate_into_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "-o", str(tmp_path / "no" / "keys.txt")]) == ExitCode.FAILED
    assert "directory does not exist" in capsys.readouterr().err


def test_generated_identities_differ(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    assert main(["keys", "generate", "-o", str(first)]) == ExitCode.OK
    assert main(["keys", "generate", "-o", str(second)]) == ExitCode.OK
    assert first.read_text().splitlines()[2] != second.read_text().splitlines()[2]


def test_keys_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "from-ssh" in out and "generate" in out
