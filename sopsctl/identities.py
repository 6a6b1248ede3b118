"""The age identities at hand, gathered from every place sops looks (env and disk are passed in, never read here implicitly)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage

from .crypto.agewrap import PluginCallbacks, plugin_binary

SSH_KEY_FILE_ENV = "SOPS_AGE_SSH_PRIVATE_KEY_FILE"
KEY_ENV = "SOPS_AGE_KEY"
KEY_FILE_ENV = "SOPS_AGE_KEY_FILE"
KEY_CMD_ENV = "SOPS_AGE_KEY_CMD"
KEYS_TXT = Path("sops", "age", "keys.txt")
KEY_CMD_TIMEOUT = 120.0  # seconds: long enough for a password manager's unlock prompt

_X25519_PREFIX = "AGE-SECRET-KEY-1"
_PLUGIN_PREFIX = "AGE-PLUGIN-"
_ENCRYPTED_PREFIXES = ("age-encryption", "-----BEGIN AGE")  # what sops peeks at (14 bytes)


@dataclass(frozen=True)
class IdentitySet:
    """Every identity found, the sources looked at (for messages) and one error per failed source.

    `identities` holds pyrage objects: kept out of repr so a traceback or log line never shows a key.
    """

    identities: tuple[Any, ...] = field(default=(), repr=False)
    sources: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    loaded: tuple[tuple[str, int], ...] = ()  # (source, identities it gave) for sources that gave some
    x25519_recipients: tuple[str, ...] = ()

    def recipients(self) -> tuple[str, ...]:
        """The age1… recipients of the X25519 identities (to say which one opened an entry)."""
        return self.x25519_recipients

    def __bool__(self) -> bool:
        return bool(self.identities)

    def __len__(self) -> int:
        return len(self.identities)

    def describe(self) -> str:
        """One line for messages: where identities came from, or every place searched when none."""
        if self.loaded:
            found = ", ".join(f"{name} ({count})" for name, count in self.loaded)
            return f"identities from {found}"
        return "no identities found in " + (", ".join(self.sources) or "any location")


class _SourceError(Exception):
    """One source failed; the message names the problem, never the content."""


class _Collector:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.identities: list[Any] = []
        self.recipients: list[str] = []
        self.sources: list[str] = []
        self.errors: list[str] = []
        self.loaded: list[tuple[str, int]] = []
        self.notes: list[str] = []  # problems inside a source that do not sink the whole source

    def add(self, source: str, found: list[tuple[Any, str | None]]) -> None:
        for identity, recipient in found:
            self.identities.append(identity)
            if recipient is not None and recipient not in self.recipients:
                self.recipients.append(recipient)
        if found:
            self.loaded.append((source, len(found)))

    def fail(self, source: str, reason: str) -> None:
        self.errors.append(f"{source}: {reason}")


def batch_processes(identities: Any, wanted: int | None = None) -> int | None:
    """How many processes a batch may unwrap with these identities: `wanted` (None: every core), or one
    when an age plugin identity is among them. A plugin may ask a person or a device (a YubiKey's PIN
    or touch); prompts from several processes at once would race for the terminal and the token."""
    inner = getattr(identities, "identities", identities)
    if not isinstance(inner, (list, tuple)):
        inner = [inner] if inner is not None else []
    plugin = getattr(pyrage.plugin, "IdentityPluginV1", ())
    return 1 if any(isinstance(identity, plugin) for identity in inner) else wanted


def _lines(text: str) -> list[str]:
    """Lines as Go's bufio.ScanLines cuts them: on \\n only, one trailing \\r dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_identity_text(data: bytes, collector: _Collector) -> list[tuple[Any, str | None]]:
    """The identities of an age identity text, exactly as sops parses it; _SourceError if any line is bad."""
    if data.startswith(tuple(p.encode() for p in _ENCRYPTED_PREFIXES)):
        raise _SourceError(
            "a passphrase-protected age identity file; sopsctl does not prompt for passphrases "
            "(decrypt it with `age -d` into a file only you can read and pass that with --identity)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _SourceError("not UTF-8 text, so not an age identity file") from None
    found: list[tuple[Any, str | None]] = []
    for number, line in enumerate(_lines(text), start=1):
        if line == "" or line.startswith("#"):
            continue
        if line != line.strip():
            # sops 3.11 rejects these too; saying why beats its "unknown identity type".
            raise _SourceError(f"line {number}: leading or trailing spaces around an identity")
        if line.startswith(_X25519_PREFIX):
            try:
                identity = pyrage.x25519.Identity.from_str(line)
            except pyrage.IdentityError:
                raise _SourceError(f"line {number}: not a valid AGE-SECRET-KEY-1 identity "
                                   "(bad checksum or length)") from None
            found.append((identity, str(identity.to_public())))
        elif line.startswith(_PLUGIN_PREFIX):
            plugin = _plugin_identity(line, number, collector)
            if plugin is not None:
                found.append((plugin, None))
        else:
            raise _SourceError(f"line {number}: not an age identity "
                               "(lines must start with AGE-SECRET-KEY-1 or AGE-PLUGIN-)")
    return found


def _plugin_identity(line: str, number: int, collector: _Collector) -> Any | None:
    """A plugin identity, or None (with a note) when its plugin is not installed.

    sops would keep it and fail when it is tried; skipping it keeps the other identities usable.
    rage starts plugins from this process's PATH, so that PATH (not `env`'s) is the one that counts.
    """
    try:
        identity = pyrage.plugin.Identity.from_str(line)
    except pyrage.IdentityError:
        raise _SourceError(f"line {number}: not a valid AGE-PLUGIN- identity") from None
    name = identity.plugin()
    missing = f"line {number}: skipped, a plugin identity for age-plugin-{name}, which is not on PATH"
    if plugin_binary(name) is None:
        collector.notes.append(missing)
        return None
    try:
        return pyrage.plugin.IdentityPluginV1(name, [identity], PluginCallbacks())
    except (pyrage.DecryptError, pyrage.IdentityError):
        collector.notes.append(missing)
        return None


def parse_ssh_identity(data: bytes) -> Any:
    """An OpenSSH (or PEM) ed25519/rsa private key as an age ssh identity; _SourceError if unusable."""
    try:
        return pyrage.ssh.Identity.from_buffer(data)
    except pyrage.IdentityError as exc:
        reason = str(exc)
    if "decrypted" in reason:  # pyrage: "ssh key must be decrypted first"
        raise _SourceError("a passphrase-protected ssh key; sopsctl does not prompt for passphrases "
                           "(convert it with `sopsctl keys from-ssh --private` on a decrypted copy)")
    if "unsupported" in reason:
        raise _SourceError("an ssh key type age cannot use (only ed25519 and rsa)")
    raise _SourceError("not a readable ssh private key")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _SourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def _looks_like_ssh_key(data: bytes) -> bool:
    head = data.lstrip()
    return head.startswith(b"-----BEGIN ") and not head.startswith(b"-----BEGIN AGE")


def _home_display(path: Path, home: Path) -> str:
    try:
        return "~/" + path.relative_to(home).as_posix()
    except ValueError:
        return str(path)


def default_keys_file(env: Mapping[str, str], home: Path, system: str = sys.platform) -> Path:
    """sops's `<user config dir>/sops/age/keys.txt` (Go's os.UserConfigDir, with sops's macOS XDG rule).

    ValueError when Go would find no config dir (a relative $XDG_CONFIG_HOME, no %AppData%).
    """
    xdg = env.get("XDG_CONFIG_HOME", "")
    if system == "darwin":
        base = Path(xdg) if xdg else home / "Library" / "Application Support"
    elif system.startswith("win"):
        appdata = env.get("AppData") or env.get("APPDATA")
        if not appdata:
            raise ValueError("%AppData% is not set")
        base = Path(appdata)
    elif xdg:
        if not Path(xdg).is_absolute():
            raise ValueError(f"$XDG_CONFIG_HOME is a relative path ({xdg})")
        base = Path(xdg)
    else:
        base = home / ".config"
    return base / KEYS_TXT


def _key_cmd(command: str, collector: _Collector, timeout: float) -> bytes:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise _SourceError(f"cannot split the command: {exc}") from None
    if not argv:
        raise _SourceError("the command is empty")
    try:
        # No shell, stdin closed, stderr kept from the terminal (it is not ours to show), like sops.
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                                env=dict(collector.env), check=False)
    except FileNotFoundError:
        raise _SourceError(f"{argv[0]}: command not found") from None
    except PermissionError:
        raise _SourceError(f"{argv[0]}: not executable") from None
    except subprocess.TimeoutExpired:
        raise _SourceError(f"{argv[0]} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise _SourceError(f"{argv[0]}: {exc.strerror or exc}") from None
    if result.returncode != 0:
        raise _SourceError(f"{argv[0]} exited with status {result.returncode}")
    return result.stdout


def load_identities(
    env: Mapping[str, str],
    home: Path,
    extra_files: Sequence[Path] = (),
    system: str = sys.platform,
    *,
    key_cmd_timeout: float = KEY_CMD_TIMEOUT,
) -> IdentitySet:
    """Every identity sops would use, plus `--identity` files; all sources combined, none stops another.

    Order as sops: SOPS_AGE_SSH_PRIVATE_KEY_FILE, ~/.ssh/id_ed25519, ~/.ssh/id_rsa, SOPS_AGE_KEY,
    SOPS_AGE_KEY_FILE, SOPS_AGE_KEY_CMD, the default keys.txt, then `extra_files` (age identity
    files or OpenSSH private keys, told apart by content). A source that cannot be read or parsed
    adds one error (its name and why, never its content) and gives no identities.
    """
    c = _Collector(env)

    def attempt(source: str, load: Any) -> None:
        c.sources.append(source)
        c.notes.clear()
        try:
            c.add(source, load())
        except _SourceError as exc:
            c.fail(source, str(exc))
        else:
            for note in c.notes:
                c.fail(source, note)

    def ssh_file(path: Path) -> list[tuple[Any, str | None]]:
        return [(parse_ssh_identity(_read(path)), None)]

    if SSH_KEY_FILE_ENV in env:
        attempt(SSH_KEY_FILE_ENV, lambda: ssh_file(Path(env[SSH_KEY_FILE_ENV])))
    for name in ("id_ed25519", "id_rsa"):
        path = home / ".ssh" / name
        shown = _home_display(path, home)
        if path.exists():  # sops loads these whenever they exist, with or without the env variable
            attempt(shown, lambda path=path: ssh_file(path))
        else:
            c.sources.append(shown)
    if KEY_ENV in env:
        attempt(KEY_ENV, lambda: parse_identity_text(env[KEY_ENV].encode("utf-8", "surrogateescape"), c))
    if KEY_FILE_ENV in env:
        attempt(KEY_FILE_ENV, lambda: parse_identity_text(_read(Path(env[KEY_FILE_ENV])), c))
    if KEY_CMD_ENV in env:
        command = env[KEY_CMD_ENV]
        attempt(KEY_CMD_ENV, lambda: parse_identity_text(_key_cmd(command, c, key_cmd_timeout), c))
    try:
        default = default_keys_file(env, home, system)
    except ValueError as exc:
        if not c.identities:  # sops complains only when it has nothing else either
            c.fail("default keys.txt", f"{exc}, so it was not looked for")
    else:
        shown = _home_display(default, home)
        if default.exists():
            attempt(shown, lambda: parse_identity_text(_read(default), c))
        else:
            c.sources.append(shown)
    for extra in extra_files:
        path = Path(extra)

        def load_extra(path: Path = path) -> list[tuple[Any, str | None]]:
            data = _read(path)
            if _looks_like_ssh_key(data):
                return [(parse_ssh_identity(data), None)]
            return parse_identity_text(data, c)

        attempt(f"--identity {path}", load_extra)
    return IdentitySet(tuple(c.identities), tuple(c.sources), tuple(c.errors), tuple(c.loaded),
                       tuple(c.recipients))
