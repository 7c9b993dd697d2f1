"""The docs say what the code does: tables generated from the registry stay equal to it."""

from __future__ import annotations

import re
from pathlib import Path

from senseflosser import actions
from senseflosser.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_action_table_is_the_registry():
    text = README.read_text()
    found = re.search(r"<!-- actions-table:start[^>]*-->\n(.*?)<!-- actions-table:end -->", text, re.S)
    assert found, "README.md lacks the generated actions table"
    assert found.group(1) == actions.markdown_table(), "regenerate it with `senseflosser actions --markdown`"


def test_cli_lists_every_action(capsys):
    assert main(["actions"]) == 0
    out = capsys.readouterr().out
    for spec in actions.ACTIONS.values():
        assert f"{spec.name}: {spec.description}" in out and spec.magnitude.meaning in out


def test_cli_floss_help_names_every_action(capsys):
    try:
        main(["floss", "--help"])
    except SystemExit:
        pass
    out = " ".join(capsys.readouterr().out.split())
    for spec in actions.ACTIONS.values():
        assert spec.name in out


def test_readme_model_tables_are_the_cards():
    from senseflosser.evaluation import markdown_tables
    from senseflosser.models import ModelRegistry, default_models_dir

    text = README.read_text()
    found = re.search(r"<!-- models-table:start[^>]*-->\n(.*?)<!-- models-table:end -->", text, re.S)
    assert found, "README.md lacks the generated model tables"
    cards = ModelRegistry(default_models_dir()).cards()
    assert found.group(1) == markdown_tables(cards), "regenerate them with `senseflosser models --markdown`"
