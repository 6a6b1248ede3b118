"""Use cases that touch the disk: find the repo and policy, load it, generate and check `.sops.yaml`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from .engine import Generated, build_rules
from .errors import InputError, PolicyError
from .fsutil import (
    CONFIG_NAME,
    DEFAULT_POLICY_DIR,
    TEMP_SUFFIX,
    atomic_write,
    find_root,
    read_bytes,
)
from .model import Policy
from .policy import key_owners, load_policy

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Repo:
    """A repository root, its `.sops.yaml` path and its policy location."""

    root: Path
    policy_path: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    def display(self, path: Path) -> str:
        """A path as messages show it: relative to the root, `/`-separated."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def open_repo(cwd: Path, root: Path | None = None, policy: Path | None = None) -> Repo:
    found = find_root(cwd, root)
    policy_path = (policy if policy is not None else found / DEFAULT_POLICY_DIR).resolve()
    return Repo(found, policy_path)


def read_policy_sources(repo: Repo) -> list[tuple[str, bytes]]:
    """The policy file, or every *.yaml of the policy directory in name order."""
    path = repo.policy_path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"{repo.display(path)}: no *.yaml policy files in this directory")
    elif path.exists():
        files = [path]
    else:
        raise InputError(f"{repo.display(path)}: policy not found (create it, or pass --policy)")
    return [(repo.display(f), read_bytes(f, what="policy file")) for f in files]


def load(repo: Repo) -> Policy:
    return load_sources(repo, read_policy_sources(repo))


def load_sources(repo: Repo, sources: list[tuple[str, bytes]]) -> Policy:
    """Load policy files of this repository: keys that name a clan user or machine read its key.json."""
    from .clan import key_source

    return load_policy(sources, key_source(repo.root))


def clan_tree(repo: Repo, policy: Policy):  # type: ignore[no-untyped-def]
    """The repository's clan tree (clan.ClanTree), or None when it has none."""
    from .clan import read_tree

    return read_tree(repo.root, policy.settings.clan_root)


def selected_files(repo: Repo, policy: Policy, paths: list[Path] | None = None) -> list[str]:
    """Files a command works on: `.sops.yaml`-governed files, then clan secrets and vars, at or under PATH…."""
    return secrets_files(repo, policy, paths) + clan_files(repo, clan_tree(repo, policy), paths)


def clan_rules(repo: Repo, policy: Policy):  # type: ignore[no-untyped-def]
    """path -> the rule each clan secret's links make (or why it has none), for rekey and rotate; {} without clan."""
    tree = clan_tree(repo, policy)
    if tree is None:
        return {}
    # imported only for a clan tree: audit is a large module a plain rotate or rekey never uses
    from .audit import KeyIndex
    from .clanaudit import rekey_rules

    return rekey_rules(tree, KeyIndex.build(policy))


