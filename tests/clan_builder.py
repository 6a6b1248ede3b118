"""Writes a clan secrets tree the way clan lays it out: key.json files, group members and relative symlinks."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

KINDS = ("users", "machines", "groups")


class ClanTree:
    """The `sops/` and `vars/` folders of a clan repo under `root` (no encryption here: see the caller)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def sops(self) -> Path:
        return self.root / "sops"

    def entity(self, kind: str, name: str) -> Path:
        """`sops/users/<u>`, `sops/machines/<m>` or `sops/groups/<g>`."""
        if kind not in KINDS:
            raise ValueError(kind)
        return self.sops / kind / name

    def write_key(self, kind: str, name: str, recipients: Sequence[str], *, as_list: bool = True) -> Path:
        """`sops/<kind>/<name>/key.json`: one `{publickey, type}` object, or a list of them (clan writes both)."""
        if kind not in ("users", "machines"):
            raise ValueError(kind)
        entries = [{"publickey": recipient, "type": "age"} for recipient in recipients]
        if not as_list and len(entries) != 1:
            raise ValueError("a key.json that is one object holds exactly one key")
        path = self.entity(kind, name) / "key.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries if as_list else entries[0], indent=2) + "\n")
        return path

    def remove_entity(self, kind: str, name: str) -> None:
        """Delete `sops/<kind>/<name>/` (links to it are left dangling, as after `clan machines delete`)."""
        shutil.rmtree(self.entity(kind, name))

    def link(self, folder: Path, kind: str, name: str) -> Path:
        """`folder/<kind>/<name>` -> a relative symlink to `sops/<kind>/<name>` (it may not exist yet)."""
        link = folder / kind / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(self.entity(kind, name), link.parent))
        return link

    def unlink(self, folder: Path, kind: str, name: str) -> None:
        (folder / kind / name).unlink()

    def add_member(self, group: str, kind: str, name: str) -> Path:
        """`sops/groups/<g>/<kind>/<name>` -> `../../../<kind>/<name>`."""
        if kind not in ("users", "machines"):
            raise ValueError(kind)
        return self.link(self.entity("groups", group), kind, name)

    def secret_dir(self, path: str) -> Path:
        """The folder of a clan secret or var (`sops/secrets/<name>`, `vars/…/<file>`), made if missing."""
        folder = self.root / path
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_value(self, path: str, text: str) -> Path:
        """A var's public half: `vars/…/<file>/value`, plain text, not a secret."""
        value = self.secret_dir(path) / "value"
        value.write_text(text)
        return value


def relative_link_target(link: Path) -> str:
    """What a link says (for assertions that the tree uses relative links, as clan does)."""
    return os.readlink(link)
