"""Model commands take model ids only: a path that leaves the models folder exits 2 and touches nothing.

The reproduction from the bug report: a folder outside ``models/`` holding a ``metadata.json``
was deleted by ``lmcore models delete ../../x``; ``..`` emptied the working directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows import cli
from tests.flows.pipeline_fixtures import tiny_registered_model

ROOT = Path(__file__).resolve().parents[3]
ESCAPES = ("../../x", "../x", "..", ".", "", "/tmp", ".hidden", "a/../../x", " ", "x\\..\\..")


@pytest.fixture
def layout(tmp_path):
    """``w/models`` with one real model, and ``x`` beside ``w`` that looks like a model folder."""
    models = tmp_path / "w" / "models"
    model_id = tiny_registered_model(models, name="tiny")
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "metadata.json").write_text("{}")
    (tmp_path / "w" / "metadata.json").write_text("{}")  # so that '..' from models/ also looks like a model
    hidden = models / ".hidden"
    hidden.mkdir()
    (hidden / "metadata.json").write_text("{}")
    return tmp_path, models, model_id


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("command", ["delete", "show", "generate", "export-hf"])
def test_every_escaping_id_exits_2_and_nothing_anywhere_changes(layout, command, capsys):
    root, models, model_id = layout
    before = _snapshot(root)
    for bad in ESCAPES:
        if command == "delete":
            args = ["models", "delete", bad, "--yes", "--models-dir", str(models)]
        elif command == "show":
            args = ["models", "show", bad, "--models-dir", str(models)]
        elif command == "generate":
            args = ["generate", bad, "--prompt", "x", "--models-dir", str(models)]
        else:
            args = ["export-hf", bad, str(root / "out"), "--models-dir", str(models)]
        assert cli.main(args) == 2, (command, bad)
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") <= 2, err
    assert _snapshot(root) == before


def test_the_reported_reproduction_run_from_the_working_folder_deletes_nothing(layout):
    root, models, model_id = layout
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "models", "delete", "../../x", "--yes",
                           "--models-dir", "models"], cwd=root / "w", capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert "is not a model id" in proc.stderr and (root / "x" / "metadata.json").is_file()


def test_delete_asks_on_a_terminal_and_needs_yes_otherwise(layout, capsys):
    root, models, model_id = layout
    assert cli.main(["models", "delete", "latest", "--models-dir", str(models)]) == 2  # stdin is not a terminal
    assert "pass --yes" in capsys.readouterr().err and (models / model_id).is_dir()
    assert cli.main(["models", "delete", "latest", "--yes", "--models-dir", str(models)]) == 0
    assert not (models / model_id).exists() and (root / "x").is_dir() and (models / ".hidden").is_dir()
