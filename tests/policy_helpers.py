"""Small fleet policies for tests, built as text so tests can break them on purpose."""

from __future__ import annotations

import textwrap

# Throw-away public keys (private halves discarded).
AGE = {
    "recovery": "age17xnaa08x0ym4lpkyzp4pcctmld837n03x2nqvtfq8smxsssdp3tsrt55w6",
    "alice": "age1lx2exccsuyt8h63wyujktv3nqhctct0vky7yyqats57g44jcfsfqg359f7",
    "bob": "age1e5xc9n3ux2eh5vnn3w2pprw698cdl5ntf0nwr2r6s69uat44zayqskv34f",
    "carol": "age1f3qaegw8ng909wq0y8ycdczdjtz5ltqp0sn899llq9tnwv6fqg8ql48sfq",
}
SSH = {
    "web1": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKYcPrPHsyNxIkcGz4tKHQOHa9/jb6TfllNHCE27yi7U root@web1",
    "web2": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEuTl0/zDopSd8r66EdKp3RA5SGieP8atfuSxxdoFqSj root@web2",
    "db1": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDHApnLSaPgSj9ysqyOu7f0d4lxcaVugT+dZtrI702Hq root@db1",
    "old": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzsE+W095buHako4VU3ROUqzdLYFjwMB6GcLHtu4D8h root@old",
}

SMALL_POLICY = textwrap.dedent(f"""\
    version: 1
    settings:
      always_readers: [key:recovery]
    keys:
      recovery: {{age: {AGE['recovery']}}}
      alice: {{age: {AGE['alice']}}}
      bob: {{age: {AGE['bob']}}}
      web1: {{ssh: "{SSH['web1']}"}}
      db1: {{ssh: "{SSH['db1']}"}}
      old: {{ssh: "{SSH['old']}", status: retired, retired: 2026-01-01}}
    identities:
      alice: {{role: admin, accounts: [alice, al], keys: [alice]}}
      bob: {{role: user, keys: [bob]}}
    hosts:
      web1: {{platform: nixos, keys: [web1], users: {{al: admin, bob: primary}}}}
      db1: {{platform: nixos, keys: [db1], users: {{alice: admin}}}}
      old: {{platform: darwin, keys: [old], status: retired}}
    classes:
      - name: home
        path: secrets/home/{{account}}/**
        readers: ["identity:{{identity}}"]
      - name: host
        path: secrets/hosts/{{host}}/**
        readers: ["host:{{host}}", "admins-of:{{host}}"]
      - name: shared
        paths: [secrets/shared.yaml, secrets/services/**]
        readers: [role:admin, hosts]
    """)


def policy_sources(text: str = SMALL_POLICY, name: str = "policy.yaml") -> list[tuple[str, bytes]]:
    return [(name, text.encode())]


# One class for every secret, read by an admin and a host: format with admin=…, host1=… recipients.
ADMIN_AND_HOST_POLICY = """\
version: 1
settings:
  secrets_dirs: [secrets]
keys:
  admin: {{age: {admin}}}
  host1: {{age: {host1}}}
identities:
  admin: {{role: admin, keys: [admin]}}
hosts:
  host1: {{platform: nixos, keys: [host1], users: {{admin: admin}}}}
classes:
  - name: all
    path: secrets/**
    readers: [role:admin, hosts]
"""
