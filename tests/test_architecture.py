"""The import direction of docs/architecture.md holds: no module imports a layer above its own, or beside it."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
ARCHITECTURE = ROOT / "docs/architecture.md"


def layers(doc: Path = ARCHITECTURE) -> dict[str, int]:
    """Unit name -> layer (0 = lowest), from the list under '<!-- layers: highest first -->'."""
    text = doc.read_text().split("<!-- layers: highest first -->", 1)[1]
    block = text.split("```text\n", 1)[1].split("```", 1)[0]
    rows = [re.split(r"\s{2,}", line.strip())[0].split() for line in block.splitlines() if line.strip()]
    return {name: len(rows) - 1 - i for i, names in enumerate(rows) for name in names}


def unit_of(path: Path, package: Path) -> str | None:
    """'training' for <package>/training/trainer.py, 'cli' for <package>/cli.py; None for the package root."""
    parts = path.relative_to(package).with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def imported_units(path: Path) -> set[str]:
    """The policylab units a module imports anywhere in it (function-level imports too)."""
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        units |= {name.split(".")[1] for name in names if name.startswith("policylab.")}
    return units


def violations(package: Path, order: dict[str, int]) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        unit = unit_of(path, package)
        if unit is None:
            continue
        for target in sorted(imported_units(path) - {unit}):
            if order[target] >= order[unit]:
                found.append(f"{path.relative_to(package)} ({unit}) imports {target}")
    return found


def test_every_module_has_a_layer():
    units = {unit_of(path, ROOT / "src/policylab") for path in (ROOT / "src/policylab").rglob("*.py")} - {
        None
    }
    missing = sorted(units - set(layers()))
    assert not missing, f"add these to the layers in docs/architecture.md: {missing}"


def test_imports_point_down_the_layers():
    assert violations(ROOT / "src/policylab", layers()) == []


def test_an_upward_or_sideways_import_is_caught(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "training/loop.py").write_text(
        "def f():\n    from policylab.evaluation import evaluate_policy\n"
    )
    (tmp_path / "datasets.py").write_text("import policylab.envs.pusht\nfrom policylab.errors import X\n")
    assert violations(tmp_path, layers()) == [
        "datasets.py (datasets) imports envs",
        "training/loop.py (training) imports evaluation",
    ]
