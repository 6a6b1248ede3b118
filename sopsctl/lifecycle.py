"""Life events as policy edits: onboard or re-key a host, add or retire people and keys (what changes, not how it is written)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .crypto import agekeys
from .errors import InputError, UsageError
from .model import Policy
from .policyedit import PolicyEditor

Edit = Callable[[PolicyEditor, Policy], list[str]]
REVOKE_NOTE = ("re-keying removes {who} from the files' recipients, but it does not revoke what {who} may already "
               "have read: rotate the data keys of those files (sops rotate -i FILE) and change the secrets at "
               "their source")


@dataclass(frozen=True)
class KeySpec:
    """A new key as given on the command line: an ssh public key line, or an age recipient."""

    ssh: str | None = None
    age: str | None = None

    @classmethod
    def from_options(cls, ssh_key: str | None, ssh_key_text: str | None, age: str | None) -> KeySpec:
        given = [v for v in (ssh_key, ssh_key_text, age) if v]
        if len(given) != 1:
            raise UsageError("give exactly one of --ssh-key, --ssh-key-file or --age")
        ssh = ssh_key or ssh_key_text
        if ssh is not None:
            lines = [ln for ln in ssh.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            if len(lines) != 1:
                raise InputError(f"expected one ssh public key line, found {len(lines)}")
            parsed = agekeys.parse_ssh_public_key(lines[0])  # raises KeyFormatError with the reason
            return cls(ssh=f"{parsed.key} {parsed.comment}".strip())
        return cls(age=agekeys.validate_age_recipient(age or ""))

    def fields(self) -> dict[str, object]:
        return {"ssh": self.ssh} if self.ssh else {"age": self.age}


def _free_key_name(policy: Policy, base: str) -> str:
    if base not in policy.keys:
        return base
    n = 2
    while f"{base}-{n}" in policy.keys:
        n += 1
    return f"{base}-{n}"


def _require(policy: Policy, section: str, name: str) -> None:
    table = {"hosts": policy.hosts, "identities": policy.identities, "keys": policy.keys}[section]
    if name not in table:
        noun = {"hosts": "host", "identities": "identity", "keys": "key"}[section]
        raise InputError(f"no {noun} named '{name}' in the policy")


def host_add(name: str, key: KeySpec, platform: str | None, users: Sequence[str]) -> Edit:
    def edit(editor: PolicyEditor, policy: Policy) -> list[str]:
        if name in policy.hosts:
            raise InputError(f"host '{name}' already exists; use `sopsctl host set-key {name}` for a new host key")
        relations: dict[str, str] = {}
        for item in users:
            account, sep, relation = item.partition("=")
            if not sep:
                raise UsageError(f"--user takes ACCOUNT=RELATION (primary, admin or user), not '{item}'")
            relations[account] = relation
        key_name = _free_key_name(policy, name)
        editor.add("keys", key_name, key.fields())
        fields: dict[str, object] = {}
        if platform:
            fields["platform"] = platform
        fields["keys"] = [key_name]
        if relations:
            fields["users"] = relations
        editor.add("hosts", name, fields)
        return [f"host '{name}' added with key '{key_name}'"]

    return edit


def host_set_key(name: str, key: KeySpec, today: _dt.date) -> Edit:
    def edit(editor: PolicyEditor, policy: Policy) -> list[str]:
        _require(policy, "hosts", name)
        old_keys = [k for k in policy.hosts[name].keys if policy.keys[k].active]
        key_name = _free_key_name(policy, f"{name}-{today.isoformat()}")
        editor.add("keys", key_name, key.fields())
        editor.set("hosts", name, "keys", [*policy.hosts[name].keys, key_name])
        for old in old_keys:
            editor.set("keys", old, "status", "retired")
            editor.set("keys", old, "retired", today.isoformat())
        return [f"host '{name}' now uses key '{key_name}'" +
                (f"; retired {', '.join(old_keys)}" if old_keys else ""),
                REVOKE_NOTE.format(who=f"the old key of {name}")]

    return edit


def _retire(section: str, noun: str) -> Callable[[str, _dt.date], Edit]:
    def make(name: str, today: _dt.date) -> Edit:
        def edit(editor: PolicyEditor, policy: Policy) -> list[str]:
            _require(policy, section, name)
            editor.set(section, name, "status", "retired")
            if section == "keys":
                editor.set(section, name, "retired", today.isoformat())
            return [f"{noun} '{name}' retired", REVOKE_NOTE.format(who=f"{noun} {name}")]

        return edit

    return make


host_retire = _retire("hosts", "host")
identity_retire = _retire("identities", "identity")
key_retire = _retire("keys", "key")


def identity_add(name: str, role: str, key: KeySpec, accounts: Sequence[str]) -> Edit:
    def edit(editor: PolicyEditor, policy: Policy) -> list[str]:
        if name in policy.identities:
            raise InputError(f"identity '{name}' already exists")
        key_name = _free_key_name(policy, name)
        editor.add("keys", key_name, key.fields())
        fields: dict[str, object] = {"role": role}
        if accounts:
            fields["accounts"] = list(accounts)
        fields["keys"] = [key_name]
        editor.add("identities", name, fields)
        return [f"identity '{name}' ({role}) added with key '{key_name}'"]

    return edit
