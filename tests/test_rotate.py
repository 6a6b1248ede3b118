"""`sopsctl rotate` on the sops-made vectors: new data key, same IVs, new data/tag, new MAC and lastmodified."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from sopsctl import rotate
from sopsctl.datakey import recover
from sopsctl.formats import detect_format, read_metadata
from sopsctl.identities import load_identities
from sopsctl.model import CreationRule, RuleKey
from sopsctl.verify import verify_file

ADMIN, USER, HOST1, HOST2 = "vec-admin.txt", "vec-user.txt", "vec-host1.txt", "vec-host2.txt"
CASES = [
    "yaml/nested.enc.yaml",  # nested maps and lists, mapping comments and a list comment
    "json/basic.enc.json",
    "dotenv/app.enc.env",
    "ini/app.enc.ini",
    "binary/blob.enc",
    "multidoc/two-docs.enc.yaml",
    "shamir/three-groups.enc.yaml",
    "shamir/three-groups.enc.json",
    "regex/k8s-secret.enc.yaml",
    "mac-only/suffix.enc.yaml",
    "comments/unencrypted-comment.enc.yaml",
]
TOKEN = re.compile(rb"ENC\[AES256_GCM,data:([^,]+),iv:([^,]+),tag:([^,]+),type:([a-z]+)\]")


def identities(vectors: Path, *names: str):  # type: ignore[no-untyped-def]
    names = names or (ADMIN, HOST1, HOST2)
    return load_identities({}, Path("/nonexistent"), [vectors / "identities" / n for n in names])


def own_rule(data: bytes, fmt: str) -> CreationRule:
    """A catch-all rule naming exactly the file's own recipients and threshold."""
    metadata = read_metadata(data, fmt, full=True)
    assert metadata is not None
    groups = tuple(tuple(RuleKey(e.recipient, e.kind) for e in g) for g in metadata.groups)
    return CreationRule(None, groups, metadata.threshold)


def rotate_copy(vectors: Path, tmp_path: Path, name: str, rule: CreationRule | None = None,
                ids=None) -> tuple[bytes, bytes, rotate.RotateReport]:  # type: ignore[no-untyped-def]
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vectors / name, target)
    before = target.read_bytes()
    rule = rule or own_rule(before, detect_format(name))
    report = rotate.run(tmp_path, [name], [rule], ids or identities(vectors))
    return before, target.read_bytes(), report


def document_part(data: bytes, fmt: str) -> bytes:
    """The file without its sops metadata, every token reduced to its IV and type."""
    masked = TOKEN.sub(lambda m: b"ENC[" + m.group(2) + b"," + m.group(4) + b"]", data)
    if fmt == "yaml":
        return re.sub(rb"(?ms)^sops:\n.*?(?=^---|\Z)", b"", masked)
    if fmt in ("json", "binary"):
        return masked.split(b'"sops":')[0]
    if fmt == "dotenv":
        return b"".join(line for line in masked.splitlines(True) if not line.startswith(b"sops_"))
    return masked.split(b"[sops]")[0]


@pytest.mark.parametrize("name", CASES)
def test_rotated_file_verifies_with_same_ivs_and_new_ciphertexts(vectors: Path, tmp_path: Path, name: str) -> None:
    fmt = detect_format(name)
    ids = identities(vectors)
    before, after, report = rotate_copy(vectors, tmp_path, name)
    assert report.failed == [] and report.rotated == [name]
    result = verify_file(after, fmt, ids)
    assert result.ok, result.message
    old_tokens, new_tokens = TOKEN.findall(before), TOKEN.findall(after)
    assert len(old_tokens) == len(new_tokens) >= 2  # values and comments, plus the MAC
    for (old_data, old_iv, old_tag, old_type), (new_data, new_iv, new_tag, new_type) in zip(
            old_tokens, new_tokens, strict=True):
        assert (new_iv, new_type) == (old_iv, old_type)
        assert new_tag != old_tag
        if len(old_data) >= 12:  # 8+ bytes of ciphertext: equal by chance with probability 2^-64 at most
            assert new_data != old_data
    assert document_part(after, fmt) == document_part(before, fmt)
    old_meta, new_meta = read_metadata(before, fmt, full=True), read_metadata(after, fmt, full=True)
    assert old_meta is not None and new_meta is not None
    assert new_meta.lastmodified != old_meta.lastmodified
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(new_meta.lastmodified))
    assert new_meta.mac != old_meta.mac
    assert recover(new_meta, ids).key != recover(old_meta, ids).key
    old_encs = {e.enc for g in old_meta.groups for e in g}
    assert all(e.enc and e.enc not in old_encs for g in new_meta.groups for e in g)
    assert [[(e.kind, e.recipient) for e in g] for g in new_meta.groups] == \
        [[(e.kind, e.recipient) for e in g] for g in old_meta.groups]
    assert new_meta.threshold == old_meta.threshold


