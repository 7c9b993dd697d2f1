"""The test suite's own layout: plain helpers in helpers.py, fixtures in conftest.py, no copies.

Read with ``ast``; nothing here imports the files it checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Module-level names pytest itself reads in a conftest.py.
CONFTEST_VARIABLES = {"pytest_plugins", "collect_ignore", "collect_ignore_glob"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_fixture(decorator: ast.expr) -> bool:
    """``@pytest.fixture``, ``@pytest.fixture(...)``, ``@fixture`` or ``@fixture(...)``."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr == "fixture" and isinstance(target.value, ast.Name) and target.value.id == "pytest"
    return isinstance(target, ast.Name) and target.id == "fixture"


def _assigned_names(node: ast.stmt) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _defined_names(tree: ast.Module) -> set[str]:
    """Top-level functions, classes and assigned names of a module."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            names.update(_assigned_names(node))
    return names


def test_no_test_file_imports_conftest_as_a_module():
    imports = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import):
                imports += [f"{path.name}:{node.lineno}" for a in node.names if a.name.split(".")[0] == "conftest"]
            elif (isinstance(node, ast.ImportFrom) and node.level == 0
                  and (node.module or "").split(".")[0] == "conftest"):
                imports.append(f"{path.name}:{node.lineno}")
    assert imports == [], f"import plain helpers from helpers.py, not conftest: {imports}"


def test_conftest_defines_only_fixtures_and_hooks():
    strays = []
    for node in _tree(TESTS / "conftest.py").body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not (node.name.startswith("pytest_") or any(_is_fixture(d) for d in node.decorator_list)):
                strays.append(f"function {node.name} (line {node.lineno})")
        elif isinstance(node, ast.ClassDef):
            strays.append(f"class {node.name} (line {node.lineno})")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            strays += [f"name {name} (line {node.lineno})" for name in _assigned_names(node)
                       if not name.startswith("_") and name not in CONFTEST_VARIABLES]
    assert strays == [], f"conftest.py keeps fixtures and pytest hooks only; move these to helpers.py: {strays}"


def test_helpers_define_no_fixtures():
    fixtures = [node.name for node in ast.walk(_tree(TESTS / "helpers.py"))
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and any(_is_fixture(d) for d in node.decorator_list)]
    assert fixtures == [], f"fixtures belong in conftest.py (pytest does not find them in helpers.py): {fixtures}"


def test_no_test_file_defines_its_own_copy_of_a_helper():
    """A test file that defines a name helpers.py defines has (most likely) copied it: import it instead."""
    shared = {name for name in _defined_names(_tree(TESTS / "helpers.py")) if not name.startswith("_")}
    copies = {path.name: sorted(shared & _defined_names(_tree(path))) for path in sorted(TESTS.glob("test_*.py"))}
    copies = {name: names for name, names in copies.items() if names}
    assert copies == {}, f"use `from helpers import ...` instead of these copies: {copies}"
