"""`sopsctl host|identity|key …`: life events that edit the policy, regenerate .sops.yaml and list what changes."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import PolicyOption, RootOption, err, out
from .completion import names

host_app = typer.Typer(help="Onboard, re-key and retire hosts.", no_args_is_help=True)
identity_app = typer.Typer(help="Add and retire people and services.", no_args_is_help=True)
key_app = typer.Typer(help="Retire a key.", no_args_is_help=True)
app.add_typer(host_app, name="host")
app.add_typer(identity_app, name="identity")
app.add_typer(key_app, name="key")

DryRun = Annotated[bool, typer.Option("--dry-run", help="Show the policy edit and the access changes; change nothing.")]
Force = Annotated[bool, typer.Option("--force", help="Make the change even if some class loses every admin reader.")]
Rekey = Annotated[bool, typer.Option("--rekey", help="Re-key the files whose readers change, right after.")]
SshKey = Annotated[str | None, typer.Option("--ssh-key", help="An ssh-ed25519 public key line.")]
SshKeyFile = Annotated[Path | None, typer.Option("--ssh-key-file", help="e.g. a copy of /etc/ssh/ssh_host_ed25519_key.pub",
                                                 dir_okay=False)]
Age = Annotated[str | None, typer.Option("--age", help="An age1… recipient.")]
Identity = Annotated[list[Path] | None, typer.Option(
    "--identity", help="With --rekey: an age identity file or OpenSSH private key, besides sops's places.")]


def _key_spec(ssh_key: str | None, ssh_key_file: Path | None, age: str | None):  # type: ignore[no-untyped-def]
    from ..fsutil import read_bytes
    from ..lifecycle import KeySpec

    text = read_bytes(ssh_key_file, what="ssh public key file", limit=64 * 1024).decode("utf-8", "replace") \
        if ssh_key_file else None
    return KeySpec.from_options(ssh_key, text, age)


def _clan_paths(repo) -> list[str]:  # type: ignore[no-untyped-def]
    """Clan secrets and vars that can be re-keyed: a retired key leaves them too (rekey skips those in sync)."""
    from .. import ops

    rules = ops.clan_rules(repo, ops.load(repo))
    return sorted(path for path, rule in rules.items() if not isinstance(rule, str))


def _run(edit, root: Path | None, policy: Path | None, dry_run: bool, force: bool, rekey: bool,  # type: ignore[no-untyped-def]
         identity: list[Path] | None = None, rotate_for: str | None = None) -> None:
    from .. import ops
    from ..changes import describe

    repo = ops.open_repo(Path.cwd(), root, policy)
    # What the leaver could read is measured before the policy forgets them (files' own recipients).
    exposed = ops.access(repo, rotate_for)[1] if rotate_for else []
    result = ops.life_event(repo, edit, dry_run=dry_run, force=force)
    if dry_run:
        out(result.policy_diff)
    for note in result.notes:
        err(f"sopsctl: {note}")
    lines = describe(result.changes)
    verb = "would change" if dry_run else "change"
    out(f"{len(lines)} file(s) whose readers {verb}:\n" + "".join(f"  {line}\n" for line in lines))
    if rotate_for:
        _report_exposure(repo, rotate_for, exposed, dry_run)
    if not dry_run:
        err(f"sopsctl: wrote {', '.join(result.written)}")
        uncovered = {c.path for c in result.changes if c.uncovered}  # its own secrets: delete or re-home
        if rotate_for and exposed:
            from .rotate import rotate_paths

            code = rotate_paths(repo, sorted({a.path for a in exposed} - uncovered), identity_files=identity)
            if code:
                raise typer.Exit(code)
            if rekey:  # the rotated files already have their rule's recipients; re-key the rest
                from .rekey import rekey_paths

                rest = [c.path for c in result.changes if not c.uncovered and c.path not in {a.path for a in exposed}]
                rest += [p for p in _clan_paths(repo) if p not in {a.path for a in exposed}]
                code = rekey_paths(repo, rest, identity_files=identity) if rest else 0
                if code:
                    raise typer.Exit(code)
        elif rekey:
            from .rekey import rekey_paths

            code = rekey_paths(repo, [c.path for c in result.changes if not c.uncovered] + _clan_paths(repo),
                               identity_files=identity)
            if code:
                raise typer.Exit(code)
        elif result.changes:
            err("sopsctl: the files above still have their old recipients: run `sopsctl rekey` (or pass --rekey)")


@host_app.command("add")
def host_add(
    name: Annotated[str, typer.Argument(help="The host's name.")],
    ssh_key: SshKey = None, ssh_key_file: SshKeyFile = None, age: Age = None,
    platform: Annotated[str | None, typer.Option("--platform", help="darwin, nixos, linux, …")] = None,
    user: Annotated[list[str] | None, typer.Option("--user", help="ACCOUNT=primary|admin|user (repeatable).")] = None,
    root: RootOption = None, policy: PolicyOption = None, dry_run: DryRun = False, force: Force = False,
    rekey: Rekey = False, identity: Identity = None,
) -> None:
    """Onboard a host: add its key (ssh host key converted to age) and regenerate."""
    from .. import lifecycle

    edit = lifecycle.host_add(name, _key_spec(ssh_key, ssh_key_file, age), platform, user or [])
    _run(edit, root, policy, dry_run, force, rekey, identity)


@host_app.command("set-key")
def host_set_key(
    name: Annotated[str, typer.Argument(help="The host's name.", autocompletion=names("hosts", active_only=True))],
    ssh_key: SshKey = None, ssh_key_file: SshKeyFile = None, age: Age = None,
    root: RootOption = None, policy: PolicyOption = None, dry_run: DryRun = False, force: Force = False,
    rekey: Rekey = False, identity: Identity = None,
) -> None:
    """A reinstalled host's new key: the old one is retired."""
    import datetime

    from .. import lifecycle

    edit = lifecycle.host_set_key(name, _key_spec(ssh_key, ssh_key_file, age), datetime.date.today())
    _run(edit, root, policy, dry_run, force, rekey, identity)


