"""Hypothesis strategies: random fleets (as plain data and as policy YAML text)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

# A pool of valid, distinct public keys: X25519 recipients generated once per session.
_POOL: list[str] = []


def key_pool(size: int = 64) -> list[str]:
    if not _POOL:
        import pyrage

        _POOL.extend(str(pyrage.x25519.Identity.generate().to_public()) for _ in range(size))
    return _POOL


@dataclass
class Fleet:
    hosts: dict[str, dict]  # name -> {platform, users: {account: relation}, active}
    identities: dict[str, dict]  # name -> {role, accounts, active}

    def key_of(self, name: str) -> str:
        names = sorted(self.hosts) + sorted(self.identities)
        return key_pool()[names.index(name) + 1]  # 0 is the recovery key


NAMES = st.text(alphabet="abcdefghij", min_size=1, max_size=4)


@st.composite
def fleets(draw) -> Fleet:
    ident_names = draw(st.lists(NAMES.map(lambda n: "u" + n), min_size=1, max_size=6, unique=True))
    identities = {}
    for name in ident_names:
        identities[name] = {
            "role": draw(st.sampled_from(["admin", "user", "ci"])),
            "accounts": [name] + ([name + "x"] if draw(st.booleans()) else []),
            "active": draw(st.booleans()) or name == ident_names[0],
        }
    identities[ident_names[0]]["role"] = "admin"
    accounts = [a for i in identities.values() for a in i["accounts"]]
    host_names = draw(st.lists(NAMES.map(lambda n: "h" + n), min_size=1, max_size=8, unique=True))
    hosts = {}
    for name in host_names:
        users = draw(st.dictionaries(st.sampled_from(accounts), st.sampled_from(["primary", "admin", "user"]),
                                     max_size=3))
        hosts[name] = {"platform": draw(st.sampled_from(["nixos", "darwin"])), "users": users,
                       "active": draw(st.booleans()) or name == host_names[0]}
    return Fleet(hosts, identities)


def fleet_policy_text(fleet: Fleet, order: list[int] | None = None) -> str:
    """The fleet as policy YAML; `order` permutes how entities are listed (output must not care)."""

    def ordered(names: list[str]) -> list[str]:
        if order is None:
            return names
        return [names[i % len(names)] for i in order if i < len(names)] + [
            n for n in names if n not in [names[i] for i in order if i < len(names)]]

    pool = key_pool()
    lines = ["version: 1", "settings:", "  always_readers: [key:recovery]", "keys:",
             f"  recovery: {{age: {pool[0]}}}"]
    for name in ordered(sorted(fleet.hosts) + sorted(fleet.identities)):
        lines.append(f"  k-{name}: {{age: {fleet.key_of(name)}}}")
    lines.append("identities:")
    for name in ordered(sorted(fleet.identities)):
        ident = fleet.identities[name]
        status = "active" if ident["active"] else "retired"
        lines.append(f"  {name}: {{role: {ident['role']}, accounts: [{', '.join(ident['accounts'])}], "
                     f"keys: [k-{name}], status: {status}}}")
    lines.append("hosts:")
    for name in ordered(sorted(fleet.hosts)):
        host = fleet.hosts[name]
        users = ", ".join(f"{a}: {r}" for a, r in host["users"].items())
        status = "active" if host["active"] else "retired"
        lines.append(f"  {name}: {{platform: {host['platform']}, keys: [k-{name}], users: {{{users}}}, "
                     f"status: {status}}}")
    lines += [
        "classes:",
        "  - name: home",
        "    path: secrets/home/{account}/**",
        '    readers: ["identity:{identity}"]',
        "  - name: host",
        "    path: secrets/hosts/{host}/**",
        '    readers: ["host:{host}", "admins-of:{host}"]',
        "  - name: darwin",
        "    path: secrets/darwin.yaml",
        "    readers: [role:admin, platform:darwin]",
        "  - name: shared",
        "    paths: [secrets/shared/*.yaml]",
        "    readers: [role:admin, hosts]",
    ]
    return "\n".join(lines) + "\n"
