"""Every example config loads, names existing data (except templates for unshipped data), the demo is tiny."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmcore.config import PipelineConfig
from lmcore.data.inputs import input_paths

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid_and_its_data_exists(path):
    cfg = PipelineConfig.from_yaml(path)
    if path.name not in ("gpu.yaml", "shakespeare-cpu.yaml"):  # templates for data that is not shipped
        train_files, _ = input_paths(cfg)
        assert train_files and all(Path(f).is_file() for f in train_files)


def test_demo_config_builds_a_small_model():
    cfg = PipelineConfig.from_yaml(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
    model = cfg.model.resolve().model_copy(update={"vocab_size": cfg.tokenizer.vocab_size})
    assert model.num_parameters() < 1_000_000