def _report_exposure(repo, subject: str, exposed: list, dry_run: bool) -> None:  # type: ignore[no-untyped-def]
    """What rotating cannot undo: values the leaver saw, and private keys they could take."""
    from .. import ops
    from ..audit import key_bearing_holders

    readable = sorted({a.path for a in exposed})
    verb = "would rotate" if dry_run else "rotating"
    out(f"{subject} could read {len(readable)} file(s); {verb} their data keys. Their values stay valid "
        "where they were issued: change them at their source (revoke tokens, reset passwords):\n")
    out("".join(f"  {path}\n" for path in readable))
    holders = key_bearing_holders(ops.load(repo))
    for path in readable:
        if path in holders:
            keys = ", ".join(sorted(holders[path]))
            _, opened = ops.access(repo, f"key:{sorted(holders[path])[0]}")
            out(f"the private key in {path} ({keys}) is compromised too: it opens {len(opened)} file(s); "
                "its owner needs a new key (sopsctl host set-key / identity add, then retire the old key)\n")


SECTION_OF = {"host": "hosts", "identity": "identities", "key": "keys"}


def _retire_command(group: typer.Typer, noun: str, factory_name: str) -> None:
    @group.command("retire", help=f"Retire a {noun}: it is left out of every rule from now on.")
    def retire(
        name: str = typer.Argument(..., help="Its name in the policy.",
                                   autocompletion=names(SECTION_OF[noun], active_only=True)),
        root: RootOption = None, policy: PolicyOption = None, dry_run: DryRun = False, force: Force = False,
        rekey: Rekey = False, identity: Identity = None,
        rotate: Annotated[bool, typer.Option("--rotate", help="Also rotate the data key of every file it could "
                                             "read, and list the secrets to change at their source.")] = False,
    ) -> None:
        import datetime

        from .. import lifecycle

        _run(getattr(lifecycle, factory_name)(name, datetime.date.today()), root, policy, dry_run, force, rekey,
             identity, f"{noun}:{name}" if rotate else None)


_retire_command(host_app, "host", "host_retire")
_retire_command(identity_app, "identity", "identity_retire")
_retire_command(key_app, "key", "key_retire")


@identity_app.command("add")
def identity_add(
    name: Annotated[str, typer.Argument(help="The person's or service's name.")],
    role: Annotated[str, typer.Option("--role", help="admin, user, or any word (ci, external…).")],
    ssh_key: SshKey = None, ssh_key_file: SshKeyFile = None, age: Age = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="A unix/home-manager account (repeatable).")] = None,
    root: RootOption = None, policy: PolicyOption = None, dry_run: DryRun = False, force: Force = False,
    rekey: Rekey = False, identity: Identity = None,
) -> None:
    """Add a person or service with its key."""
    from .. import lifecycle

    edit = lifecycle.identity_add(name, role, _key_spec(ssh_key, ssh_key_file, age), account or [])
    _run(edit, root, policy, dry_run, force, rekey, identity)