def test_comments_keep_their_path_as_aad(vectors: Path, tmp_path: Path) -> None:
    """The YAML vector's comments (top level, in a map, list item) decrypt under the new key with their AAD."""
    from sopsctl import values as v

    _, after, _ = rotate_copy(vectors, tmp_path, "yaml/nested.enc.yaml")
    key = recover(read_metadata(after, "yaml", full=True), identities(vectors)).key  # type: ignore[arg-type]
    comments = [m.group(0).decode() for m in TOKEN.finditer(after) if m.group(4) == b"comment"]
    assert len(comments) == 3
    aads = []
    for text in comments:
        for aad in (":", "database:", "servers:"):
            try:
                v.decrypt_value(key, v.parse_enc(text), aad)
            except v.DecryptError:
                continue
            aads.append(aad)
    assert aads == [":", "database:", "servers:"]


def test_recipients_come_from_the_rule(vectors: Path, tmp_path: Path) -> None:
    admin, host2 = (identities(vectors, n) for n in (ADMIN, HOST2))
    pubs = {n: (vectors / "identities" / n.replace(".txt", ".pub")).read_text().split()[0] for n in (ADMIN, HOST2)}
    rule = CreationRule(None, ((RuleKey(pubs[ADMIN]), RuleKey(pubs[HOST2])),))
    _, after, report = rotate_copy(vectors, tmp_path, "yaml/nested.enc.yaml", rule, identities(vectors, ADMIN))
    assert report.rotated == ["yaml/nested.enc.yaml"]
    assert verify_file(after, "yaml", host2).ok and verify_file(after, "yaml", admin).ok
    assert verify_file(after, "yaml", identities(vectors, HOST1)).status == "cannot-unwrap"  # host1 is out


def test_shamir_rule_gets_a_fresh_split(vectors: Path, tmp_path: Path) -> None:
    name = "shamir/three-groups.enc.yaml"
    _, after, report = rotate_copy(vectors, tmp_path, name, ids=identities(vectors, ADMIN, HOST1))
    assert report.failed == []
    for pair in ((ADMIN, HOST1), (ADMIN, HOST2), (HOST1, HOST2), (USER, HOST2)):
        assert verify_file(after, "yaml", identities(vectors, *pair)).ok, pair
    assert verify_file(after, "yaml", identities(vectors, ADMIN, USER)).status == "cannot-unwrap"  # one group


def _flip_value(data: bytes) -> bytes:
    match = next(m for m in TOKEN.finditer(data) if m.group(4) != b"comment")
    first = match.group(1)
    flipped = (b"B" if first[:1] == b"A" else b"A") + first[1:]
    return data[:match.start(1)] + flipped + data[match.end(1):]


def _move_lastmodified(data: bytes) -> bytes:
    return re.sub(rb"(lastmodified\W+)(\d{4})", lambda m: m.group(1) + b"2001", data)


@pytest.mark.parametrize("tamper", [_flip_value, _move_lastmodified])
@pytest.mark.parametrize("name", ["yaml/nested.enc.yaml", "dotenv/app.enc.env", "json/basic.enc.json"])
def test_tampered_file_is_refused_and_unchanged(vectors: Path, tmp_path: Path, name: str, tamper) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / name
    target.parent.mkdir(parents=True)
    tampered = tamper((vectors / name).read_bytes())
    assert tampered != (vectors / name).read_bytes()
    target.write_bytes(tampered)
    rule = own_rule((vectors / name).read_bytes(), detect_format(name))
    report = rotate.run(tmp_path, [name], [rule], identities(vectors))
    assert report.rotated == []
    assert [path for path, _ in report.failed] == [name]
    assert "does not verify" in report.failed[0][1]
    assert target.read_bytes() == tampered


