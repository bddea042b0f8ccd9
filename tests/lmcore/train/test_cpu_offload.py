"""training.cpu_offload on a machine without CUDA: checked, refused clearly, and planned.

The offload itself (FSDP2's CPUOffloadPolicy) needs a GPU: ``benchmarks/gpu_check.sh --cpu-offload``
runs it there. These check the logic around it.
"""

from __future__ import annotations

import pytest
import torch

from flows import cli
from lmcore.config import ModelConfig, PipelineConfig
from lmcore.errors import ConfigError
from lmcore.hardware import estimate_training_memory
from lmcore.train.distributed import cpu_offload, wrap_for_training
from lmcore.train.context import single_process_context
from lmcore.train.stage import run_train


def test_cpu_offload_without_fsdp_is_a_config_error():
    with pytest.raises(ConfigError, match="cpu_offload is FSDP2's"):
        PipelineConfig.from_dict({"training": {"cpu_offload": True}})
    cfg = PipelineConfig.from_dict({"training": {"cpu_offload": True, "strategy": "fsdp"}})
    assert cpu_offload(cfg) and not cpu_offload(PipelineConfig())


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the offload runs (gpu_check.sh)")
def test_without_cuda_the_run_stops_before_any_work_naming_the_key(tmp_path):
    cfg = PipelineConfig.from_dict({"training": {"cpu_offload": True, "strategy": "fsdp"}})
    with pytest.raises(ConfigError, match="training.cpu_offload: .*no CUDA GPU"):
        run_train(cfg, ModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2), [tmp_path], None,
                  tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_one_process_without_offload_trains_the_plain_model():
    model = torch.nn.Linear(2, 2)
    assert wrap_for_training(model, PipelineConfig(), single_process_context("cpu")) is model


def test_the_estimate_moves_model_states_off_the_gpu_and_plan_shows_it(capsys):
    cfg = ModelConfig(vocab_size=32000, hidden_size=1024, num_layers=24, num_heads=16, num_kv_heads=4,
                      intermediate_size=2816, seq_length=1024, tie_embeddings=False)
    plain = estimate_training_memory(cfg, batch_size=4)
    offloaded = plain.with_cpu_offload(cfg)
    assert offloaded.gradients == offloaded.optimizer == 0
    assert offloaded.total == offloaded.weights + plain.activations + plain.logits
    # two of the 24 blocks' weights stay on the GPU at a time
    block = (plain.parameters - 32000 * 1024) / 24
    assert offloaded.weights == int(2 * block * plain.weights / plain.parameters)
    assert cli.main(["plan"]) == 0
    assert "cpu_offload" in capsys.readouterr().out
