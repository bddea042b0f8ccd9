"""training.seq_length_warmup: shorter rows first, the same tokens, exact resume, documents kept apart."""

from __future__ import annotations

import pytest
import torch

from lmcore.config import ModelConfig, PipelineConfig
from lmcore.data.loader import Batch, attention_doc_ids
from lmcore.train.stage import run_train
from train_fixtures import build_token_dir, synthetic_texts

MODEL = ModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, seq_length=192)
CONFIG = {"training": {"batch_size": 2, "max_steps": 12, "learning_rate": 3e-3, "warmup_steps": 2, "log_every": 1,
                       "checkpoint_every": 3, "eval_every": 100, "seq_length_warmup": {"start": 64, "fraction": 0.5}},
          "precision": {"dtype": "fp32"}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_token_dir(tmp_path_factory.mktemp("progressive"), synthetic_texts(120, 5), synthetic_texts(8, 6))


class Lengths:
    def __init__(self, crash_at=None):
        self.seen, self.crash_at = [], crash_at

    def on_log(self, step, metrics):
        self.seen.append((step, metrics["seq_length"]))

    def on_checkpoint(self, step, path):
        if step == self.crash_at:
            raise KeyboardInterrupt


def test_the_length_grows_in_steps_of_64_and_a_resumed_run_ends_bitwise_equal(corpus, tmp_path):
    token_dir, tok_dir, _ = corpus
    cfg = PipelineConfig.from_dict(CONFIG)
    torch.set_num_threads(1)
    straight = Lengths()
    run_train(cfg, MODEL, [token_dir], tok_dir, tmp_path / "straight", [straight])
    # 64 up to 192 over the first half (6 of 12 steps), in steps of 64; step k trains at progress (k-1)/12
    assert [length for _, length in straight.seen] == [64, 64, 64, 128, 128, 128] + [192] * 6
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, MODEL, [token_dir], tok_dir, tmp_path / "killed", [Lengths(crash_at=6)])
    again = Lengths()
    summary = run_train(cfg, MODEL, [token_dir], tok_dir, tmp_path / "killed", [again])
    assert summary["resumed_from"] == "checkpoints/step-00000006" and again.seen == straight.seen[6:]
    a = (tmp_path / "straight" / "final" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "killed" / "final" / "model.safetensors").read_bytes()


def test_repacking_keeps_every_window_apart_and_every_target():
    ids = torch.arange(2 * 8).view(2, 8)
    targets = ids + 100
    targets[0, 0] = -100
    docs = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 1]], dtype=torch.int32)
    packed = Batch(ids, targets, docs, 15).repacked(3)  # 16 tokens -> 5 rows of 3, the last token left out
    assert packed.input_ids.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14]]
    assert packed.num_target_tokens == 14 and packed.targets[0, 0] == -100
    # row 2 joins the end of window 0 (its document 1) with the start of window 1 (its document 0): the
    # two are far apart in the token stream, so they get different ids and do not attend to each other
    assert packed.doc_ids[2].tolist() == [1, 1, 9]
    assert attention_doc_ids(packed.doc_ids) is not None
    assert Batch(ids, targets, docs, 15).repacked(8).input_ids.shape == (2, 8)