def clan_files(repo: Repo, tree, paths: list[Path] | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """Clan secrets and vars to look at: all of them, or those at or under PATH…."""
    if tree is None:
        return []
    if not paths:
        return [s.path for s in tree.secrets]
    wanted = [repo.display(p if p.is_absolute() else Path.cwd() / p) for p in paths]
    return [s.path for s in tree.secrets
            if any(w in (".", "") or s.path == w or s.path.startswith(w.rstrip("/") + "/") for w in wanted)]


def policy_label(repo: Repo) -> str:
    label = repo.display(repo.policy_path)
    return label + "/" if repo.policy_path.is_dir() else label


def creation_rules(policy: Policy) -> Generated:
    """The creation rules the policy generates; refuses when a rule cannot be made."""
    generated = build_rules(policy)
    if generated.errors:
        raise PolicyError(generated.errors)
    return generated


def generated_config(repo: Repo, policy: Policy) -> tuple[str, Generated]:
    """The `.sops.yaml` text the policy generates; refuses when a rule cannot be made."""
    from .sopsconfig import render

    generated = creation_rules(policy)
    return render(generated.rules, policy, key_owners(policy), policy_label(repo)), generated


@dataclass(frozen=True)
class CheckResult:
    up_to_date: bool
    diff: str


def check_config(repo: Repo, text: str) -> CheckResult:
    """Compare the generated text with `.sops.yaml` on disk, byte for byte."""
    path = repo.config_path
    current = read_bytes(path, what=".sops.yaml").decode("utf-8", "replace") if path.exists() else ""
    if current == text:
        return CheckResult(True, "")
    diff = difflib.unified_diff(
        current.splitlines(keepends=True), text.splitlines(keepends=True),
        fromfile=f"a/{CONFIG_NAME}" if path.exists() else "/dev/null", tofile=f"b/{CONFIG_NAME}",
    )
    return CheckResult(False, "".join(diff))


def write_config(repo: Repo, text: str, output: Path | None = None) -> Path:
    target = output if output is not None else repo.config_path
    atomic_write(target, text.encode("utf-8"))
    return target



def nested_configs(repo: Repo, policy: Policy) -> list[str]:
    """`.sops.yaml` files below the secrets dirs: sops run from there would use them instead."""
    found = []
    for directory in policy.settings.secrets_dirs:
        base = repo.root / directory
        if base.is_dir():
            found += sorted(repo.display(p) for p in base.rglob(CONFIG_NAME))
    return found


def lint(repo: Repo) -> list:
    """Lint problems of the repo's policy; a policy that does not load raises PolicyError."""
    from .lint import lint_policy

    policy = load(repo)
    tree = clan_tree(repo, policy)
    clan_problems = []
    if tree is not None:
        from .audit import KeyIndex
        from .clanaudit import lint_clan

        clan_problems = lint_clan(policy, tree, KeyIndex.build(policy))
    return lint_policy(policy, build_rules(policy), nested_configs(repo, policy), clan_problems)


# -- audit: walking the secrets tree ----------------------------------------------------------------


def _ignored(relative: str, patterns: tuple[str, ...]) -> bool:
    from . import regexes
    from .globs import glob_to_regex
    from .policy import ALWAYS_SKIPPED

    name = relative.rsplit("/", 1)[-1]
    if name in ALWAYS_SKIPPED or name.endswith(TEMP_SUFFIX):
        return True
    return any(regexes.compile_search(glob_to_regex(p)).search(relative) for p in patterns)


def secrets_files(repo: Repo, policy: Policy, paths: list[Path] | None = None) -> list[str]:
    """Repo-relative paths to audit: PATH… as given, else every file under the secrets dirs."""
    import os

    roots = paths if paths else [repo.root / d for d in policy.settings.secrets_dirs]
    prefix = str(repo.root) + os.sep
    clan_owned = _clan_prefixes(repo, policy)
    found: list[str] = []
    for base in roots:
        base = base if base.is_absolute() else (Path.cwd() / base)
        if paths and base.exists() and not base.resolve().is_relative_to(repo.root.resolve()):
            # never judged, re-keyed or rotated: a path (or a symlink) that leads out of the repository
            raise InputError(f"{base}: outside the repository ({repo.root}); sopsctl only works on files in it")
        if base.is_file():
            found.append(repo.display(base))
            continue
        if not base.is_dir():
            if paths:
                raise InputError(f"{base}: no such file or directory")
            continue
        base_text = str(base.resolve())
        for directory, dirnames, filenames in os.walk(base_text):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(directory, name)
                if os.path.islink(full):
                    continue  # never follow a link out of the repository
                # string slicing, not Path.resolve(): this runs once per file of the tree
                found.append(full[len(prefix):].replace(os.sep, "/") if full.startswith(prefix)
                             else repo.display(Path(full)))
    # clan secrets and vars follow their links, not .sops.yaml: they are audited apart (clan_files)
    return [p for p in dict.fromkeys(found)
            if not _ignored(p, policy.settings.ignore) and not (clan_owned and p.startswith(clan_owned))]


def _clan_prefixes(repo: Repo, policy: Policy) -> tuple[str, ...]:
    """Repo-relative folders that belong to clan (its sops/ and vars/), not to `.sops.yaml`."""
    from .clan import find_clan_root

    clan_root = find_clan_root(repo.root, policy.settings.clan_root)
    if clan_root is None:
        return ()
    base = "" if clan_root == repo.root.resolve() else repo.display(clan_root) + "/"
    return (f"{base}sops/", f"{base}vars/")


def _clan_owned(repo: Repo, policy: Policy, relative: str) -> bool:
    prefixes = _clan_prefixes(repo, policy)
    return bool(prefixes) and relative.startswith(prefixes)


def scan_file(root: Path, relative: str):  # type: ignore[no-untyped-def]
    """Read one file's sops metadata; never raises for bad content (that is a finding)."""
    import os

    from .audit import ScannedFile
    from .formats import MetadataError, detect_format, read_metadata

    fmt = detect_format(relative)
    try:
        with open(os.path.join(root, relative), "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_SECRET_FILE:
                return ScannedFile(relative, fmt, error=f"{size} bytes, over the {MAX_SECRET_FILE}-byte limit")
            data = handle.read()
    except OSError as exc:
        return ScannedFile(relative, fmt, error=f"cannot read it: {exc.strerror or exc}")
    try:
        return ScannedFile(relative, fmt, metadata=read_metadata(data, fmt))
    except MetadataError as exc:
        return ScannedFile(relative, fmt, error=str(exc))


MAX_SECRET_FILE = 64 * 1024 * 1024


def scan_files(repo: Repo, relatives: list[str], progress=None) -> list:  # type: ignore[no-untyped-def]
    """Scan files in this process.

    Measured on 10,000 files (2 cores): a pool of two processes was no faster (0.75 s vs 0.78 s),
    because rebuilding the results in the parent costs about what parsing them does.
    """
    result = []
    for count, relative in enumerate(relatives, 1):
        result.append(scan_file(repo.root, relative))
        if progress and count % 250 == 0:
            progress(250)
    if progress and len(relatives) % 250:
        progress(len(relatives) % 250)
    return result


@dataclass(frozen=True)
class AuditRun:
    policy: Policy
    report: object  # audit.AuditReport
    scanned: list  # audit.ScannedFile, for views that need the files' own metadata (matrix)


def audit_tree(repo: Repo, paths: list[Path] | None = None, progress=None) -> AuditRun:  # type: ignore[no-untyped-def]
    """Load, list, scan and judge. `progress(total)` may return a per-step callback (a progress bar)."""
    from .audit import audit

    policy = load(repo)
    text, generated = generated_config(repo, policy)
    tree = clan_tree(repo, policy)
    relatives = secrets_files(repo, policy, paths) + clan_files(repo, tree, paths)
    scanned = scan_files(repo, relatives, progress(len(relatives)) if progress else None)
    stale = not check_config(repo, text).up_to_date
    return AuditRun(policy, audit(policy, generated.rules, scanned, config_stale=stale, clan=tree), scanned)


def run_audit(repo: Repo, paths: list[Path] | None = None, progress=None):  # type: ignore[no-untyped-def]
    run = audit_tree(repo, paths, progress)
    return run.policy, run.report


def who(repo: Repo, path: Path):  # type: ignore[no-untyped-def]
    """Readers of a file from its own metadata, or from the policy's rule when it does not exist yet."""
    from .audit import KeyIndex
    from .audit import who as who_report
    from .engine import match_rule
    from .model import FileKey

    policy = load(repo)
    index = KeyIndex.build(policy)
    full = path if path.is_absolute() else Path.cwd() / path
    relative = repo.display(full)
    if full.exists():
        scanned = scan_file(repo.root, relative)
        if scanned.error:
            raise InputError(f"{relative}: {scanned.error}")
        if scanned.metadata is None:
            raise InputError(f"{relative}: not SOPS-encrypted, so nobody's key is needed to read it")
        meta = scanned.metadata
        return who_report(relative, meta.groups, meta.effective_threshold, "file", index)
    if _clan_owned(repo, policy, relative):
        raise InputError(f"{relative}: does not exist; in clan, the links beside a secret decide who reads it, "
                         "not .sops.yaml")
    _, generated = generated_config(repo, policy)
    position = match_rule(generated.rules, relative)
    if position is None:
        raise InputError(f"{relative}: does not exist and no class governs it (sops would refuse to create it)")
    rule = generated.rules[position]
    groups = tuple(tuple(FileKey(k.kind, k.recipient) for k in g) for g in rule.key_groups)
    return who_report(relative, groups, rule.effective_threshold, "policy", index)


def access(repo: Repo, selector_text: str):  # type: ignore[no-untyped-def]
    """(subject label, accesses) for a selector: the files its keys open, directly or transitively."""
    from .audit import KeyIndex, ReadGraph
    from .engine import Resolver
    from .errors import UsageError
    from .policy import check_references, parse_selector

    policy = load(repo)
    try:
        selector = parse_selector(selector_text, None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    bad = check_references(policy, [], []) + [p for p in _selector_problems(policy, selector)]
    if bad:
        raise InputError("; ".join(p.message for p in bad))
    resolver = Resolver(policy)
    keys = set(resolver.keys_of(selector, {}))
    if selector.kind in ("identity", "host"):  # retired entities still read what they were given
        entity = (policy.identities if selector.kind == "identity" else policy.hosts)[selector.arg or ""]
        keys |= set(entity.keys)
    elif selector.kind == "key":
        keys.add(selector.arg or "")
    index = KeyIndex.build(policy)
    relatives = secrets_files(repo, policy) + clan_files(repo, clan_tree(repo, policy))
    scanned = scan_files(repo, relatives)
    return str(selector), ReadGraph(policy, index, scanned).access(keys)


def _selector_problems(policy: Policy, selector):  # type: ignore[no-untyped-def]
    from .model import Problem

    tables = {"identity": policy.identities, "hosts-of": policy.identities, "host": policy.hosts,
              "admins-of": policy.hosts, "users-of": policy.hosts, "primary-of": policy.hosts,
              "key": policy.keys, "group": policy.groups}
    table = tables.get(selector.kind)
    if table is not None and selector.arg not in table:
        yield Problem("reference", f"'{selector}' names no {selector.kind.split('-')[0]} '{selector.arg}'")


# -- life events: edit the policy, regenerate, list what changes -------------------------------------


@dataclass(frozen=True)
class LifeEvent:
    """What a life event did (or, with --dry-run, would do)."""

    policy_diff: str
    changes: list  # FileChange
    notes: list[str]
    written: list[str]


def _source_path(repo: Repo, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else repo.root / path


def life_event(repo: Repo, edit, *, dry_run: bool = False, force: bool = False) -> LifeEvent:  # type: ignore[no-untyped-def]
    """Apply `edit(editor, policy) -> notes` to the policy files, validate, regenerate, report.

    Nothing is written unless the edited policy loads, generates, and (without `force`) keeps
    every class readable by an admin or an always_readers key.
    """
    from .audit import KeyIndex
    from .changes import access_changes
    from .lint import lockout_problems
    from .policyedit import PolicyEditor

    sources = read_policy_sources(repo)
    old_policy = load_sources(repo, sources)
    editor = PolicyEditor.load(sources)
    notes = list(edit(editor, old_policy))
    edited = {name: new for name, _, new in editor.texts()}
    new_sources = [(name, edited.get(name, data)) for name, data in sources]
    new_policy = load_sources(repo, new_sources)
    new_text, new_generated = generated_config(repo, new_policy)
    old_rules = build_rules(old_policy).rules
    before = {p.message for p in lockout_problems(old_policy, old_rules)}
    lockouts = [p for p in lockout_problems(new_policy, new_generated.rules) if p.message not in before]
    if lockouts and not force:
        raise PolicyError([*lockouts, "refusing the change (nothing was written); rerun with --force to make it "
                           "anyway"])
    diff = "".join(
        "".join(difflib.unified_diff(old.decode().splitlines(keepends=True), new.decode().splitlines(keepends=True),
                                     fromfile=f"a/{name}", tofile=f"b/{name}"))
        for name, old, new in editor.texts())
    old_index, new_index = KeyIndex.build(old_policy), KeyIndex.build(new_policy)
    changes = access_changes(secrets_files(repo, new_policy), old_rules, new_generated.rules,
                             old_index.subject_of, new_index.subject_of)
    changes += _clan_changes(clan_tree(repo, new_policy), old_index, new_index)
    written: list[str] = []
    if not dry_run:
        from .fsutil import repo_lock

        with repo_lock(repo.root):
            for name, _, new in editor.texts():
                atomic_write(_source_path(repo, name), new)
                written.append(name)
            write_config(repo, new_text)
            written.append(repo.display(repo.config_path))
    return LifeEvent(diff, changes, notes, written)


def _clan_changes(tree, old_index, new_index) -> list:  # type: ignore[no-untyped-def]
    """Clan secrets whose readers a policy change moves: the links stay, but retired keys drop out."""
    if tree is None:
        return []
    from .changes import rule_changes
    from .clanaudit import rekey_rules

    before, after = rekey_rules(tree, old_index), rekey_rules(tree, new_index)
    pairs = [(path, rule, after[path]) for path, rule in sorted(before.items())
             if not isinstance(rule, str) and not isinstance(after[path], str)]
    return rule_changes(pairs, old_index.subject_of, new_index.subject_of)


# -- diff: access changes between two policies or two .sops.yaml files ---------------------------------


def _named(rules, index):  # type: ignore[no-untyped-def]
    """Rules parsed from a .sops.yaml carry bare recipients: name them after the policy's keys."""
    from dataclasses import replace

    return tuple(replace(rule, key_groups=tuple(tuple(replace(k, name=k.name or index.key_of(k.recipient))
                                                      for k in g) for g in rule.key_groups)) for rule in rules)


def _git(repo: Repo, *args: str) -> bytes:
    import subprocess

    result = subprocess.run(["git", *args], cwd=repo.root, capture_output=True, timeout=60)
    if result.returncode != 0:
        raise InputError(f"git {' '.join(args)}: {result.stderr.decode(errors='replace').strip() or 'failed'}")
    return result.stdout


def rules_against(repo: Repo, against: str | None):  # type: ignore[no-untyped-def]
    """The 'before' rules: a .sops.yaml or policy FILE/dir, a git revision of the policy, or (default)
    the .sops.yaml on disk."""
    from .sopsconfig import parse_rules

    if against is None:
        return parse_rules(read_bytes(repo.config_path, what=".sops.yaml"), repo.display(repo.config_path)), None
    path = Path(against)
    if path.exists():
        if path.is_file():
            data = read_bytes(path, what="file to compare with")
            if b"creation_rules" in data:
                return parse_rules(data, against), None
            old = load_sources(repo, [(against, data)])
        else:
            old = load(Repo(repo.root, path.resolve()))
        return build_rules(old).rules, old
    # a git revision: the policy as it was committed there (paths relative to the repo root, `REV:./…`)
    relative = repo.display(repo.policy_path)
    if repo.policy_path.is_dir():
        listed = _git(repo, "ls-tree", "--name-only", against, f"{relative}/").decode().splitlines()
        names = sorted(n for n in listed if n.endswith(POLICY_SUFFIXES))
        if not names:
            raise InputError(f"{against}: no policy files under {relative}/ at that revision")
    else:
        names = [relative]
    old = load_sources(repo, [(f"{against}:{name}", _git(repo, "show", f"{against}:./{name}")) for name in names])
    return build_rules(old).rules, old


def diff(repo: Repo, against: str | None = None):  # type: ignore[no-untyped-def]
    """(file changes, keys added, keys removed), from `against` to now.

    Two .sops.yaml files: `against` is one, the .sops.yaml on disk the other. Two policies:
    `against` is a policy file, folder or git revision, the current policy the other. Nothing
    given: the .sops.yaml on disk against what the policy generates (what `generate` would do).
    """
    from .audit import KeyIndex
    from .changes import access_changes, recipients_of
    from .sopsconfig import parse_rules

    policy = load(repo)
    index = KeyIndex.build(policy)
    old_rules, old_policy = rules_against(repo, against)
    two_configs = against is not None and old_policy is None
    if two_configs:
        new_rules = _named(parse_rules(read_bytes(repo.config_path, what=".sops.yaml")), index)
    else:
        new_rules = build_rules(policy).rules
    old_index = KeyIndex.build(old_policy) if old_policy is not None else index
    old_rules = _named(old_rules, old_index)
    changes = access_changes(secrets_files(repo, policy), old_rules, new_rules, old_index.subject_of,
                             index.subject_of)
    if not two_configs:  # between two policies, a retirement also moves clan files' readers
        changes += _clan_changes(clan_tree(repo, policy), old_index, index)
    added = sorted(recipients_of(new_rules) - recipients_of(old_rules))
    removed = sorted(recipients_of(old_rules) - recipients_of(new_rules))
    return changes, [index.subject(r) for r in added], [old_index.subject(r) for r in removed]
