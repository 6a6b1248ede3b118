"""The shipped JSON Schema applied to policy files for `lint`: every violation, each at its file:line."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from .model import Problem, SourceRef
from .yamlnodes import MAX_NODES, YamlProblem, compose

SCHEMA_RESOURCE = "schema/policy.schema.json"
MAX_DEPTH = 64  # real policies nest about 6 deep; deeper input is left to the loader, which refuses it

Path = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_SCALARS = {f"{_TAG}{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")}
_constructor = yaml.constructor.SafeConstructor()
_STRUCTURAL = ("schema", "selector")  # loader codes the schema check also covers
_NAME_RULE = "may only use letters, digits, '.', '_' and '-', starting with a letter or digit"
_KINDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
          "number": "a number", "boolean": "true or false", "null": "empty"}


class _Found(NamedTuple):
    path: Path
    message: str
    mistyped: bool = False  # the value is of the wrong kind altogether


class _Unreadable(Exception):
    """The YAML has a shape JSON cannot hold (an alias bomb, a loop, absurd depth): the loader reports it."""


def schema_text() -> str:
    from importlib import resources

    return resources.files("sopsctl").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")


@functools.cache
def _validator():  # type: ignore[no-untyped-def]
    import jsonschema  # lazily: only lint pays for it, never start-up

    return jsonschema.Draft202012Validator(json.loads(schema_text()))


@dataclass(frozen=True)
class Checked:
    """Schema violations, and every file:line they cover (a field's key line and its value's first line)."""

    problems: list[Problem] = field(default_factory=list)
    covered: frozenset[tuple[str, int]] = frozenset()


def check(sources: Sequence[tuple[str, bytes]]) -> Checked:
    """Every schema violation of every policy file, in file then line order.

    A policy directory is merged by section, so each file is one fragment checked on its own; the
    schema asks nothing of the whole (it has no top-level `required`), so no variant of it is needed.
    Files that are not YAML are skipped: the loader reports them.
    """
    problems: list[Problem] = []
    covered: set[tuple[str, int]] = set()
    for name, data in sources:
        found, lines = _file_problems(name, data)
        problems += found
        covered |= {(name, line) for line in lines}
    return Checked(problems, frozenset(covered))


def combine(checked: Checked, loaded: Iterable[Problem]) -> list[Problem]:
    """Schema violations plus the loader's or lint's findings, without saying one thing twice.

    The loader checks structure and selector syntax too but stops at the first problem in each
    section; one it reports on a line the schema check already covers is the same mistake again.
    """
    kept = [p for p in loaded if not (p.code in _STRUCTURAL and p.source
                                      and (p.source.file, p.source.line) in checked.covered)]
    order = {"error": 0, "warning": 1, "note": 2}
    return sorted([*checked.problems, *kept],
                  key=lambda p: (order[p.severity], p.source or SourceRef("", 0), p.message))


# -- YAML nodes to JSON values, with where each value was written ---------------------------------


def _file_problems(name: str, data: bytes) -> tuple[list[Problem], set[int]]:
    try:
        root = compose(name, data)
    except YamlProblem:
        return [], set()
    if root is None:
        return [], set()
    lines: dict[Path, int] = {(): root.start_mark.line + 1}
    starts: dict[Path, int] = {(): root.start_mark.line + 1}
    try:
        instance = _to_json(root, (), lines, starts, [MAX_NODES], set())
        errors = list(_validator().iter_errors(instance))
    except (_Unreadable, RecursionError):
        return [], set()
    found: dict[tuple[int, str], Problem] = {}
    covered: set[int] = set()
    explained = [found for error in errors for found in _explain(error)]
    # A value of the wrong kind also fails rules meant for the right kind (`required` holds for a
    # string, so a `not: required` fails): its kind is then the one thing to say about it.
    mistyped = {f.path for f in explained if f.mistyped}
    for f in explained:
        if f.path in mistyped and not f.mistyped:
            continue
        line = _line(lines, f.path)
        covered |= {line, _line(starts, f.path)}
        found.setdefault((line, f.message), Problem("schema", f.message, SourceRef(name, line)))
    return [found[k] for k in sorted(found)], covered


def _to_json(node: yaml.Node, path: Path, lines: dict[Path, int], starts: dict[Path, int],
             budget: list[int], stack: set[int]) -> Any:
    """The value a JSON-Schema validator (or yaml-language-server) sees: dates become ISO text.

    `lines` maps each path to the line that names it (a mapping key, a list item); `starts` to the
    first line of its value.
    """
    starts.setdefault(path, node.start_mark.line + 1)
    budget[0] -= 1
    if budget[0] < 0 or len(path) > MAX_DEPTH or id(node) in stack:
        raise _Unreadable
    if isinstance(node, yaml.ScalarNode):
        if node.tag not in _SCALARS:
            return str(node.value)  # !!binary, custom tags: the loader refuses them; the text is enough here
        value = _constructor.yaml_constructors[node.tag](_constructor, node)
        return value.isoformat() if hasattr(value, "isoformat") else value
    stack.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                items.append(_to_json(item, (*path, index), lines, starts, budget, stack))
            return items
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == f"{_TAG}merge":
                continue  # not a plain name: the loader says so
            key = str(key_node.value)
            lines.setdefault((*path, key), key_node.start_mark.line + 1)
            mapping[key] = _to_json(value_node, (*path, key), lines, starts, budget, stack)
        return mapping
    finally:
        stack.discard(id(node))


def _line(lines: dict[Path, int], path: Path) -> int:
    while path not in lines:
        path = path[:-1]
    return lines[path]


# -- jsonschema errors to one clear message each ---------------------------------------------------


def _where(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the policy file"


def _kind(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "a mapping"


def _show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 60 else text[:57] + "…"


def _types(schema: object) -> list[str]:
    """The JSON types a (sub)schema accepts, following $ref and anyOf; [] when it does not say."""
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        return _types(_resolve(schema["$ref"]))
    if "type" in schema:
        kinds = schema["type"]
        return [kinds] if isinstance(kinds, str) else list(kinds)
    if "enum" in schema or "const" in schema:
        return ["string"]
    found: list[str] = []
    for branch in schema.get("anyOf", schema.get("oneOf", [])):
        found += [k for k in _types(branch) if k not in found]
    return found


def _resolve(ref: str) -> dict:
    node: Any = _validator().schema
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _description(schema: object) -> str:
    if isinstance(schema, dict):
        if "description" in schema:
            return str(schema["description"]).split(". ")[0].rstrip(".")
        if "$ref" in schema:
            return _description(_resolve(schema["$ref"]))
    return ""


def _must_be(path: Path, types: list[str], value: object) -> str:
    wanted = [_KINDS.get(t, t) for t in types if t != "null"] or ["empty"]
    wanted = list(dict.fromkeys("a string" if w == "a number" and "a string" in wanted else w for w in wanted))
    return f"{_where(path)} must be {' or '.join(wanted)}, not {_kind(value)}"


def _required_sets(schema: object) -> list[list[str]] | None:
    """[[a], [b], …] when the schema is anyOf/oneOf of `required` only; None otherwise."""
    if not isinstance(schema, list) or not all(isinstance(b, dict) and set(b) == {"required"} for b in schema):
        return None
    return [list(b["required"]) for b in schema]


def _explain(error) -> list[_Found]:  # type: ignore[no-untyped-def]
    """(instance path, message) for one error; anyOf/oneOf are opened to the branch the value meant."""
    path: Path = tuple(error.absolute_path)
    value, keyword, arg = error.instance, error.validator, error.validator_value
    where = _where(path)
    if keyword == "additionalProperties" and isinstance(value, dict):
        known = list(error.schema.get("properties", {}))
        what = "section" if not path else "field"
        return [_Found((*path, key), f"{where}: unknown {what} '{key}' (expected one of: {', '.join(known)})"
                 if path else f"unknown section '{key}' (expected one of: {', '.join(known)})")
                for key in value if key not in known]
    if "propertyNames" in error.relative_schema_path:  # the instance is the name, the path its mapping
        return [_Found((*path, value), f"{where}: name {_show(value)} {_NAME_RULE}")]
    if keyword == "type":
        return [_Found(path, _must_be(path, [arg] if isinstance(arg, str) else list(arg), value), True)]
    if keyword == "const":
        return [_Found(path, f"{where} must be {_show(arg)}, not {_show(value)}")]
    if keyword == "enum":
        return [_Found(path, f"{where} must be one of: {', '.join(map(str, arg))} (not {_show(value)})")]
    if keyword == "pattern":
        if error.schema is _resolve("#/$defs/selector"):
            return [_Found(path, f"{where}: {_show(value)} is not a selector (expected "
                           f"{_description(error.schema)})")]
        if arg == _resolve("#/$defs/name")["anyOf"][0]["pattern"]:
            return [_Found(path, f"{where}: {_show(value)} {_NAME_RULE}")]
        return [_Found(path, f"{where}: {_show(value)} does not match {arg}")]
    if keyword == "minItems":
        return [_Found(path, f"{where} must not be empty")]
    if keyword == "minimum":
        return [_Found(path, f"{where} must be at least {arg}, not {_show(value)}")]
    if keyword == "required":
        missing = [name for name in arg if isinstance(value, dict) and name not in value]
        return [_Found(path, f"{where}: missing '{name}'") for name in missing]
    if keyword == "dependentRequired":
        return [_Found((*path, field), f"{where}: '{field}' needs {' and '.join(repr(n) for n in needs)}")
                for field, needs in arg.items() if field in value and any(n not in value for n in needs)]
    if keyword == "not":
        return [_Found(path, _conflict(path, error, value))]
    if keyword in ("anyOf", "oneOf"):
        return _branches(path, error, value)
    return [_Found(path, f"{where}: {error.message}")]


def _conflict(path: Path, error, value: object) -> str:  # type: ignore[no-untyped-def]
    """`not: anyOf: [required…]` forbids fields together; name the ones given."""
    forbidden = error.validator_value
    groups = _required_sets(forbidden.get("anyOf")) or ([forbidden["required"]] if "required" in forbidden else [])
    given = [name for group in groups for name in group if isinstance(value, dict) and name in value]
    schema_path = list(error.schema_path)
    if "dependentSchemas" in schema_path:
        given.insert(0, str(schema_path[schema_path.index("dependentSchemas") + 1]))
    given = sorted(set(given))
    if len(given) >= 2:
        return f"{_where(path)}: {', '.join(given[:-1])} and {given[-1]} cannot be given together (choose one)"
    return f"{_where(path)}: {error.message}"


def _branches(path: Path, error, value: object) -> list[_Found]:  # type: ignore[no-untyped-def]
    where = _where(path)
    sets = _required_sets(error.validator_value)
    if sets is not None:  # "one of these fields"
        names = [n for group in sets for n in group]
        if error.validator == "oneOf" and isinstance(value, dict) and sum(n in value for n in names) > 1:
            return [_Found(path, f"{where}: give only one of {', '.join(names)}")]
        return [_Found(path, f"{where}: needs one of {', '.join(names)}")]
    by_branch: dict[int, list] = {}
    for sub in error.context:
        by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [i for i, subs in by_branch.items() if not any(_mismatch(s, path) for s in subs)]
    if not error.context or (error.validator == "oneOf" and len(by_branch) < len(error.validator_value)):
        return [_Found(path, f"{where}: {error.message}")]  # valid under several branches of a oneOf
    if not fitting:
        return [_Found(path, _must_be(path, _types({error.validator: error.validator_value}), value), True)]
    if len(fitting) == 1:
        return [found for sub in by_branch[fitting[0]] for found in _explain(sub)]
    meant = [str(b["$ref"]).rsplit("/", 1)[-1] for b in (error.validator_value[i] for i in fitting) if "$ref" in b]
    if len(meant) == len(fitting):
        return [_Found(path, f"{where}: {_show(value)} is not a valid {' or '.join(meant)}")]
    return [_Found(path, f"{where}: {_show(value)} is not valid")]


def _mismatch(error, path: Path) -> bool:  # type: ignore[no-untyped-def]
    """The branch wants another kind of value here (not a value of the right kind with a flaw)."""
    if tuple(error.absolute_path) != path:
        return False
    if error.validator == "type":
        return True
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[int, bool] = {}
        for sub in error.context:
            index = sub.relative_schema_path[0]
            branches[index] = branches.get(index, False) or _mismatch(sub, path)
        return all(branches.values()) and len(branches) == len(error.validator_value)
    return False
