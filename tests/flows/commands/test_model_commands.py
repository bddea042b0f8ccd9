"""`lmcore models|generate|chat` in process, against a tiny saved model; exit codes and help texts."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import click
import pytest
import typer

from flows import cli
from tests.flows.pipeline_fixtures import tiny_registered_model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_registered_model(root, name="tiny")
    return root


def lmcore(*args: str) -> int:
    return cli.main(list(args))


def test_models_list_json_and_show_by_prefix(models_dir, capsys):
    assert lmcore("models", "list", "--models-dir", str(models_dir), "--json") == 0
    listing = json.loads(capsys.readouterr().out)
    rows = listing["models"]
    assert listing["registry"] == []  # no MLflow store here, and listing must not create one
    assert len(rows) == 1 and rows[0]["name"] == "tiny" and rows[0]["parameters"] > 0
    assert lmcore("models", "show", "tiny-", "--models-dir", str(models_dir)) == 0
    assert json.loads(capsys.readouterr().out)["id"] == rows[0]["id"]


def test_generate_continues_the_prompt_reproducibly_with_a_seed(models_dir, capsys):
    args = ("generate", "latest", "--models-dir", str(models_dir), "--prompt", "thou art", "--max-new-tokens", "6",
            "--seed", "3")
    assert lmcore(*args) == 0
    first = capsys.readouterr().out
    assert lmcore(*args) == 0
    assert first.startswith("thou art") and capsys.readouterr().out == first


def test_chat_reads_piped_stdin_line_by_line_until_exit(models_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("good morrow\n/reset\nwho art thou\n/exit\nnever read\n"))
    assert lmcore("chat", "latest", "--models-dir", str(models_dir), "--max-new-tokens", "4", "--seed", "0") == 0
    out = capsys.readouterr().out
    assert out.count("assistant>") == 2 and "(conversation reset)" in out


def test_unknown_model_id_exits_2_and_names_the_id(models_dir, capsys):
    assert lmcore("generate", "nope", "--models-dir", str(models_dir), "--prompt", "x") == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_run_with_a_misspelt_override_exits_2_and_suggests_the_key(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data: {training_data_path: x.jsonl}\n")
    assert lmcore("run", str(config), "--set", "training.learnin_rate=1e-3") == 2
    assert "training.learning_rate" in capsys.readouterr().err


def test_unknown_stage_names_exit_2_before_anything_runs(tmp_path, capsys):
    assert lmcore("stage", "tokenise", str(tmp_path / "c.yaml")) == 2
    assert lmcore("run", str(tmp_path / "c.yaml"), "--refresh", "tokenise") == 2


def test_every_command_and_option_has_help_text():
    cli._register_commands()
    group = typer.main.get_command(cli.app)
    missing = []

    def walk(cmd: click.Command, path: str) -> None:
        if not (cmd.help or "").strip():
            missing.append(path)
        for param in cmd.params:
            if isinstance(param, click.Option) and not (param.help or "").strip() and param.name != "help":
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    for name in ("run", "stage", "models", "generate", "chat"):
        walk(group.commands[name], name)
    assert missing == []


def test_cli_start_up_imports_neither_torch_nor_prefect_nor_mlflow():
    code = ("import sys, flows.cli as c; c._register_commands(); "
            "print(sorted(m for m in ('torch', 'prefect', 'mlflow', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
