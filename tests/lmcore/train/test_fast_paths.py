"""Resume stays bitwise exact on the fast paths: bf16 autocast, the chunked head + loss, fused AdamW
and torch.compile, with the real Transformer and packed documents."""

import pytest
import torch

from lmcore.config import ModelConfig
from lmcore.hardware.detect import compile_available
from lmcore.model import Transformer
from lmcore.train import checkpoint as ckpt
from lmcore.train.loop import fit
from lmcore.train.trainer import Trainer

from train_fixtures import ListLoader, random_batches

MODEL = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                    seq_length=16)


class CrashAfter:
    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, step, path):
        if step == self.step:
            raise KeyboardInterrupt("simulated kill after a checkpoint")


def packed_batches(n, seed=0):
    batches = random_batches(n, seq=MODEL.seq_length, vocab=MODEL.vocab_size, seed=seed)
    for b in batches[::2]:  # every other batch packs two documents per row: the masked path
        b.doc_ids[:, 9:] = 1
    return batches


def make(tiny_cfg, precision, chunk_rows):
    training = tiny_cfg.training.model_copy(update={"max_steps": 6, "loss_chunk_rows": chunk_rows})
    cfg = tiny_cfg.model_copy(update={"training": training,
                                      "precision": tiny_cfg.precision.model_copy(update=precision)})
    torch.manual_seed(0)
    return Trainer(Transformer(MODEL), cfg), ListLoader(packed_batches(8)), ListLoader(packed_batches(2, seed=9))


def weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def straight_then_resumed(tmp_path, tiny_cfg, precision, chunk_rows):
    trainer, train, evaluation = make(tiny_cfg, precision, chunk_rows)
    straight = fit(trainer, MODEL, train, evaluation, tmp_path / "straight")
    expected = weights(trainer)
    trainer, train, evaluation = make(tiny_cfg, precision, chunk_rows)
    with pytest.raises(KeyboardInterrupt):
        fit(trainer, MODEL, train, evaluation, tmp_path / "killed", [CrashAfter(2)])
    trainer, train, evaluation = make(tiny_cfg, precision, chunk_rows)  # what a new process builds
    source = ckpt.latest_good_checkpoint(tmp_path / "killed")
    assert source.name == "step-00000002"
    resumed = fit(trainer, MODEL, train, evaluation, tmp_path / "killed", loader_state=trainer.load(source),
                  resumed_from=source)
    assert resumed["start_step"] == 2 and resumed["steps"] == 6
    return straight, resumed, expected, weights(trainer)


def assert_same(expected, got):
    assert expected.keys() == got.keys()
    for name, tensor in got.items():
        assert torch.equal(tensor, expected[name]), name


def test_bf16_chunked_loss_and_fused_adamw_resume_bitwise(tmp_path, tiny_cfg):
    # chunks of 5 rows: 32 tokens per batch end in a partial chunk
    straight, resumed, expected, got = straight_then_resumed(tmp_path, tiny_cfg, {"dtype": "bf16"}, chunk_rows=5)
    assert straight["precision"] == "bf16" and not straight["compiled"]
    trainer, _, _ = make(tiny_cfg, {"dtype": "bf16"}, chunk_rows=5)
    assert trainer.optimizer.defaults["fused"] and trainer.loss_chunk_rows == 5
    assert_same(expected, got)


@pytest.mark.slow
@pytest.mark.skipif(not compile_available("cpu"), reason="inductor needs a C compiler on CPU")
def test_compiled_training_resumes_bitwise(tmp_path, tiny_cfg, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    straight, resumed, expected, got = straight_then_resumed(tmp_path, tiny_cfg, {"dtype": "fp32", "use_compile": True},
                                                             chunk_rows=5)
    assert straight["compiled"] and resumed["compiled"]
    assert not straight["compile_failed"] and not resumed["compile_failed"]
    assert_same(expected, got)
    # and compiling changes the arithmetic by rounding only: the eager run lands within float noise
    _, _, eager, _ = straight_then_resumed(tmp_path / "eager", tiny_cfg, {"dtype": "fp32", "use_compile": False},
                                           chunk_rows=5)
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, eager[name], rtol=1e-4, atol=1e-5, msg=name)
