"""The layering STYLE.md asks for: a pure core that does no I/O, and imports that point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sopsctl"
PURE = ["model.py", "policy.py", "references.py", "engine.py", "audit.py", "lint.py", "changes.py", "globs.py",
        "regexes.py", "automata.py", "values.py", "matrix.py", "render.py", "reports.py", "sopsconfig.py",
        "crypto/shamir.py", "crypto/bech32.py", "crypto/agekeys.py", "formats/write.py", "formats/keyplan.py", "clanaudit.py"]
IMPURE_MODULES = {"os", "subprocess", "shutil", "tempfile", "pathlib", "socket", "sys"}
IMPURE_CALLS = {"open", "print", "input", "exec", "eval"}
ALLOWED = {"crypto/shamir.py": {"os"}}  # os.urandom as the default source of randomness, nothing else


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", PURE)
def test_pure_core_does_no_io(name: str) -> None:
    tree = ast.parse((PACKAGE / name).read_text())
    impure = _imports(tree) & IMPURE_MODULES - ALLOWED.get(name, set())
    assert not impure, f"{name} imports {impure}"
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not (calls & IMPURE_CALLS), f"{name} calls {calls & IMPURE_CALLS}"


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py")
                                         if "cli" not in p.parts and p.name != "__main__.py"),
                         ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_nothing_outside_the_cli_imports_the_cli(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            assert not (module == "cli" or module.startswith("cli.") or ".cli" in f".{module}" and node.level), \
                f"{path.name} imports the CLI ({module})"
            assert "typer" not in module, f"{path.name} imports typer"
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith(("typer", "sopsctl.cli")) for a in node.names), path.name
