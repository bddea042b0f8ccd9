"""Fixtures for trainer tests; the tiny model and in-memory loader live in train_fixtures.py."""

import pytest
import torch

from lmcore.config import ModelConfig, PipelineConfig


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine two spinning
    OpenMP threads run several times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_cfg() -> PipelineConfig:
    return PipelineConfig.from_dict({
        "training": {"batch_size": 2, "learning_rate": 1e-2, "warmup_steps": 0, "log_every": 1,
                     "eval_every": 2, "eval_batches": 2, "checkpoint_every": 2, "keep_last_checkpoints": 2},
        "precision": {"dtype": "fp32"},
    })


@pytest.fixture
def tiny_model_cfg() -> ModelConfig:
    return ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, seq_length=16)
