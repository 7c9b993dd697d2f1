"""The arrows of the code point one way, and actions are named only by the registry's modules."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT
from senseflosser.actions import ACTIONS

CORE = ROOT / "senseflosser"
WEB = ROOT / "app"


def _modules(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_imports_neither_the_web_layer_nor_the_benchmarks():
    for path, tree in _modules(CORE):
        wrong = _imported(tree) & {"app", "benchmarks", "flask", "werkzeug", "rq", "redis"}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_no_code_outside_the_registry_compares_against_an_action_name():
    """``action == "adversarial"`` belongs in no module but the action's own (its hooks say what it needs)."""
    names = set(ACTIONS)
    for folder in (CORE, WEB):
        for path, tree in _modules(folder):
            if path.parent.name == "actions":
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Compare):
                    for side in [node.left, *node.comparators]:
                        assert not (isinstance(side, ast.Constant) and side.value in names), \
                            f"{path.relative_to(ROOT)}:{node.lineno} compares against action {side.value!r}"
