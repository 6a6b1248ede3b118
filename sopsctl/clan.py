"""Reading a clan tree from disk: users' and machines' key.json, groups, and the links beside each secret and var."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .clanaudit import LINK_KINDS, ClanGroup, ClanSecret, ClanTree
from .errors import InputError

SECRET_NAME = "secret"  # clan stores each secret or var as one sops file of this name
MAX_KEY_JSON = 64 * 1024
MAX_LINK_FILE = 4096  # a link flattened into a file (git with core.symlinks=false) holds a short path


def find_clan_root(root: Path, configured: str | None) -> Path | None:
    """The clan folder: `settings.clan_root` when set, else the repository root when it holds a
    `sops/` folder with `users/` or `machines/` (what clan itself creates)."""
    if configured is not None:
        path = (root / configured).resolve()
        if not path.is_dir():
            raise InputError(f"settings.clan_root '{configured}': no such folder under {root}")
        return path
    sops = root / "sops"
    if (sops / "users").is_dir() or (sops / "machines").is_dir():
        return root
    return None


def read_key_json(data: bytes, where: str) -> tuple[str, ...]:
    """The age recipients of a clan key.json: one `{publickey, type}` object or a list of them."""
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    entries = parsed if isinstance(parsed, list) else [parsed]
    recipients = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("publickey"), str):
            raise ValueError(f"{where}: expected {{\"publickey\": …, \"type\": \"age\"}} or a list of them")
        if entry.get("type", "age") != "age":
            continue  # clan also knows pgp keys; sopsctl compares age recipients
        recipients.append(entry["publickey"].strip())
    if not recipients:
        raise ValueError(f"{where}: no age public key in it")
    return tuple(recipients)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _entities(folder: Path, root: Path, problems: list[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    if not folder.is_dir() or folder.is_symlink():  # never read through a link out of the tree
        return result
    for entry in sorted(folder.iterdir()):
        key_file = entry / "key.json"
        if not entry.is_dir() or entry.is_symlink() or not key_file.is_file():
            continue
        where = _relative(key_file, root)
        try:
            if key_file.stat().st_size > MAX_KEY_JSON:
                raise ValueError(f"{where}: over {MAX_KEY_JSON} bytes, not a key.json")
            result[entry.name] = read_key_json(key_file.read_bytes(), where)
        except OSError as exc:
            problems.append((where, f"cannot read it: {exc.strerror or exc}"))
        except ValueError as exc:
            problems.append((where, str(exc).split(": ", 1)[-1]))
    return result


def _link_names(folder: Path) -> tuple[str, ...]:
    """The names a links folder grants. The entry's name is what clan reads; the entry may be a
    symlink, or a small file holding the link's target when a checkout flattened symlinks."""
    if not folder.is_dir() or folder.is_symlink():
        return ()
    names = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        flattened = not entry.is_symlink() and entry.is_file() and entry.stat().st_size <= MAX_LINK_FILE
        if entry.is_symlink() or flattened:
            names.append(entry.name)
    return tuple(names)


def _secret(secret_file: Path, root: Path, machine: str | None) -> ClanSecret:
    folder = secret_file.parent
    users, machines, groups = (_link_names(folder / kind) for kind in LINK_KINDS)
    return ClanSecret(_relative(secret_file, root), users, machines, groups, machine)


def _walk_secrets(base: Path, root: Path, clan_root: Path) -> list[ClanSecret]:
    """Every `secret` file under `base`, without following symlinks (links are readers, not folders)."""
    found = []
    per_machine = clan_root / "vars" / "per-machine"
    for directory, dirnames, filenames in os.walk(base):
        holds_secret = SECRET_NAME in filenames and not os.path.islink(os.path.join(directory, SECRET_NAME))
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(directory, d))
                             and not (holds_secret and d in LINK_KINDS))  # beside a secret they are its readers
        if holds_secret:
            path = Path(directory) / SECRET_NAME
            machine = None
            if path.is_relative_to(per_machine):
                machine = path.relative_to(per_machine).parts[0]
            found.append(_secret(path, root, machine))
    return found


def read_groups(folder: Path) -> dict[str, ClanGroup]:
    groups = {}
    if folder.is_dir() and not folder.is_symlink():
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                groups[entry.name] = ClanGroup(_link_names(entry / "users"), _link_names(entry / "machines"))
    return groups


def read_tree(root: Path, configured: str | None) -> ClanTree | None:
    """The clan tree of the repository at `root`, or None when it has none."""
    clan_root = find_clan_root(root, configured)
    if clan_root is None:
        return None
    root = root.resolve()
    clan_root = clan_root.resolve()
    if not clan_root.is_relative_to(root):
        raise InputError(f"settings.clan_root '{configured}' is outside the repository")
    problems: list[tuple[str, str]] = []
    users = _entities(clan_root / "sops" / "users", root, problems)
    machines = _entities(clan_root / "sops" / "machines", root, problems)
    groups = read_groups(clan_root / "sops" / "groups")
    secrets: list[ClanSecret] = []
    for base in (clan_root / "sops" / "secrets", clan_root / "vars"):
        if base.is_dir() and not base.is_symlink():
            secrets += _walk_secrets(base, root, clan_root)
    relative_root = "" if clan_root == root else _relative(clan_root, root)
    return ClanTree(relative_root, users, machines, groups, tuple(sorted(secrets, key=lambda s: s.path)),
                    tuple(problems))


def key_source(root: Path):  # type: ignore[no-untyped-def]
    """For the policy loader: clan_root -> {('user'|'machine', name): recipients}, read once per root."""
    cache: dict[str | None, dict[tuple[str, str], tuple[str, ...]]] = {}

    def lookup(configured: str | None) -> dict[tuple[str, str], tuple[str, ...]]:
        if configured not in cache:
            clan_root = find_clan_root(root, configured)
            table: dict[tuple[str, str], tuple[str, ...]] = {}
            if clan_root is not None:
                problems: list[tuple[str, str]] = []
                for kind, folder in (("user", "users"), ("machine", "machines")):
                    for name, recipients in _entities(clan_root / "sops" / folder, root.resolve(), problems).items():
                        table[(kind, name)] = recipients
            cache[configured] = table
        return cache[configured]

    return lookup
