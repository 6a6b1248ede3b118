"""Fast YAML reading with line numbers: libyaml composes nodes, and typed accessors turn them into values or file:line problems."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from .model import Problem, SourceRef

try:  # libyaml is an order of magnitude faster; the pure-Python loader is the fallback
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

MAX_NODES = 2_000_000  # far above any real policy; stops alias bombs from expanding

_TAG_STR = "tag:yaml.org,2002:str"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_constructor = yaml.constructor.SafeConstructor()


class YamlProblem(Exception):
    """A problem found while reading nodes; carries the Problem to report."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


@dataclass
class Doc:
    """One YAML file being read: its display name and a node budget shared by all its accessors."""

    file: str
    budget: int = MAX_NODES

    def where(self, node: yaml.Node) -> SourceRef:
        return SourceRef(self.file, node.start_mark.line + 1)

    def fail(self, node: yaml.Node, message: str, code: str = "schema") -> YamlProblem:
        return YamlProblem(Problem(code, message, self.where(node)))

    def _spend(self, node: yaml.Node) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise self.fail(node, "too many YAML nodes (an alias bomb?)", "yaml")

    # -- typed accessors ---------------------------------------------------------------

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """Entries of a mapping node as (key, key node, value node); keys must be unique strings."""
        self._spend(node)
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping, not {_kind(node)}")
        seen: dict[str, yaml.Node] = {}
        entries = []
        for key_node, value_node in node.value:
            self._spend(key_node)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail(key_node, f"{what}: keys must be plain names")
            key = str(key_node.value)
            if key in seen:
                raise self.fail(
                    key_node,
                    f"{what}: duplicate key '{key}' (first at line {seen[key].start_mark.line + 1})",
                )
            seen[key] = key_node
            entries.append((key, key_node, value_node))
        return entries

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        self._spend(node)
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list, not {_kind(node)}")
        return list(node.value)

    def string(self, node: yaml.Node, what: str) -> str:
        self._spend(node)
        if not isinstance(node, yaml.ScalarNode) or node.tag in (_TAG_NULL,):
            raise self.fail(node, f"{what} must be a string, not {_kind(node)}")
        if node.tag not in (_TAG_STR, _TAG_INT, "tag:yaml.org,2002:float"):
            raise self.fail(node, f"{what} must be a string, not {_kind(node)} (quote it)")
        return str(node.value)

    def strings(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        """A list of strings; a single string is accepted as a one-item list."""
        if isinstance(node, yaml.ScalarNode):
            return [(self.string(node, what), node)]
        return [(self.string(item, f"{what} item"), item) for item in self.sequence(node, what)]

    def integer(self, node: yaml.Node, what: str) -> int:
        self._spend(node)
        if not isinstance(node, yaml.ScalarNode) or node.tag != _TAG_INT:
            raise self.fail(node, f"{what} must be an integer, not {_kind(node)}")
        return int(_constructor.construct_yaml_int(node))

    def boolean(self, node: yaml.Node, what: str) -> bool:
        self._spend(node)
        if not isinstance(node, yaml.ScalarNode) or node.tag != _TAG_BOOL:
            raise self.fail(node, f"{what} must be true or false, not {_kind(node)}")
        return bool(_constructor.construct_yaml_bool(node))

    def date_text(self, node: yaml.Node, what: str) -> str:
        """A date (YAML timestamp or a string), returned as ISO text."""
        self._spend(node)
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG_TIMESTAMP:
            value = _constructor.construct_yaml_timestamp(node)
            if isinstance(value, _dt.datetime):
                return value.isoformat()
            return value.isoformat()
        return self.string(node, what)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    return {"str": "a string", "int": "a number", "float": "a number", "bool": "a boolean",
            "null": "empty", "timestamp": "a date"}.get(tag, f"a {tag}")


def compose(file: str, data: bytes) -> yaml.Node | None:
    """Parse one YAML document into nodes; syntax errors become a Problem with the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlProblem(Problem("yaml", f"not UTF-8 text (byte {exc.start})", SourceRef(file, 1))) from None
    try:
        documents = list(_compose_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = exc.problem or exc.context or "invalid YAML"
        line_text = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
        if "[" in line_text and "{" in line_text:
            reason += ' (a `{` inside [ ] starts a YAML mapping: quote the item, e.g. ["identity:{identity}"])'
        raise YamlProblem(Problem("yaml", f"invalid YAML: {reason}", SourceRef(file, line))) from None
    except yaml.reader.ReaderError as exc:  # a control character: report its line, not libyaml's blurb
        line = text.count("\n", 0, exc.position) + 1
        raise YamlProblem(Problem("yaml", f"invalid YAML: control character #x{exc.character:04x} is not "
                                  "allowed", SourceRef(file, line))) from None
    except (yaml.YAMLError, RecursionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise YamlProblem(Problem("yaml", f"invalid YAML: {first}", SourceRef(file, 1))) from None
    if len(documents) > 1:
        raise YamlProblem(Problem("yaml", "a policy file holds one YAML document, found several",
                                  SourceRef(file, documents[1].start_mark.line + 1)))
    return documents[0] if documents else None


def _compose_all(text: str) -> Iterator[yaml.Node]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            yield loader.get_node()
    finally:
        loader.dispose()
