"""Every command's bad-usage cases: exit 2 (1 for ``validate --strict`` on bad data), one line that
names what is wrong, and no traceback on the console (README: "Exit codes")."""

from __future__ import annotations

import pytest

from flows import cli

NO_CUDA = "device 'cuda' requested"


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def cases(tmp_path):
    """(argv, exit code, text the error output must hold); files are made under ``tmp_path``."""
    empty = _write(tmp_path / "empty.jsonl", "\n\n")
    good = _write(tmp_path / "good.jsonl", '{"text": "a line of verse long enough to keep"}\n' * 4)
    missing_data = _write(tmp_path / "missing-data.yaml", f"data:\n  training_data_path: [{tmp_path}/nope.jsonl]\n")
    typo = _write(tmp_path / "typo.yaml", "trainig:\n  max_steps: 3\n")
    ok_config = _write(tmp_path / "ok.yaml", f"data:\n  training_data_path: [{good}]\n")
    return [
        (["plan", "--device", "cuda"], 2, NO_CUDA),
        (["plan", "--device", "tpu"], 2, "--device must be cuda, mps or cpu"),
        (["plan", "--set", "training.batch_size=many"], 2, "--set training.batch_size=many"),
        (["validate", str(tmp_path / "nope.jsonl")], 2, "nope.jsonl: file not found (FILES)"),
        (["validate", "--config", missing_data], 2, "nope.jsonl: file not found (data.training_data_path)"),
        (["validate"], 2, "name FILES or give --config"),
        (["validate", "--strict", empty, good], 1, "1 file(s) hold no records"),
        (["run", str(tmp_path / "nope.yaml")], 2, "config file not found"),
        (["run", typo], 2, "unknown key 'trainig'; did you mean 'training'?"),
        (["run", missing_data], 2, "data.training_data_path"),
        (["run", ok_config, "--set", "training.max_steps=abc"], 2, "--set training.max_steps=abc"),
        (["run", ok_config, "--refresh", "tokenise"], 2, "unknown stage 'tokenise'"),
        (["stage", "tokenise", ok_config], 2, "tokenise"),
        (["models", "show", "nope", "--models-dir", str(tmp_path / "models")], 2, "no model 'nope'"),
        (["generate", "nope", "--prompt", "x", "--models-dir", str(tmp_path / "models")], 2, "no model 'nope'"),
        (["export-hf", "nope", str(tmp_path / "out"), "--models-dir", str(tmp_path / "models")], 2, "no model 'nope'"),
        (["server", "restart"], 2, "restart"),
    ]


def test_each_bad_usage_exits_with_the_documented_code_and_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect-home"))
    failures = []
    for argv, code, text in cases(tmp_path):
        got = cli.main(argv)
        out = capsys.readouterr()
        both = " ".join((out.out + out.err).split())  # rich may wrap a long line inside its usage box
        if got != code or text not in both or "Traceback" in both:
            failures.append((argv, got, both[-400:]))
    assert failures == []


@pytest.mark.parametrize("debug_at", [0, -1])
def test_debug_anywhere_on_the_line_prints_the_traceback(tmp_path, capsys, debug_at):
    argv = ["plan", "--device", "cuda"]
    argv.insert(len(argv) if debug_at == -1 else 0, "--debug")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert NO_CUDA in err and "Traceback" in err
