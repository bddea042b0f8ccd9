"""lmcore.train.distributed on CPU: real torchrun subprocesses with gloo, tiny models, few steps.

The key property: two processes with micro-batch 2 follow the same loss curve as one
process with micro-batch 4 (the same global batch), because the loss is normalised by
the GLOBAL target-token count and DDP/FSDP average gradients over ranks. Both go through
the real ``run_train``, which relaunches itself under torchrun when nproc_per_node > 1.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcore.config import ModelConfig, PipelineConfig
from lmcore.data.token_shards import TokenShardWriter
from lmcore.train.context import single_process_context
from lmcore.train.distributed import (
    DistributedError,
    gradient_scale,
    init_context,
    inside_torchrun,
    launch_torchrun,
    torchrun_command,
    transformer_blocks,
    unwrap_model,
    wrap_model,
)
from lmcore.train.stage import run_train

WORKER = Path(__file__).with_name("distributed_worker.py")
VOCAB = 96
MODEL = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, seq_length=32)


def training_config(batch_size: int, nproc: int, strategy: str = "ddp", accum: int = 1,
                    max_steps: int = 5, optimizer: str = "adamw") -> PipelineConfig:
    return PipelineConfig.from_dict({
        "training": {"batch_size": batch_size, "nproc_per_node": nproc, "strategy": strategy, "optimizer": optimizer,
                     "gradient_accumulation_steps": accum, "max_steps": max_steps, "learning_rate": 1e-2,
                     "scheduler_type": "constant_with_warmup", "warmup_steps": 0, "log_every": 1,
                     "eval_every": 1000, "checkpoint_every": 1000, "seed": 3},
        "precision": {"dtype": "fp32"}})


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory) -> Path:
    """A train split of patterned token documents (a learnable sequence, some loss-masked tokens)."""
    out = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    writer = TokenShardWriter(out, "train-00000", VOCAB, "train")
    lengths = rng.integers(20, 90, size=120)
    ids = np.concatenate([(np.arange(n) * rng.integers(1, 7) + rng.integers(0, VOCAB)) % VOCAB for n in lengths])
    mask = (rng.random(len(ids)) > 0.2).astype(np.uint8)  # uneven targets per rank: normalisation matters
    writer.append(ids.astype(np.uint16), mask, lengths, utf8_bytes=int(len(ids) * 4))
    writer.close()
    return out


class LossRecorder:
    def __init__(self):
        self.losses, self.checkpoints, self.summary = [], [], None

    def on_log(self, step, metrics):
        self.losses.append(metrics["loss"])

    def on_checkpoint(self, step, path):
        self.checkpoints.append(Path(path))

    def on_train_end(self, summary):
        self.summary = summary


@pytest.fixture(scope="module")
def single_process_run(token_dir, tmp_path_factory):
    """The reference: one process, micro-batch 4, 5 updates; ``(recorder, out_dir)``."""
    out = tmp_path_factory.mktemp("one")
    single = LossRecorder()
    run_train(training_config(batch_size=4, nproc=1), MODEL, [token_dir], None, out, [single])
    return single, out


def test_ddp_two_processes_follow_the_single_process_loss_curve(token_dir, single_process_run, tmp_path):
    single, _ = single_process_run
    double = LossRecorder()
    # run_train itself relaunches under torchrun when training.nproc_per_node > 1
    summary = run_train(training_config(batch_size=2, nproc=2), MODEL, [token_dir], None, tmp_path / "two", [double])
    assert len(single.losses) == len(double.losses) == 5
    assert single.losses[-1] < single.losses[0]
    np.testing.assert_allclose(double.losses, single.losses, rtol=1e-5)
    # rank 0 alone wrote the final checkpoint, and the callbacks in this process heard about it
    assert double.checkpoints == [tmp_path / "two" / "final"]
    assert (tmp_path / "two" / "final" / "model.safetensors").is_file()
    assert summary["steps"] == 5 and summary["final_loss"] == pytest.approx(single.losses[-1], rel=1e-5)


def test_ddp_with_muon_follows_the_single_process_muon_run(token_dir, tmp_path):
    """Muon orthogonalises the all-reduced gradient: every rank takes the same step as one process."""
    single, double = LossRecorder(), LossRecorder()
    run_train(training_config(4, 1, optimizer="muon"), MODEL, [token_dir], None, tmp_path / "one", [single])
    run_train(training_config(2, 2, optimizer="muon"), MODEL, [token_dir], None, tmp_path / "two", [double])
    assert len(double.losses) == 5 and single.losses[-1] < single.losses[0]
    np.testing.assert_allclose(double.losses, single.losses, rtol=1e-4)


def test_fsdp_run_train_matches_one_process_and_resumes_from_its_own_checkpoint(token_dir, single_process_run,
                                                                                tmp_path):
    # FSDP2 (fully_shard per block, then root) on gloo, 2 micro-batches per update (no_sync path).
    # 2 ranks x micro-batch 1 x 2 accumulation see the same 4 windows per update as 1 rank x micro-batch 4.
    single, single_dir = single_process_run
    first, resumed = LossRecorder(), LossRecorder()
    run_train(training_config(1, 2, "fsdp", accum=2, max_steps=3), MODEL, [token_dir], None, tmp_path / "fsdp",
              [first])
    # the final checkpoint is complete (gathered from the shards): it resumes to step 5
    summary = run_train(training_config(1, 2, "fsdp", accum=2, max_steps=5), MODEL, [token_dir], None,
                        tmp_path / "fsdp", [resumed])
    assert summary["resumed_from"] and summary["steps"] == 5
    np.testing.assert_allclose(first.losses + resumed.losses, single.losses, rtol=1e-5)
    from safetensors.torch import load_file

    sharded = load_file(str(tmp_path / "fsdp" / "final" / "model.safetensors"))
    plain = load_file(str(single_dir / "final" / "model.safetensors"))
    assert sharded.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(sharded[name], plain[name], rtol=1e-4, atol=1e-5)
    opt_sharded = torch.load(tmp_path / "fsdp" / "final" / "optimizer.pt", weights_only=True)
    opt_plain = torch.load(single_dir / "final" / "optimizer.pt", weights_only=True)
    assert opt_sharded["state"].keys() == opt_plain["state"].keys()
    assert [g["params"] for g in opt_sharded["param_groups"]] == [g["params"] for g in opt_plain["param_groups"]]


def test_launch_torchrun_raises_with_the_failing_ranks_traceback(tmp_path):
    lines = []
    with pytest.raises(DistributedError) as info:
        launch_torchrun(2, str(WORKER), ["fail", str(tmp_path / "x.json")], on_line=lines.append)
    assert "rank 1 refuses" in str(info.value)
    assert "exited with code" in str(info.value)
    assert any("rank 1 refuses" in line for line in lines)


def test_torchrun_command_runs_modules_and_scripts():
    assert torchrun_command(4, "lmcore.train.launch", ["a"])[-4:] == ["4", "-m", "lmcore.train.launch", "a"]
    cmd = torchrun_command(2, "worker.py", [1])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and cmd[-2:] == ["worker.py", "1"]


def test_outside_torchrun_the_context_is_a_single_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert not inside_torchrun()
    ctx = init_context(PipelineConfig())
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, "fsdp", ctx) is model


def test_gradient_scale_turns_rank_averaging_into_a_global_token_mean():
    ctx = single_process_context("cpu")
    ctx.world_size = 4
    # rank sums s_r scaled by 4/T and averaged over 4 ranks = sum(s_r)/T
    sums, total = [3.0, 5.0, 0.0, 8.0], 40
    averaged = sum(s * gradient_scale(total, ctx) for s in sums) / 4
    assert averaged == pytest.approx(sum(sums) / total)


def test_transformer_blocks_and_unwrap_find_the_model_layers():
    from lmcore.model import Transformer

    model = Transformer(ModelConfig(vocab_size=64, hidden_size=32, num_layers=3, num_heads=2, seq_length=8))
    assert len(transformer_blocks(model)) == 3
    wrapper = torch.nn.Module()
    wrapper.module = model
    assert unwrap_model(wrapper) is model


def test_two_nodes_on_localhost_follow_the_single_process_loss_curve(token_dir, single_process_run, tmp_path):
    """Node 0 is ``run_train`` here (as the pipeline's train stage calls it); node 1 is ``lmcore train-node``
    in another process, which waits for node 0's ticket in the shared store, then both meet at torchrun's
    c10d rendezvous (gloo, one rank each): 2 nodes x micro-batch 2 = the reference's micro-batch 4."""
    import subprocess

    from tests.servers import free_port

    single, _ = single_process_run
    store = tmp_path / "store"
    raw = training_config(batch_size=2, nproc=1).model_dump(mode="json")
    raw["training"].update(nnodes=2, rdzv_endpoint=f"127.0.0.1:{free_port()}")
    raw["paths"]["store"] = str(store)
    cfg = PipelineConfig.from_dict(raw)
    config = tmp_path / "config.yaml"
    config.write_text(cfg.to_yaml())
    root = Path(__file__).resolve().parents[3]
    node1 = subprocess.Popen([sys.executable, "-m", "flows.cli", "train-node", str(config), "--node-rank", "1",
                              "--wait", "120"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out_dir = store / "train" / ".work-twonodes"  # where the train stage of a pipeline run trains
        double = LossRecorder()
        summary = run_train(cfg, MODEL, [token_dir], None, out_dir, [double])
        output, _ = node1.communicate(timeout=120)
    finally:
        node1.kill()
    assert node1.returncode == 0, output
    assert "node 1: training finished" in output
    np.testing.assert_allclose(double.losses, single.losses, rtol=1e-5)
    assert summary["steps"] == 5 and (out_dir / "final" / "model.safetensors").is_file()
    assert not (out_dir / "rendezvous.json").exists()  # the ticket is gone with the run
