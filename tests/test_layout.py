"""The import direction DESIGN.md fixes: orchestration -> assets -> resources -> model_adapters."""

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

LAYERS = ["orchestration", "assets", "resources", "model_adapters"]


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_only_point_down(layer):
    above = set(LAYERS[: LAYERS.index(layer)])
    for path in (PROJECT_ROOT / layer).rglob("*.py"):
        bad = imported_top_levels(path) & above
        assert not bad, f"{path.relative_to(PROJECT_ROOT)} imports {bad}, a layer above {layer}"


def test_model_adapters_know_nothing_of_dagster():
    for path in (PROJECT_ROOT / "model_adapters").rglob("*.py"):
        assert "dagster" not in imported_top_levels(path), path
