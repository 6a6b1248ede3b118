"""Policy YAML (one file or several) -> a validated Policy, every problem named by file:line."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import yaml

from . import globs, regexes
from .crypto import agekeys
from .errors import KeyFormatError, PolicyError
from .model import (
    ACTIVE,
    RETIRED,
    SELECTOR_KINDS_BARE,
    SELECTOR_KINDS_WITH_ARG,
    Host,
    Identity,
    Key,
    KeyBearing,
    Policy,
    PolicyClass,
    Problem,
    Selector,
    Settings,
    SourceRef,
)
from .references import PLACEHOLDER_RE, account_owners, check_references, key_owners
from .yamlnodes import Doc, YamlProblem, compose

__all__ = ["PLACEHOLDER_RE", "account_owners", "check_references", "key_owners", "load_policy", "parse_selector"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PLACEHOLDERS = ("host", "identity", "account")
SECTIONS = ("version", "settings", "keys", "identities", "hosts", "groups", "classes", "key_bearing")
RELATIONS = ("primary", "admin", "user")
CRYPT_OPTIONS = (
    "encrypted_suffix",
    "unencrypted_suffix",
    "encrypted_regex",
    "unencrypted_regex",
    "encrypted_comment_regex",
    "unencrypted_comment_regex",
)
PASS_THROUGH = (*CRYPT_OPTIONS, "mac_only_encrypted")
ALWAYS_SKIPPED = (".keep", ".gitkeep", ".gitignore", ".gitattributes")


@dataclass
class _Collector:
    """Accumulates problems so one run reports all of them, not just the first."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, code: str, message: str, source: SourceRef | None) -> None:
        self.problems.append(Problem(code, message, source))

    def guard(self, action: Callable[[], object]) -> object | None:
        try:
            return action()
        except YamlProblem as exc:
            self.problems.append(exc.problem)
            return None


def parse_selector(text: str, source: SourceRef | None) -> Selector:
    """`kind:arg` or a bare kind; raises ValueError with the reason."""
    kind, sep, arg = text.strip().partition(":")
    if not sep:
        if kind in SELECTOR_KINDS_BARE:
            return Selector(kind, None, source)
        if kind in SELECTOR_KINDS_WITH_ARG:
            raise ValueError(f"selector '{text}' needs a name: {kind}:NAME")
        raise ValueError(f"unknown selector '{text}' (expected kind:name, e.g. identity:alice, or 'hosts')")
    if kind not in SELECTOR_KINDS_WITH_ARG:
        known = ", ".join((*SELECTOR_KINDS_WITH_ARG, *SELECTOR_KINDS_BARE))
        raise ValueError(f"unknown selector kind '{kind}' in '{text}' (known: {known})")
    if not arg or not (NAME_RE.match(arg) or PLACEHOLDER_RE.fullmatch(arg)):
        raise ValueError(f"selector '{text}': '{arg}' is not a valid name or placeholder")
    return Selector(kind, arg, source)


