"""No leaks: everything verify and rotate write (files, temp files, stdout, stderr, --debug tracebacks) is scanned for plaintexts and data keys.

The secrets are known: the shared vectors' plaintext values, their data keys (hex, both cases, and
base64) and MAC digests, plus the new data keys `rotate` makes (read back from the rotated files).
Every temp file is read at the moment sopsctl renames it into place, so a plaintext that lived only
there would be seen too. Key files sopsctl creates are 0600 from the first byte, whatever the umask.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import stat
import traceback
from pathlib import Path

import pytest

from sopsctl import fsutil
from sopsctl.cli import main
from sopsctl.datakey import recover
from sopsctl.formats import detect_format, read_metadata

from .policy_helpers import ADMIN_AND_HOST_POLICY
from .test_tree_verify import ADMIN, ENC_FILES, HOST1, HOST2, SSH_AS_AGE, _secrets, identities

POLICY = ADMIN_AND_HOST_POLICY


class _Recorder:
    """`os` for sopsctl.fsutil: reads every temp file as it is renamed (or linked) into place."""

    def __init__(self) -> None:
        self.temps: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}

    def _seen(self, source: object) -> None:
        path = Path(str(source))
        self.temps[str(path)] = path.read_bytes()
        self.modes[str(path)] = stat.S_IMODE(path.stat().st_mode)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        real = getattr(os, name)
        if name not in ("replace", "rename", "link"):
            return real

        def wrapped(source, *args, **kwargs):  # type: ignore[no-untyped-def]
            self._seen(source)
            return real(source, *args, **kwargs)

        return wrapped


def run(root: Path, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


def everything_in(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def found_in(secrets: set[str], blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(name, secret) for name, blob in blobs.items() for secret in secrets if secret.encode() in blob]


@pytest.fixture
def repo(tmp_path: Path, vectors: Path) -> Path:
    root = tmp_path / "repo"
    (root / "policies").mkdir(parents=True)
    ids = vectors / "identities"
    (root / "policies" / "fleet.yaml").write_text(POLICY.format(admin=(ids / "vec-admin.pub").read_text().strip(),
                                                               host1=(ids / "vec-host1.pub").read_text().strip()))
    for name in ENC_FILES:
        (root / "secrets" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vectors / name, root / "secrets" / name)
    assert run(root, "generate")[0] == 0
    return root


@pytest.fixture
def known(vectors: Path) -> set[str]:
    benign = " ".join([*ENC_FILES, ADMIN, HOST2, SSH_AS_AGE, "secrets", "rotated", "file(s)",
                       "encrypted value(s) and the MAC verified (key opened by)"])  # words of the report
    # A word sops itself wrote in the clear (a key name, an unencrypted_suffix value, `list` of
    # `age__list_0`) is no secret: only what exists in encrypted form only is scanned for.
    clear = b"".join((vectors / name).read_bytes() for name in ENC_FILES)
    found = {s for s in _secrets(vectors) if len(s) >= 4 and s not in benign and s.encode() not in clear}
    assert len(found) > 30  # plaintexts of every type, keys and MACs: the scan has teeth
    return found


def data_keys(root: Path, vectors: Path) -> set[str]:
    """The data keys of the files as they are now (after rotate: the new ones), as hex and base64."""
    keys: set[str] = set()
    for path in sorted((root / "secrets").rglob("*")):
        if path.is_file() and not path.name.endswith(fsutil.TEMP_SUFFIX):
            metadata = read_metadata(path.read_bytes(), detect_format(path.name), full=True)
            assert metadata is not None
            key = recover(metadata, identities(vectors, ADMIN, HOST1)).key
            keys |= {key.hex(), key.hex().upper(), base64.b64encode(key).decode()}
    return keys


def test_verify_and_rotate_write_and_print_no_plaintext_and_no_data_key(
        repo: Path, vectors: Path, known: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(fsutil, "os", recorder)
    home = Path(os.environ["HOME"])
    before = everything_in(repo, home)
    args = [a for n in (ADMIN, HOST2, SSH_AS_AGE) for a in ("--identity", str(vectors / "identities" / n))]
    printed = []
    for fmt in ("text", "json"):
        code, text = run(repo, "verify", "--format", fmt, *args)
        assert code == 0, text
        printed.append(text)
    assert everything_in(repo, home) == before, "verify wrote a file"
    code, text = run(repo, "rotate", "secrets", *args)
    assert code == 0, text
    printed.append(text)
    code, text = run(repo, "verify", "--format", "json", "--identity", str(vectors / "identities" / ADMIN))
    assert code == 0, text
    printed.append(text)

    after = everything_in(repo, home)
    written = {p: data for p, data in after.items() if before.get(p) != data}
    assert len(written) == len(ENC_FILES), sorted(written)  # every secret rotated, nothing else written
    assert len(recorder.temps) == len(ENC_FILES), "the recorder must see every temp file"
    secrets = known | data_keys(repo, vectors)
    assert len(secrets) > len(known), "the rotated files' new data keys are in the scan"
    assert found_in(secrets, {"printed": "".join(printed).encode()}) == []
    assert found_in(secrets, written) == []
    assert found_in(secrets, recorder.temps) == [], "a temp file held a plaintext or a data key"
    assert not list(repo.rglob(f"*{fsutil.TEMP_SUFFIX}"))


@pytest.mark.parametrize("command", ["verify", "rotate"])
def test_a_forced_failure_with_debug_leaks_nothing(repo: Path, vectors: Path, known: set[str], command: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception deep in the crypto (after the data key is unwrapped): the traceback holds no secret."""
    import sopsctl.values

    real = sopsctl.values.decrypt_value

    def broken(key: bytes, enc, aad: str) -> bytes:  # type: ignore[no-untyped-def]
        real(key, enc, aad)  # the value is decrypted, then the failure: the secrets are live in the frames
        raise RuntimeError("forced failure")

    monkeypatch.setattr(sopsctl.values, "decrypt_value", broken)
    args = [command, "secrets/yaml/nested.enc.yaml", "--identity", str(vectors / "identities" / ADMIN)]
    before = everything_in(repo)
    code, text = run(repo, *args)  # without --debug: one line, exit 3 or 4, no traceback
    assert code in (1, 3, 4) and "Traceback" not in text, text
    try:
        code, debug_text = run(repo, *args, "--debug")
    except Exception as exc:  # --debug lets it through: the traceback is what a user would paste
        debug_text = "".join(traceback.format_exception(exc))
    assert "forced failure" in text + debug_text, "the failure was never forced"
    # A traceback quotes source lines: `False`/`True` there are Python, not the vectors' booleans.
    secrets = (known | data_keys(repo, vectors)) - {"False", "True", "false", "true"}
    assert found_in(secrets, {"output": (text + debug_text).encode()}) == []
    assert everything_in(repo) == before


def test_key_files_are_0600_from_the_first_byte_whatever_the_umask(tmp_path: Path) -> None:
    recorder = _Recorder()
    previous = os.umask(0)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fsutil, "os", recorder)
            code, text = run(tmp_path, "keys", "generate", "-o", str(tmp_path / "keys.txt"))
    finally:
        os.umask(previous)
    assert code == 0, text
    assert stat.S_IMODE((tmp_path / "keys.txt").stat().st_mode) == 0o600
    assert list(recorder.modes.values()) == [0o600], "the temp file that became the key file was not 0600"
    assert "AGE-SECRET-KEY-1" not in text  # the secret went to the file only
