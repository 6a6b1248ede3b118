"""Interop: the real sops binary, driven by a generated .sops.yaml, encrypts each path for exactly the readers the policy grants."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from sopsctl.cli import main
from sopsctl.policy import load_policy

from ..policy_helpers import AGE, SSH

pytestmark = pytest.mark.interop

POLICY = f"""\
version: 1
settings:
  always_readers: [key:recovery]
  fallback: deny
keys:
  recovery: {{age: {AGE['recovery']}}}
  alice: {{age: {AGE['alice']}}}
  bob: {{age: {AGE['bob']}}}
  carol: {{age: {AGE['carol']}}}
  web1: {{ssh: "{SSH['web1']}"}}
  web2: {{ssh: "{SSH['web2']}"}}
  db1: {{ssh: "{SSH['db1']}"}}
  old: {{ssh: "{SSH['old']}"}}
identities:
  alice: {{role: admin, accounts: [alice, al], keys: [alice]}}
  bob: {{role: user, keys: [bob]}}
  carol: {{role: ci, keys: [carol]}}
hosts:
  web1: {{platform: nixos, keys: [web1], users: {{al: admin, bob: primary}}}}
  web2: {{platform: nixos, keys: [web2], users: {{bob: user}}}}
  db1: {{platform: darwin, keys: [db1], users: {{alice: admin}}}}
  old: {{platform: nixos, keys: [old], status: retired}}
groups:
  ops: [identity:carol]
