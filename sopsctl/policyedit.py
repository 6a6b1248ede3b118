"""Round-trip edits of policy files (ruamel.yaml): a life event changes the entries it must and keeps comments, order and style."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from .errors import InputError


def _yaml() -> YAML:
    yaml = YAML()
    yaml.width = 4096  # never fold a long ssh key onto two lines
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


@dataclass
class _File:
    name: str
    original: bytes
    document: CommentedMap
    changed: bool = False


@dataclass
class PolicyEditor:
    """Holds every policy file's round-trip document; edits go to the file that holds the section."""

    files: list[_File] = field(default_factory=list)

    @classmethod
    def load(cls, sources: Sequence[tuple[str, bytes]]) -> PolicyEditor:
        editor = cls()
        for name, data in sources:
            try:
                document = _yaml().load(data.decode("utf-8"))
            except (YAMLError, UnicodeDecodeError) as exc:
                raise InputError(f"{name}: cannot edit it: {str(exc).splitlines()[0]}") from None
            if document is None:
                document = CommentedMap()
            if not isinstance(document, CommentedMap):
                raise InputError(f"{name}: a policy file must be a mapping")
            editor.files.append(_File(name, data, document))
        return editor

    # -- finding where things live --------------------------------------------------------------

    def _section_file(self, section: str) -> _File:
        for file in self.files:
            if section in file.document:
                return file
        # No file has it yet: put it next to the keys, or in the first file.
        for file in self.files:
            if "keys" in file.document:
                return file
        return self.files[0]

    def _section(self, section: str) -> tuple[_File, CommentedMap]:
        file = self._section_file(section)
        mapping = file.document.get(section)
        if mapping is None:
            mapping = CommentedMap()
            file.document[section] = mapping
        if not isinstance(mapping, CommentedMap):
            raise InputError(f"{file.name}: '{section}' is not a mapping; cannot add to it")
        return file, mapping

    def entry(self, section: str, name: str) -> CommentedMap:
        for file in self.files:
            mapping = file.document.get(section)
            if isinstance(mapping, CommentedMap) and name in mapping:
                value = mapping[name]
                if not isinstance(value, CommentedMap):  # a key's shorthand `name: age1…`: expand it
                    text = str(value)
                    value = CommentedMap([("ssh" if text.startswith("ssh-") else "age", text)])
                    value.fa.set_flow_style()
                    mapping[name] = value
                file.changed = True
                return value
        raise InputError(f"no {section[:-1] if section != 'identities' else 'identity'} named '{name}' in the policy")

    def has(self, section: str, name: str) -> bool:
        return any(isinstance(f.document.get(section), CommentedMap) and name in f.document[section]
                   for f in self.files)

    # -- edits ----------------------------------------------------------------------------------

    def add(self, section: str, name: str, fields: dict[str, object]) -> None:
        """Append an entry in the style of its neighbours (flow `{…}` if they are flow)."""
        if self.has(section, name):
            raise InputError(f"'{name}' already exists under {section}")
        file, mapping = self._section(section)
        flow = any(isinstance(v, CommentedMap) and v.fa.flow_style() for v in mapping.values()) or not mapping
        mapping[name] = _build(fields, flow)
        file.changed = True

    def set(self, section: str, name: str, key: str, value: object) -> None:
        entry = self.entry(section, name)
        flow = entry.fa.flow_style()
        entry[key] = _build(value, flow) if isinstance(value, (dict, list)) else value

    def texts(self) -> list[tuple[str, bytes, bytes]]:
        """(name, old bytes, new bytes) for every file an edit touched."""
        result = []
        for file in self.files:
            if not file.changed:
                continue
            stream = io.StringIO()
            _yaml().dump(file.document, stream)
            result.append((file.name, file.original, stream.getvalue().encode("utf-8")))
        return result


def _build(value: object, flow: bool) -> object:
    if isinstance(value, dict):
        mapping = CommentedMap((k, _build(v, flow)) for k, v in value.items())
        if flow:
            mapping.fa.set_flow_style()
        return mapping
    if isinstance(value, list):
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()  # lists of names read best inline: keys: [a, b]
        return seq
    if isinstance(value, str) and (" " in value or value.startswith(("ssh-", "age1"))):
        return DoubleQuotedScalarString(value)  # keys read best quoted, like their neighbours
    return value
