"""rekey.run on sops-made vectors: what it changes, what it leaves, and that its progress adds up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyrage

from sopsctl import rekey
from sopsctl.model import CreationRule, RuleKey

from .test_rotate import identities, own_rule


def test_progress_counts_every_file_once_changed_or_not(vectors: Path, tmp_path: Path) -> None:
    """A progress bar sized to the files given reaches its end: unchanged and plain files count too."""
    names = ["changes/nested.enc.yaml", "stays/nested.enc.yaml", "stays/plain.yaml"]
    for name in names[:2]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vectors / "yaml/nested.enc.yaml", tmp_path / name)
    (tmp_path / names[2]).write_text("not: encrypted\n")
    own = own_rule((vectors / "yaml/nested.enc.yaml").read_bytes(), "yaml")
    newcomer = RuleKey(str(pyrage.x25519.Identity.generate().to_public()))
    grown = CreationRule("^changes/", (own.key_groups[0] + (newcomer,),))
    steps: list[int] = []
    report = rekey.run(tmp_path, names, [grown, CreationRule("^stays/", own.key_groups)], identities(vectors),
                       progress=steps.append)
    assert report.changed == [names[0]] and report.unchanged == [names[1]] and report.failed == []
    assert sum(steps) == len(names)