def test_one_failure_leaves_the_rest_done(vectors: Path, tmp_path: Path) -> None:
    names = ["yaml/nested.enc.yaml", "dotenv/app.enc.env"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True)
        shutil.copyfile(vectors / name, tmp_path / name)
    (tmp_path / names[1]).write_bytes(_flip_value((vectors / names[1]).read_bytes()))
    rule = own_rule((vectors / names[0]).read_bytes(), "yaml")
    report = rotate.run(tmp_path, names, [rule], identities(vectors))
    assert report.rotated == [names[0]] and [p for p, _ in report.failed] == [names[1]]
    assert (tmp_path / names[0]).read_bytes() != (vectors / names[0]).read_bytes()


def test_no_identity_is_refused(vectors: Path, tmp_path: Path) -> None:
    before, after, report = rotate_copy(vectors, tmp_path, "ini/app.enc.ini", ids=identities(vectors, USER))
    assert report.rotated == [] and after == before
    assert "cannot-unwrap" in report.failed[0][1]


def test_messages_never_hold_a_plaintext(vectors: Path, tmp_path: Path) -> None:
    plain = (vectors / "dotenv/app.dec.env").read_text()
    secrets = [line.split("=", 1)[1] for line in plain.splitlines() if "=" in line and len(line.split("=", 1)[1]) > 3]
    assert secrets
    _, _, report = rotate_copy(vectors, tmp_path, "dotenv/app.enc.env", ids=identities(vectors, USER))
    text = repr(report)
    assert report.failed and not any(s in text for s in secrets)


POLICY = """\
version: 1
keys:
  admin: {{age: {admin}}}
  host2: {{age: {host2}}}
identities:
  admin: {{role: admin, keys: [admin]}}
hosts:
  h2: {{platform: nixos, keys: [host2]}}
classes:
  - name: shared
    path: secrets/**
    readers: [role:admin, hosts]
"""


def test_cli_rotates_to_the_policy_recipients_and_exits_3_on_a_failure(
        vectors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from sopsctl.cli import main

    pub = {n: (vectors / "identities" / f"vec-{n}.pub").read_text().split()[0] for n in ("admin", "host2")}
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.yaml").write_text(POLICY.format(**pub))
    (tmp_path / ".sops.yaml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert main(["generate"]) == 0
    (tmp_path / "secrets").mkdir()
    good, bad = tmp_path / "secrets" / "app.yaml", tmp_path / "secrets" / "app.env"
    shutil.copyfile(vectors / "yaml/nested.enc.yaml", good)  # made for admin + host1: the policy says admin + host2
    tampered = _flip_value((vectors / "dotenv/app.enc.env").read_bytes())
    bad.write_bytes(tampered)
    capsys.readouterr()
    code = main(["rotate", "secrets", "--identity", str(vectors / "identities" / ADMIN)])
    captured = capsys.readouterr()
    assert code == 3
    assert "rotated secrets/app.yaml" in captured.out and "1 file(s) rotated, 1 failed" in captured.out
    assert captured.err.count("\n") == 1 and "secrets/app.env" in captured.err and "does not verify" in captured.err
    assert bad.read_bytes() == tampered
    after = good.read_bytes()
    assert verify_file(after, "yaml", identities(vectors, HOST2)).ok
    assert verify_file(after, "yaml", identities(vectors, HOST1)).status == "cannot-unwrap"
    bad.unlink()
    assert main(["rotate", "secrets/app.yaml", "--format", "json", "--identity",
                 str(vectors / "identities" / HOST2)]) == 0
    import json

    assert json.loads(capsys.readouterr().out) == {"rotated": ["secrets/app.yaml"], "failed": []}
    assert good.read_bytes() != after and verify_file(good.read_bytes(), "yaml", identities(vectors, ADMIN)).ok