classes:
  - name: root-ca
    path: secrets/root-ca/**
    key_groups: [[role:admin], [host:db1], [group:ops]]
    threshold: 2
  - name: k8s
    path_regex: ^k8s/.*\\.yaml$
    readers: [role:ci, platform:darwin]
    sops: {{encrypted_regex: ^(data|stringData)$}}
  - name: home
    path: secrets/home/{{account}}/*.yaml
    readers: ["identity:{{identity}}"]
  - name: host-users
    path: secrets/hosts/{{host}}/users/{{account}}.yaml
    readers: ["host:{{host}}", "identity:{{identity}}"]
  - name: host
    path: secrets/hosts/{{host}}/**
    readers: ["host:{{host}}", "admins-of:{{host}}"]
  - name: web
    path: secrets/web/{{host}}.yaml
    readers: ["users-of:{{host}}", "primary-of:{{host}}"]
  - name: people
    path: secrets/people/{{identity}}/**
    readers: ["hosts-of:{{identity}}", key:recovery]
  - name: templates
    path: secrets/templates/*.yaml
    readers: [group:ops, hosts]
    sops: {{encrypted_suffix: Templates}}
  - name: shared
    paths: [secrets/shared.yaml, "secrets/services/{{a,b}}/**"]
    readers: [role:admin, hosts, platform:nixos]
"""

R = "recovery"
HOST_WEB1 = [{R, "web1", "alice"}]
SHAMIR = ([{R, "alice"}, {R, "db1"}, {R, "carol"}], 2)
SHARED = [{R, "alice", "db1", "web1", "web2"}]
# path -> expected key groups (as key-name sets), or (groups, threshold); None: sops must refuse it.
EXPECTED: dict[str, object] = {
    "secrets/root-ca/ca.yaml": SHAMIR,
    "secrets/root-ca/sub/x.yaml": SHAMIR,
    "secrets/root-ca/key.pem": SHAMIR,
    "k8s/app.yaml": [{R, "carol", "db1"}],
    "k8s/sub/app.yaml": [{R, "carol", "db1"}],
    "k8s/app.json": None,
    "secrets/home/al/x.yaml": [{R, "alice"}],
    "secrets/home/alice/x.yaml": [{R, "alice"}],
    "secrets/home/bob/x.yaml": [{R, "bob"}],
    "secrets/home/carol/x.yaml": [{R, "carol"}],
    "secrets/home/bob/sub/x.yaml": None,
    "secrets/home/zed/x.yaml": None,
    "secrets/hosts/web1/users/al.yaml": [{R, "web1", "alice"}],
    "secrets/hosts/web1/users/bob.yaml": [{R, "web1", "bob"}],
    "secrets/hosts/web2/users/bob.yaml": [{R, "web2", "bob"}],
    "secrets/hosts/db1/users/alice.yaml": [{R, "db1", "alice"}],
    "secrets/hosts/web1/users/carol.yaml": HOST_WEB1,  # no such account on web1: falls to `host`
    "secrets/hosts/web1/ssh.yaml": HOST_WEB1,
    "secrets/hosts/web1/blob": HOST_WEB1,
    "secrets/hosts/web2/ssh.yaml": [{R, "web2"}],
    "secrets/hosts/old/x.yaml": None,  # retired host: no rule
    "secrets/web/web1.yaml": [{R, "alice", "bob"}],
    "secrets/web/web2.yaml": [{R, "bob"}],
    "secrets/web/db1.yaml": [{R, "alice"}],
    "secrets/people/alice/x.yaml": [{R, "db1", "web1"}],
    "secrets/people/bob/a/b.yaml": [{R, "web1", "web2"}],
    "secrets/people/carol/x.yaml": [{R}],
    "secrets/templates/t.yaml": [{R, "carol", "db1", "web1", "web2"}],
    "secrets/templates/sub/t.yaml": None,
    "secrets/shared.yaml": SHARED,
    "secrets/services/a/x.yaml": SHARED,
    "secrets/services/b/c/d.yaml": SHARED,
    "secrets/services/c/x.yaml": None,
    "secrets/other.yaml": None,
    "other/x.yaml": None,
}
OPTIONS = {"k8s/app.yaml": ("encrypted_regex", "^(data|stringData)$"),
           "secrets/templates/t.yaml": ("encrypted_suffix", "Templates")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    (root / "policies").mkdir()
    (root / "policies" / "fleet.yaml").write_text(POLICY)
    assert main(["generate", "--root", str(root)]) == 0
    return root


def _groups_of(path: str, data: bytes) -> tuple[list[set[str]], int, dict]:
    document = yaml.safe_load(data) if path.endswith(".yaml") else json.loads(data)
    meta = document["sops"]
    groups = meta["key_groups"] if meta.get("key_groups") else [{"age": meta["age"]}]
    return [{e["recipient"] for e in g.get("age") or []} for g in groups], meta.get("shamir_threshold", 0), meta


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_sops_encrypts_each_path_for_exactly_the_granted_readers(repo: Path, sops_bin: Path, path: str) -> None:
    policy = load_policy([("fleet.yaml", (repo / "policies" / "fleet.yaml").read_bytes())])
    recipient_name = {k.age: name for name, k in policy.keys.items()}
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"data:\n  x: '1'\nvalueTemplates: t\nplain: p\n" if path.endswith(".yaml") else b"\x00raw")
    env = {**os.environ, "SOPS_AGE_KEY_FILE": "/dev/null"}
    result = subprocess.run([str(sops_bin), "encrypt", path], cwd=repo, env=env, capture_output=True, timeout=60)
    expected = EXPECTED[path]
    if expected is None:
        assert result.returncode != 0
        assert b"no matching creation rules found" in result.stderr
        return
    assert result.returncode == 0, result.stderr.decode()
    groups, threshold, meta = _groups_of(path, result.stdout)
    named = [{recipient_name[r] for r in g} for g in groups]
    want_groups, want_threshold = expected if isinstance(expected, tuple) else (expected, 0)
    assert named == want_groups
    assert threshold == want_threshold
    if path in OPTIONS:
        option, value = OPTIONS[path]
        assert meta[option] == value


def test_generated_config_covers_at_least_thirty_paths() -> None:
    assert len(EXPECTED) >= 30
    assert sum(v is None for v in EXPECTED.values()) >= 8