class _Reader:
    """Reads the sections of every policy file into raw entities, then checks references."""

    def __init__(self) -> None:
        self.out = _Collector()
        self.settings_seen: dict[str, SourceRef] = {}
        self.settings_values: dict[str, object] = {}
        self.keys: dict[str, Key] = {}
        self.identities: dict[str, Identity] = {}
        self.hosts: dict[str, Host] = {}
        self.groups: dict[str, tuple[Selector, ...]] = {}
        self.group_sources: dict[str, SourceRef] = {}
        self.classes: list[PolicyClass] = []
        self.classes_file: SourceRef | None = None
        self.key_bearing: list[KeyBearing] = []

    # -- files and sections -------------------------------------------------------------

    def read_file(self, name: str, data: bytes) -> None:
        doc = Doc(name)
        try:
            root = compose(name, data)
        except YamlProblem as exc:
            self.out.problems.append(exc.problem)
            return
        if root is None:
            return  # an empty file adds nothing
        entries = self.out.guard(lambda: doc.mapping(root, "a policy file"))
        if entries is None:
            return
        readers = {
            "version": self._version,
            "settings": self._settings,
            "keys": self._keys,
            "identities": self._identities,
            "hosts": self._hosts,
            "groups": self._groups,
            "classes": self._classes,
            "key_bearing": self._key_bearing,
        }
        for section, key_node, value in entries:  # type: ignore[union-attr]
            reader = readers.get(section)
            if reader is None:
                self.out.add("schema", f"unknown section '{section}' (expected one of: {', '.join(SECTIONS)})",
                             doc.where(key_node))
                continue
            if isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null"):
                continue  # `hosts:` with nothing under it
            self.out.guard(lambda r=reader, v=value, k=key_node: r(doc, v, k))

    def _name(self, doc: Doc, node: yaml.Node, name: str, what: str, seen: dict, sources: Callable) -> bool:
        if not NAME_RE.match(name):
            self.out.add("schema", f"{what} name '{name}' may only use letters, digits, '.', '_' and '-'",
                         doc.where(node))
            return False
        if name in seen:
            self.out.add("duplicate", f"{what} '{name}' is defined twice: here and at {sources(seen[name])}",
                         doc.where(node))
            return False
        return True

    def _fields(self, doc: Doc, node: yaml.Node, what: str, allowed: Sequence[str]) -> dict[str, yaml.Node]:
        values: dict[str, yaml.Node] = {}
        for key, key_node, value in doc.mapping(node, what):
            if key not in allowed:
                raise doc.fail(key_node, f"{what}: unknown field '{key}' (expected one of: {', '.join(allowed)})")
            values[key] = value
        return values

    def _version(self, doc: Doc, node: yaml.Node, key_node: yaml.Node) -> None:
        if doc.integer(node, "version") != 1:
            raise doc.fail(node, "unsupported policy version (this sopsctl reads version: 1)")

    def _settings(self, doc: Doc, node: yaml.Node, key_node: yaml.Node) -> None:
        allowed = ("secrets_dirs", "always_readers", "fallback", "host_key_form", "ignore", "clan_root")
        for key, knode, value in doc.mapping(node, "settings"):
            if key not in allowed:
                self.out.add("schema", f"settings: unknown setting '{key}' (expected one of: {', '.join(allowed)})",
                             doc.where(knode))
                continue
            if key in self.settings_seen:
                self.out.add("duplicate", f"setting '{key}' is set twice: here and at {self.settings_seen[key]}",
                             doc.where(knode))
                continue
            self.settings_seen[key] = doc.where(knode)
            if key in ("secrets_dirs", "ignore"):
                items = doc.strings(value, f"settings.{key}")
                for text, item in items:
                    self.out.guard(lambda t=text, i=item, k=key: self._check_glob(doc, i, t, f"settings.{k}"))
                self.settings_values[key] = tuple(t.rstrip("/") for t, _ in items)
            elif key == "always_readers":
                self.settings_values[key] = self._selectors(doc, value, "settings.always_readers")
            elif key == "fallback":
                self.settings_values[key] = (doc.string(value, "settings.fallback"), doc.where(value))
            elif key == "clan_root":
                folder = doc.string(value, "settings.clan_root").rstrip("/") or "."
                if folder.startswith("/") or ".." in folder.split("/"):
                    raise doc.fail(value, "settings.clan_root must be a folder inside the repository, relative to it")
                self.settings_values[key] = folder
            else:
                form = doc.string(value, "settings.host_key_form")
                if form not in ("age", "ssh"):
                    raise doc.fail(value, "settings.host_key_form must be 'age' or 'ssh'")
                self.settings_values[key] = form

    def _check_glob(self, doc: Doc, node: yaml.Node, text: str, what: str) -> None:
        try:
            globs.validate_glob(PLACEHOLDER_RE.sub("x", text))
        except ValueError as exc:
            raise doc.fail(node, f"{what}: bad path glob '{text}': {exc}") from None

    def _status(self, doc: Doc, fields: dict[str, yaml.Node], what: str) -> str:
        node = fields.get("status")
        if node is None:
            return ACTIVE
        status = doc.string(node, f"{what}.status")
        if status not in (ACTIVE, RETIRED):
            raise doc.fail(node, f"{what}.status must be 'active' or 'retired', not '{status}'")
        return status

    # -- keys -----------------------------------------------------------------------------

    def _entries(self, doc: Doc, node: yaml.Node, section: str, noun: str, table: dict,
                 read: Callable[[str, yaml.Node], object]) -> None:
        """Each `name: {…}` of a section: a valid, new name, read on its own so one bad entry
        does not hide the problems of the others."""
        for name, name_node, value in doc.mapping(node, section):
            if self._name(doc, name_node, name, noun, table, lambda entity: entity.source):
                entity = self.out.guard(lambda n=name, v=value: read(n, v))
                if entity is not None:
                    table[name] = entity

    def _keys(self, doc: Doc, node: yaml.Node, key_node: yaml.Node) -> None:
        self._entries(doc, node, "keys", "key", self.keys, lambda n, v: self._key(doc, n, v))

    def _key(self, doc: Doc, name: str, node: yaml.Node) -> Key:
        where = doc.where(node)
        if isinstance(node, yaml.ScalarNode):  # shorthand: `recovery: age1…` or `host: ssh-ed25519 …`
            text = doc.string(node, f"key '{name}'")
            fields_text = {"ssh" if text.startswith("ssh-") else "age": text}
            status, retired, note = ACTIVE, None, None
            clan = {}
        else:
            fields = self._fields(doc, node, f"key '{name}'", ("age", "ssh", "pgp", "clan_user", "clan_machine",
                                                                "status", "retired", "note"))
            fields_text = {k: doc.string(fields[k], f"key '{name}'.{k}") for k in ("age", "ssh", "pgp") if k in fields}
            clan = {k: doc.string(fields[k], f"key '{name}'.{k}") for k in ("clan_user", "clan_machine")
                    if k in fields}
            status = self._status(doc, fields, f"key '{name}'")
            retired = doc.date_text(fields["retired"], f"key '{name}'.retired") if "retired" in fields else None
            note = doc.string(fields["note"], f"key '{name}'.note") if "note" in fields else None
            if retired is not None and "status" not in fields:
                status = RETIRED  # a retirement date says it all
        if len(clan) > 1:
            raise doc.fail(node, f"key '{name}': give clan_user or clan_machine, not both")
        if not fields_text and not clan:
            raise doc.fail(node, f"key '{name}' needs an age recipient, an ssh public key, a pgp fingerprint, "
                                 "or a clan_user / clan_machine to read it from")
        if clan and "pgp" in fields_text:
            raise doc.fail(node, f"key '{name}': a clan key is an age key; give the pgp key in another key")
        if "pgp" in fields_text and len(fields_text) > 1:
            raise doc.fail(node, f"key '{name}': a pgp key is its own key; give age/ssh in another key")
        age = ssh = pgp = None
        try:
            if "ssh" in fields_text:
                parsed = agekeys.parse_ssh_public_key(fields_text["ssh"])
                ssh = parsed.key
                derived = agekeys.ssh_to_age_recipient(parsed)
            if "age" in fields_text:
                age = agekeys.validate_age_recipient(fields_text["age"])
            if ssh is not None:
                if age is not None and age != derived:
                    raise doc.fail(node, f"key '{name}': age {age} is not the ssh-to-age form of its ssh key "
                                         f"(that is {derived}); fix one of them")
                age = derived
            if "pgp" in fields_text:
                pgp = _pgp_fingerprint(fields_text["pgp"])
        except (KeyFormatError, ValueError) as exc:
            raise doc.fail(node, f"key '{name}': {exc}", "key-format") from None
        return Key(name, age=age, ssh=ssh, pgp=pgp, status=status, retired=retired, note=note, source=where,
                   clan_user=clan.get("clan_user"), clan_machine=clan.get("clan_machine"))

    # -- identities, hosts, groups ---------------------------------------------------------

    def _identities(self, doc: Doc, node: yaml.Node, key_node: yaml.Node) -> None:
        allowed = ("role", "accounts", "keys", "status", "note")

        def read(n: str, v: yaml.Node) -> Identity:
            fields = self._fields(doc, v, f"identity '{n}'", allowed)
            role = doc.string(fields["role"], f"identity '{n}'.role") if "role" in fields else "user"
            accounts = [t for t, _ in doc.strings(fields["accounts"], f"identity '{n}'.accounts")] \
                if "accounts" in fields else [n]
            for account in accounts:
                if not NAME_RE.match(account):
                    raise doc.fail(fields["accounts"], f"identity '{n}': bad account name '{account}'")
            keys = self._key_refs(doc, fields.get("keys"), f"identity '{n}'")
            return Identity(n, role, tuple(accounts), keys, self._status(doc, fields, f"identity '{n}'"),
                            doc.where(v))

        self._entries(doc, node, "identities", "identity", self.identities, read)

    def _hosts(self, doc: Doc, node: yaml.Node, key_node: yaml.Node) -> None:
        allowed = ("platform", "keys", "users", "status", "note")

        def read(n: str, v: yaml.Node) -> Host:
            fields = self._fields(doc, v, f"host '{n}'", allowed)
            platform = doc.string(fields["platform"], f"host '{n}'.platform") if "platform" in fields else None
            users: dict[str, str] = {}
            if "users" in fields:
                for account, anode, rel in doc.mapping(fields["users"], f"host '{n}'.users"):
                    relation = doc.string(rel, f"host '{n}'.users.{account}")
                    if relation not in RELATIONS:
                        raise doc.fail(rel, f"host '{n}': account '{account}' has relation '{relation}' "
                                            f"(expected one of: {', '.join(RELATIONS)})")
                    users[account] = relation
                    self._account_refs.append((account, doc.where(anode), n))
            keys = self._key_refs(doc, fields.get("keys"), f"host '{n}'")
            return Host(n, platform, keys, users, self._status(doc, fields, f"host '{n}'"), doc.where(v))

        self._entries(doc, node, "hosts", "host", self.hosts, read)

    _account_refs: list[tuple[str, SourceRef, str]]

    def _key_refs(self, doc: Doc, node: yaml.Node | None, what: str) -> tuple[str, ...]:
        if node is None:
            return ()
        refs = doc.strings(node, f"{what}.keys")
        for text, item in refs:
            self._key_ref_sources.append((text, doc.where(item), what))
        return tuple(t for t, _ in refs)

    _key_ref_sources: list[tuple[str, SourceRef, str]]

    def _groups(self, doc: Doc, node: yaml.Node, key_node: yaml.Node) -> None:
        for name, name_node, value in doc.mapping(node, "groups"):
            if self._name(doc, name_node, name, "group", self.groups, lambda _, n=name: self.group_sources[n]):
                self.groups[name] = self._selectors(doc, value, f"group '{name}'")
                self.group_sources[name] = doc.where(name_node)

    def _selectors(self, doc: Doc, node: yaml.Node, what: str) -> tuple[Selector, ...]:
        selectors = []
        for text, item in doc.strings(node, what):
            try:
                selectors.append(parse_selector(text, doc.where(item)))
            except ValueError as exc:
                self.out.add("selector", f"{what}: {exc}", doc.where(item))
        return tuple(selectors)

    # -- classes and key_bearing --------------------------------------------------------------

    def _classes(self, doc: Doc, node: yaml.Node, key_node: yaml.Node) -> None:
        if self.classes_file is not None:
            raise doc.fail(key_node, f"'classes' may appear in one policy file only (already in "
                                     f"{self.classes_file.file}); their order is precedence")
        self.classes_file = doc.where(key_node)
        names: dict[str, SourceRef] = {}
        for item in doc.sequence(node, "classes"):
            cls = self.out.guard(lambda i=item: self._class(doc, i))
            if cls is None:
                continue
            if cls.name in names:  # type: ignore[union-attr]
                self.out.add("duplicate", f"class '{cls.name}' is defined twice: here and at "  # type: ignore[union-attr]
                             f"{names[cls.name]}", cls.source)  # type: ignore[union-attr]
                continue
            names[cls.name] = cls.source  # type: ignore[union-attr,index]
            self.classes.append(cls)  # type: ignore[arg-type]

    def _class(self, doc: Doc, node: yaml.Node) -> PolicyClass:
        allowed = ("name", "path", "paths", "path_regex", "readers", "key_groups", "threshold", "sops", "note")
        fields = self._fields(doc, node, "class", allowed)
        if "name" not in fields:
            raise doc.fail(node, "every class needs a name")
        name = doc.string(fields["name"], "class name")
        if not NAME_RE.match(name):
            raise doc.fail(fields["name"], f"class name '{name}' may only use letters, digits, '.', '_' and '-'")
        what = f"class '{name}'"
        given = [k for k in ("path", "paths", "path_regex") if k in fields]
        if len(given) > 1:
            raise doc.fail(node, f"{what}: give one of path, paths or path_regex, not {' and '.join(given)}")
        paths: tuple[str, ...] = ()
        path_regex = None
        if "path" in fields or "paths" in fields:
            field_name = given[0]
            items = doc.strings(fields[field_name], f"{what}.{field_name}")
            if not items:
                raise doc.fail(fields[field_name], f"{what}: {field_name} is empty")
            for text, item in items:
                self._check_glob(doc, item, text, what)
            paths = tuple(t for t, _ in items)
        elif "path_regex" in fields:
            path_regex = doc.string(fields["path_regex"], f"{what}.path_regex")
            try:
                regexes.check_re2(PLACEHOLDER_RE.sub("x", path_regex))
            except ValueError as exc:
                raise doc.fail(fields["path_regex"], f"{what}: path_regex is not RE2-compatible: {exc}") from None
        if ("readers" in fields) == ("key_groups" in fields):
            raise doc.fail(node, f"{what}: give either readers (one key group) or key_groups")
        if "readers" in fields:
            groups: tuple[tuple[Selector, ...], ...] = (self._selectors(doc, fields["readers"], f"{what}.readers"),)
            if "threshold" in fields:
                raise doc.fail(fields["threshold"], f"{what}: threshold needs key_groups")
        else:
            group_nodes = doc.sequence(fields["key_groups"], f"{what}.key_groups")
            if not group_nodes:
                raise doc.fail(fields["key_groups"], f"{what}: key_groups is empty")
            groups = tuple(self._selectors(doc, g, f"{what}.key_groups[{i}]") for i, g in enumerate(group_nodes))
        threshold = doc.integer(fields["threshold"], f"{what}.threshold") if "threshold" in fields else None
        options = self._sops_options(doc, fields.get("sops"), what)
        cls = PolicyClass(name, paths, path_regex, groups, threshold, options, doc.where(node))
        self._check_placeholders(doc, node, cls)
        return cls

    def _sops_options(self, doc: Doc, node: yaml.Node | None, what: str) -> tuple[tuple[str, object], ...]:
        if node is None:
            return ()
        options: list[tuple[str, object]] = []
        for key, knode, value in doc.mapping(node, f"{what}.sops"):
            if key not in PASS_THROUGH:
                raise doc.fail(knode, f"{what}.sops: '{key}' is not passed through (allowed: {', '.join(PASS_THROUGH)};"
                                      " keys and groups come from readers)")
            if key == "mac_only_encrypted":
                options.append((key, doc.boolean(value, f"{what}.sops.{key}")))
            else:
                text = doc.string(value, f"{what}.sops.{key}")
                if key.endswith("regex"):
                    try:
                        regexes.check_re2(text)
                    except ValueError as exc:
                        raise doc.fail(value, f"{what}.sops.{key} is not RE2-compatible: {exc}") from None
                options.append((key, text))
        crypt = [k for k, _ in options if k in CRYPT_OPTIONS]
        if len(crypt) > 1:
            raise doc.fail(node, f"{what}.sops: sops allows only one of {', '.join(CRYPT_OPTIONS)}; got {', '.join(crypt)}")
        return tuple(sorted(options))

    def _check_placeholders(self, doc: Doc, node: yaml.Node, cls: PolicyClass) -> None:
        texts = cls.paths or ((cls.path_regex,) if cls.path_regex else ())
        used = [frozenset(PLACEHOLDER_RE.findall(t)) for t in texts]
        if used and any(u != used[0] for u in used):
            raise doc.fail(node, f"class '{cls.name}': every path must use the same placeholders")
        bound = set(used[0]) if used else set()
        if "account" in bound:
            bound.add("identity")
        for group in cls.key_groups:
            for selector in group:
                placeholder = PLACEHOLDER_RE.fullmatch(selector.arg or "")
                if placeholder and placeholder.group(1) not in bound:
                    self.out.add("template", f"class '{cls.name}': selector '{selector}' uses "
                                 f"{{{placeholder.group(1)}}} but no path of the class binds it", selector.source)

    def _key_bearing(self, doc: Doc, node: yaml.Node, key_node: yaml.Node) -> None:
        for path, pnode, value in doc.mapping(node, "key_bearing"):
            text = doc.string(value, f"key_bearing '{path}'")
            try:
                holder = parse_selector(text, doc.where(value)) if ":" in text else Selector("holder", text,
                                                                                              doc.where(value))
            except ValueError as exc:
                self.out.add("selector", f"key_bearing '{path}': {exc}", doc.where(value))
                continue
            self.key_bearing.append(KeyBearing(path, holder, doc.where(pnode)))

    # -- assembling --------------------------------------------------------------------------

    def policy(self, sources: tuple[str, ...]) -> Policy:
        values = self.settings_values
        fallback = None
        if "fallback" in values:
            name, where = values["fallback"]  # type: ignore[misc]
            if name != "deny":
                fallback = name
                if not self.classes or self.classes[-1].name != name:
                    self.out.add("reference", f"settings.fallback '{name}' must name the last class", where)
        settings = Settings(
            secrets_dirs=values.get("secrets_dirs", ("secrets",)),  # type: ignore[arg-type]
            always_readers=values.get("always_readers", ()),  # type: ignore[arg-type]
            fallback=fallback,
            host_key_form=values.get("host_key_form", "age"),  # type: ignore[arg-type]
            ignore=values.get("ignore", ()),  # type: ignore[arg-type]
            clan_root=values.get("clan_root"),  # type: ignore[arg-type]
        )
        for cls in self.classes[:-1]:
            if cls.is_catch_all:
                self.out.add("reference", f"class '{cls.name}' has no path, so it matches every file: it must be "
                             "the last class (and named by settings.fallback)", cls.source)
        if self.classes and self.classes[-1].is_catch_all and fallback != self.classes[-1].name:
            self.out.add("reference", f"class '{self.classes[-1].name}' has no path (a catch-all) but "
                         f"settings.fallback is deny; set `fallback: {self.classes[-1].name}` to mean it",
                         self.classes[-1].source)
        return Policy(settings, self.keys, self.identities, self.hosts, self.groups, tuple(self.classes),
                      tuple(self.key_bearing), sources)


