"""Dependencies flow downward (DESIGN.md §2): lower packages never import the ones above them."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "areal_mega"
# package -> packages it must not import (those above it)
ABOVE = {
    "platform": ("models", "engine", "rollout", "weight_sync", "trainer", "cli", "cluster"),
    "models": ("engine", "rollout", "weight_sync", "trainer", "cli"),
    "engine": ("rollout", "weight_sync", "trainer", "cli"),
    "cluster": ("engine", "rollout", "trainer", "cli"),
    "algo": ("engine", "rollout", "weight_sync", "trainer", "cli"),
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_package_imports_only_downward(package):
    bad = []
    for path in sorted((PKG / package).rglob("*.py")):
        for mod in _imports(path):
            parts = mod.split(".")
            if parts[0] == "areal_mega" and len(parts) > 1 and parts[1] in ABOVE[package]:
                bad.append(f"{path.relative_to(PKG.parent)} imports {mod}")
    assert not bad, bad
