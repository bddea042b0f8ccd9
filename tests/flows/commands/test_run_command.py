"""`lmcore run` / `lmcore stage` in process: one line per stage, cached reruns, exit codes of failures."""

from __future__ import annotations

from flows import cli
from flows.stage_names import STAGES
from tests.flows.pipeline_fixtures import tiny_config, write_corpus


def test_stage_prints_one_line_per_stage_and_a_rerun_says_cached(tmp_path, capsys):
    cfg = tiny_config(write_corpus(tmp_path / "c.jsonl", seed=4), tmp_path / "store", tmp_path / "models")
    config = tmp_path / "c.yaml"
    config.write_text(cfg.to_yaml())
    assert cli.main(["stage", "tokenizer", str(config)]) == 0
    lines = _stage_lines(capsys.readouterr().out)
    assert [ln[:2] for ln in lines] == [["validate", "ran"], ["shard", "ran"], ["tokenizer", "ran"]]
    assert "120 valid / 2 quarantined" in " ".join(lines[0])
    assert cli.main(["stage", "tokenizer", str(config)]) == 0
    lines = _stage_lines(capsys.readouterr().out)
    assert [ln[:2] for ln in lines] == [["validate", "cached"], ["shard", "cached"], ["tokenizer", "cached"]]


def _stage_lines(out: str) -> list[list[str]]:
    """The per-stage lines (the status lines about the Prefect API and where to look are left out)."""
    return [ln.split() for ln in out.splitlines() if ln.split()[:1] and ln.split()[0] in STAGES]


def test_a_failing_stage_exits_1_naming_the_stage_and_the_data_file(tmp_path, capsys):
    corpus = tmp_path / "broken.jsonl"
    corpus.write_text("\n".join(['{"text": "fine line of verse"}'] + ["{not json"] * 9) + "\n")
    cfg = tiny_config(corpus, tmp_path / "store", tmp_path / "models")
    config = tmp_path / "c.yaml"
    config.write_text(cfg.to_yaml())
    assert cli.main(["run", str(config), "--no-sample"]) == 1
    captured = capsys.readouterr()
    assert "stage 'validate' failed" in captured.out
    assert "failed-report.json" in captured.err  # the report survives the failed stage
    left = list((tmp_path / "store" / "validate").iterdir())
    assert [p.name.endswith(".failed-report.json") for p in left] == [True]  # nothing that looks finished