def _pgp_fingerprint(text: str) -> str:
    fingerprint = text.replace(" ", "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}|[0-9A-F]{64}", fingerprint):
        raise ValueError(f"pgp fingerprint '{text}' must be 40 (or 64) hex digits")
    return fingerprint


ClanKeys = Callable[[str | None], Mapping[tuple[str, str], tuple[str, ...]]]


def _resolve_clan_keys(policy: Policy, clan_keys: ClanKeys | None) -> tuple[Policy, list[Problem]]:
    """Fill in the recipient of each key that only says `clan_user:` / `clan_machine:` from clan's key.json.

    A key that gives its own recipient keeps it (lint reports when clan's key.json disagrees)."""
    pending = {n: k for n, k in policy.keys.items() if k.age is None and (k.clan_user or k.clan_machine)}
    if not pending:
        return policy, []
    table = clan_keys(policy.settings.clan_root) if clan_keys is not None else {}
    keys, problems = dict(policy.keys), []
    for name, key in pending.items():
        kind, entity = ("user", key.clan_user) if key.clan_user else ("machine", key.clan_machine)
        recipients = table.get((kind, entity or ""), ())
        if len(recipients) != 1:
            why = (f"clan has no {kind} '{entity}' (no sops/{kind}s/{entity}/key.json)" if not recipients else
                   f"clan {kind} '{entity}' has {len(recipients)} age keys; name each in a key of its own")
            problems.append(Problem("reference", f"key '{name}': {why}", key.source))
            continue
        keys[name] = replace(key, age=recipients[0])
    return replace(policy, keys=keys), problems


def load_policy(sources: Sequence[tuple[str, bytes]], clan_keys: ClanKeys | None = None) -> Policy:
    """Read and validate policy files given as (display name, bytes); raises PolicyError with every problem.

    `clan_keys(clan_root)` gives clan's key.json recipients by (user|machine, name), for keys that name them."""
    reader = _Reader()
    reader._account_refs = []
    reader._key_ref_sources = []
    for name, data in sources:
        reader.read_file(name, data)
    policy = reader.policy(tuple(name for name, _ in sources))
    policy, clan_problems = _resolve_clan_keys(policy, clan_keys)
    problems = (reader.out.problems + clan_problems
                + check_references(policy, reader._key_ref_sources, reader._account_refs))
    if not policy.classes and not problems:  # a broken file already has its own line: one cause, one line
        problems.append(Problem("schema", "the policy has no classes: nothing to generate",
                                SourceRef(sources[0][0], 1) if sources else None))
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: (p.source or SourceRef("", 0), p.message)))
    return policy
