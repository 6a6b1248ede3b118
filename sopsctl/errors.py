"""The exception tree and the one exit-code table: every error a user can see is built here."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """SPEC §4 exit codes; nothing else in sopsctl picks a number."""

    OK = 0
    FOUND = 1  # a checking command found something (lint, audit, --check, --dry-run)
    USAGE = 2  # bad command line
    FAILED = 3  # could not do (all of) what was asked: bad input, unloadable policy, …
    BUG = 4  # an unexpected exception: a bug in sopsctl


class SopsctlError(Exception):
    """An error the user caused or can fix; its message is the whole story, one line per problem."""

    exit_code: ExitCode = ExitCode.FAILED

    def lines(self) -> list[str]:
        return str(self).splitlines() or [type(self).__name__]


class UsageError(SopsctlError):
    exit_code = ExitCode.USAGE


class InputError(SopsctlError):
    """An input (file, key, argument value) cannot be read or is malformed."""


class KeyFormatError(InputError):
    """A recipient, identity or ssh key that does not parse or fails its checksum."""


class RootNotFoundError(InputError):
    @classmethod
    def from_start(cls, start: str) -> RootNotFoundError:
        return cls(
            f"no .sops.yaml (or policies/ folder) found in {start} or any parent; "
            "run from inside the repository or pass --root DIR"
        )


class PolicyError(SopsctlError):
    """The policy cannot be used: each problem carries its file:line."""

    def __init__(self, problems: Iterable[object]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

