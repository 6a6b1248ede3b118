"""Reading sops metadata: every format sops writes, the fast YAML scanner agreeing with libyaml, malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl.formats import MetadataError, detect_format, metadata_from_mapping, read_metadata
from sopsctl.formats.yamlmeta import _SOPS_START, _scan, _sops_block, sops_starts

from ..strategies import key_pool

ADMIN = "age192jp2xpg3gnlgr89mrt2pxv8g97dcgaz9zee52czdufnrf6trajqgfvvzt"
HOST1 = "age1s4ayfaa5l0y40x4ef8wncs5nfrxf09dvy8zz3yn2yhacp9wwnsaq3y8t6d"


def _recipients(meta) -> list[list[str]]:
    return [[k.recipient for k in g] for g in meta.groups]


@pytest.mark.parametrize("name", ["yaml/nested.enc.yaml", "json/basic.enc.json", "dotenv/app.enc.env",
                                  "ini/app.enc.ini", "binary/blob.enc", "multidoc/two-docs.enc.yaml"])
def test_every_format_sops_writes(vectors: Path, name: str) -> None:
    meta = read_metadata((vectors / name).read_bytes(), detect_format(name))
    assert meta is not None and meta.layout == "flat"
    assert sorted(_recipients(meta)[0]) == sorted([ADMIN, HOST1])
    assert meta.version == "3.11.0" and meta.mac.startswith("ENC[AES256_GCM,")
    assert all(k.kind == "age" for k in meta.groups[0])
    if name.startswith("binary"):
        assert meta.options == ()  # the binary store records no suffix
    else:
        assert meta.options == (("unencrypted_suffix", "_unencrypted"),)


@pytest.mark.parametrize("name", ["shamir/three-groups.enc.yaml", "shamir/three-groups.enc.json"])
def test_shamir_layout(vectors: Path, name: str) -> None:
    meta = read_metadata((vectors / name).read_bytes(), detect_format(name))
    assert meta.layout == "groups" and meta.threshold == 2 and meta.effective_threshold == 2
    assert [len(g) for g in meta.groups] == [2, 1, 1]
    assert _recipients(meta)[0][0] == ADMIN


def test_options_and_ssh_recipients(vectors: Path) -> None:
    regex = read_metadata((vectors / "regex/k8s-secret.enc.yaml").read_bytes(), "yaml")
    assert regex.options == (("encrypted_regex", "^(data|stringData)$"),)
    mac_only = read_metadata((vectors / "mac-only/suffix.enc.yaml").read_bytes(), "yaml")
    assert dict(mac_only.options) == {"encrypted_suffix": "_secret", "mac_only_encrypted": True}
    ssh = read_metadata((vectors / "ssh/mixed-recipients.enc.yaml").read_bytes(), "yaml")
    assert any(r.startswith("ssh-ed25519 AAAA") for r in _recipients(ssh)[0])


def _yaml_files(vectors: Path, real_fleet: Path) -> list[Path]:
    files = sorted(vectors.rglob("*.enc.yaml")) + sorted((real_fleet).rglob("*.yaml"))
    return [f for f in files if "history" not in f.parts and f.name != ".sops.yaml"]


def _slow(block: bytes):
    return metadata_from_mapping(yaml.safe_load(b"sops:" + block)["sops"])


def _strip_enc(meta):
    from dataclasses import replace

    return replace(meta, groups=tuple(tuple(k._replace(enc=None) for k in g) for g in meta.groups))


def test_fast_scanner_agrees_with_libyaml_on_every_real_file(vectors: Path, real_fleet: Path) -> None:
    files = _yaml_files(vectors, real_fleet)
    assert len(files) > 25
    for path in files:
        block = _sops_block(path.read_bytes())
        assert block is not None, path
        assert _scan(block) == _strip_enc(_slow(block)), path
        assert _scan(block, with_enc=True) == _slow(block), path  # re-keying reads the blobs this way


def _emit_block(groups: list[list[str]], threshold: int, indent: int, sorted_keys: bool) -> str:
    """A sops block laid out like sops 3.11 (struct order) or 3.13 (sorted keys), at any indent."""
    pad = " " * indent

    def entry(recipient: str, depth: int) -> list[str]:
        lead = " " * depth
        fields = [("recipient", recipient), ("enc", "|")]
        if sorted_keys:
            fields.reverse()
        lines = []
        for i, (k, v) in enumerate(fields):
            prefix = lead + "- " if i == 0 else lead + "  "
            lines.append(f"{prefix}{k}: {v}")
            if k == "enc":
                body = lead + " " * (2 + indent)
                lines += [body + "-----BEGIN AGE ENCRYPTED FILE-----", body + "YWdlLWVuY3J5cHRpb24ub3JnL3Yx",
                          body + "-----END AGE ENCRYPTED FILE-----"]
        return lines

    top: list[tuple[str, list[str]]] = []
    if len(groups) == 1:
        top.append(("age", [ln for r in groups[0] for ln in entry(r, indent * 2)]))
    else:
        body: list[str] = []
        for group in groups:
            inner = [("hc_vault", ["[]"]), ("age", [ln for r in group for ln in entry(r, indent * 2 + 2)])]
            if sorted_keys:
                inner.sort()
            first = True
            for key, value in inner:
                lead = pad * 2 + ("- " if first else "  ")
                first = False
                if value == ["[]"]:
                    body.append(f"{lead}{key}: []")
                else:
                    body.append(f"{lead}{key}:")
                    body += value
        top.append(("key_groups", body))
        top.append(("shamir_threshold", [str(threshold)]))
    top += [("lastmodified", ['"2026-11-28T13:30:47Z"']), ("mac", ["ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]"]),
            ("unencrypted_suffix", ["_unencrypted"]), ("version", ["3.11.0"])]
    if sorted_keys:
        top.sort()
    lines = []
    for key, value in top:
        if len(value) == 1 and not value[0].startswith(" "):
            lines.append(f"{pad}{key}: {value[0]}")
        else:
            lines.append(f"{pad}{key}:")
            lines += value
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(groups=st.lists(st.lists(st.integers(0, 20), min_size=1, max_size=4, unique=True), min_size=1, max_size=4),
       indent=st.sampled_from([2, 4]), sorted_keys=st.booleans(), data=st.data())
def test_fast_scanner_agrees_with_libyaml_on_generated_layouts(groups, indent, sorted_keys, data) -> None:
    pool = key_pool()
    recipients = [[pool[i] for i in g] for g in groups]
    threshold = data.draw(st.integers(1, len(groups)))
    block = ("\n" + _emit_block(recipients, threshold, indent, sorted_keys)).encode()
    document = b"secret: ENC[AES256_GCM,data:a,iv:b,tag:c,type:str]\nsops:" + block
    meta = read_metadata(document, "yaml")
    assert meta == _strip_enc(_slow(block))
    assert read_metadata(document, "yaml", full=True) == _slow(block)
    assert _recipients(meta) == recipients


@pytest.mark.parametrize(
    ("fmt", "data"),
    [("yaml", b"a: 1\nb: [x]\n"), ("yaml", b"not: yaml: at: all: ["), ("json", b"[1, 2]"), ("json", b"{\"a\": 1}"),
     ("binary", b"\x00\x01raw bytes"), ("dotenv", b"A=1\nB=2\n"), ("ini", b"[main]\na = 1\n"),
     ("yaml", b"sopsy: 1\n")],
)
def test_plain_files_have_no_metadata(fmt: str, data: bytes) -> None:
    assert read_metadata(data, fmt) is None


@pytest.mark.parametrize(
    ("fmt", "data"),
    [("yaml", b"a: 1\nsops:\n    version: 3.11.0\n"),  # no mac
     ("yaml", b"a: 1\nsops:\n    mac: x\n    version: 3.11.0\n"),  # no keys
     ("yaml", b"a: 1\nsops: [1, 2]\n"),
     ("yaml", b"a: 1\nsops:\n    age: [\n"),
     ("json", b'{"a": 1, "sops": {"mac": "x", "version": "1", "age": [{"enc": "e"}]}}'),  # entry without recipient
     ("json", b'{"a": 1, "sops": {"mac": "x", '),  # truncated
     ("dotenv", b"A=1\nsops_version=3.11.0\n"),
     ("ini", b"[sops]\nversion = 3.11.0\nmac = x\nshamir_threshold = two\nage__list_0__map_recipient = a\n")],
)
def test_malformed_metadata_is_an_error(fmt: str, data: bytes) -> None:
    with pytest.raises(MetadataError):
        read_metadata(data, fmt)


def test_flow_style_and_odd_layouts_fall_back_to_libyaml() -> None:
    flow = (b'a: 1\nsops: {age: [{recipient: ' + ADMIN.encode() + b', enc: x}], mac: m, version: "3.11.0"}\n')
    assert _recipients(read_metadata(flow, "yaml")) == [[ADMIN]]
    commented = b"a: 1\nsops:\n    # a comment\n    age:\n        - recipient: " + ADMIN.encode() + \
        b"\n          enc: x\n    mac: m\n    version: 3.11.0\n"
    assert _recipients(read_metadata(commented, "yaml")) == [[ADMIN]]


@given(st.lists(st.sampled_from([b"sops:", b"sops: ", b"sops:\t", b"\n", b"\r\n", b" ", b"x", b"#", b"sops:x",
                                 b"  sops:", b"\nsops:\n"]), max_size=12).map(b"".join))
def test_sops_starts_finds_what_the_multiline_search_finds(data: bytes) -> None:
    assert [m.span() for m in sops_starts(data)] == [m.span() for m in _SOPS_START.finditer(data)]
