"""Every example config loads and names shipped data (each runs as is); the demo is tiny; the shipped
Shakespeare split is what ``scripts/split_shakespeare.py`` makes and reads natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmcore.config import PipelineConfig
from lmcore.data.inputs import input_paths

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid_and_its_data_exists(path):
    cfg = PipelineConfig.from_yaml(path)
    train_files, eval_files = input_paths(cfg)
    assert train_files and all(Path(f).is_file() for f in train_files + eval_files)


def test_demo_config_builds_a_small_model():
    cfg = PipelineConfig.from_yaml(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
    model = cfg.model.resolve().model_copy(update={"vocab_size": cfg.tokenizer.vocab_size})
    assert model.num_parameters() < 1_000_000


ROOT = Path(__file__).resolve().parents[2]
SHAKESPEARE = ROOT / "data" / "shakespeare"


def _split_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("split_shakespeare", ROOT / "scripts" / "split_shakespeare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_split_is_what_the_script_makes_and_holds_out_whole_plays(tmp_path):
    import gzip
    import json

    script = _split_script()
    shipped = [SHAKESPEARE / script.TRAIN_FILE, SHAKESPEARE / script.HELDOUT_FILE]
    train, held = (gzip.decompress(p.read_bytes()).decode().splitlines(keepends=True) for p in shipped)
    assert {json.loads(line)["source"] for line in held} == set(script.HELDOUT)
    assert not {json.loads(line)["source"] for line in train} & set(script.HELDOUT)
    assert len(train) > 10 * len(held) > 1000
    assert script.main([str(shipped[0]), str(shipped[1]), "--out", str(tmp_path)]) == 0
    for name, lines in ((script.TRAIN_FILE, train), (script.HELDOUT_FILE, held)):
        assert gzip.decompress((tmp_path / name).read_bytes()).decode().splitlines(keepends=True) == lines


def test_the_shipped_corpus_reads_natively(tmp_path):
    from lmcore.data.validate import run_validate

    cfg = PipelineConfig.from_yaml(ROOT / "examples" / "shakespeare-cpu.yaml")
    data = cfg.data.model_copy(update={"training_data_path": cfg.data.eval_data_path, "eval_data_path": []})
    summary = run_validate(None, data, tmp_path)
    assert summary["totals"]["valid"] == summary["totals"]["lines"] > 100 and summary["invalid_fraction"] == 0
