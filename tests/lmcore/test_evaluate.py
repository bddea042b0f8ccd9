"""run_evaluate: loss, perplexity and bits per byte over the whole eval split, samples, metrics.json."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from lmcore.config import ModelConfig, PipelineConfig
from lmcore.evaluate import run_evaluate
from lmcore.model import Transformer
from lmcore.train.checkpoint import save_checkpoint
from lmcore.train.stage import run_train

sys.path.insert(0, str(Path(__file__).parent / "train"))  # shared corpus helpers of the trainer tests
from train_fixtures import build_token_dir, synthetic_texts  # noqa: E402

MODEL = ModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, seq_length=64)


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny model: a second thread only adds spinning on a busy machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_token_dir(tmp_path_factory.mktemp("eval-corpus"), synthetic_texts(120, 0), synthetic_texts(15, 1))


def test_uniform_model_scores_ln_vocab_nats_per_token_and_matching_bits_per_byte(corpus, tmp_path):
    token_dir, tok_dir, cfg = corpus
    model = Transformer(MODEL)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()                      # zero logits: a uniform distribution over 300 tokens
    ckpt = save_checkpoint(tmp_path / "ckpt", model=model, model_cfg=MODEL, metadata={"step": 0})
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"sample_prompts": []})})
    metrics = run_evaluate(ckpt, [token_dir], tok_dir, cfg, tmp_path / "eval")
    split = json.loads((token_dir / "eval-00000.json").read_text())
    assert metrics["eval_loss"] == pytest.approx(math.log(300), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(300, rel=1e-4)
    assert metrics["eval_target_tokens"] == split["tokens"] - 1          # the whole split, each token once
    expected_bpb = math.log(300) * split["tokens"] / split["utf8_bytes"] / math.log(2)
    assert metrics["bits_per_byte"] == pytest.approx(expected_bpb, rel=1e-5)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["bits_per_byte"] == metrics["bits_per_byte"]


def test_trained_checkpoint_beats_uniform_and_writes_samples(corpus, tmp_path):
    token_dir, tok_dir, _ = corpus
    cfg = PipelineConfig.from_dict({
        "training": {"batch_size": 4, "max_steps": 25, "learning_rate": 5e-3, "warmup_steps": 2, "eval_every": 25,
                     "checkpoint_every": 100, "sample_prompts": ["ROMEO:", "The king"], "sample_max_new_tokens": 8},
        "precision": {"dtype": "fp32"}})
    summary = run_train(cfg, MODEL, [token_dir], tok_dir, tmp_path / "train")
    metrics = run_evaluate(tmp_path / "train" / summary["checkpoint"], [token_dir], tok_dir, cfg, tmp_path / "eval")
    assert metrics["eval_loss"] < math.log(300) - 1.0
    assert metrics["eval_loss"] == pytest.approx(summary["final_eval_loss"], rel=0.05)
    split = json.loads((token_dir / "eval-00000.json").read_text())  # what pretokenize counted, not evaluate
    assert (metrics["eval_split_tokens"], metrics["eval_utf8_bytes"]) == (split["tokens"], split["utf8_bytes"])
    nats = metrics["eval_loss"] * split["tokens"]  # every eval token is a target here (text only)
    assert metrics["bits_per_byte"] == pytest.approx(nats / split["utf8_bytes"] / math.log(2))
    assert [s["prompt"] for s in metrics["samples"]] == ["ROMEO:", "The king"]
    assert all(isinstance(s["completion"], str) and s["completion"] for s in metrics["samples"])
    assert metrics["eval_tokens_per_sec"] > 0 and metrics["train_tokens_per_sec"] > 0
    assert metrics["step"] == 25
