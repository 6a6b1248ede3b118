"""Shell completion of names from the policy: hosts, identities, keys and selectors."""

from collections.abc import Callable
from pathlib import Path


def _policy():  # type: ignore[no-untyped-def]
    """The policy of the repository around the shell's directory, or None: completion never fails loudly."""
    from .. import ops
    from ..errors import SopsctlError

    try:
        return ops.load(ops.open_repo(Path.cwd()))
    except (SopsctlError, OSError):
        return None


def names(section: str, *, active_only: bool = False) -> Callable[[str], list[str]]:
    def complete(incomplete: str) -> list[str]:
        policy = _policy()
        if policy is None:
            return []
        table = getattr(policy, section)
        return sorted(n for n, e in table.items()
                      if n.startswith(incomplete) and (not active_only or getattr(e, "active", True)))

    return complete


def selectors(incomplete: str) -> list[str]:
    policy = _policy()
    if policy is None:
        return []
    found = [f"identity:{n}" for n in policy.identities] + [f"host:{n}" for n in policy.hosts]
    found += [f"key:{n}" for n in policy.keys] + [f"group:{n}" for n in policy.groups]
    found += [f"role:{r}" for r in sorted({i.role for i in policy.identities.values()})]
    found += [f"platform:{p}" for p in sorted({h.platform for h in policy.hosts.values() if h.platform})]
    return sorted(s for s in found if s.startswith(incomplete))
