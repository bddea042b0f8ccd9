import math

import pytest
import torch

from lmcore.config import PipelineConfig
from lmcore.train.trainer import Trainer

from train_fixtures import TinyLM, make_batch


def config(**training):
    training.setdefault("learning_rate", 1e-2)
    return PipelineConfig.from_dict({"training": training, "precision": {"dtype": "fp32"}})


def masked_rows(seed=0, rows=4, seq=12, vocab=64):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, seq + 1), generator=g)
    targets = ids[:, 1:].clone()
    # Uneven loss masks: row r trains on its last (3 + 3r) positions only.
    for r in range(rows):
        targets[r, : seq - (3 + 3 * r) if 3 + 3 * r < seq else 0] = -100
    return ids[:, :-1].contiguous(), targets


def train_with_accumulation(accum: int, steps: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    trainer = Trainer(TinyLM(), config(gradient_accumulation_steps=accum, batch_size=4 // accum))
    for step in range(steps):
        ids, targets = masked_rows(seed=step)
        per = 4 // accum
        group = [make_batch(ids[i * per:(i + 1) * per], targets[i * per:(i + 1) * per]) for i in range(accum)]
        result = trainer.train_step(group, lr=1e-2)
        assert result.updated and result.target_tokens == int((targets != -100).sum())
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def test_gradient_accumulation_at_fixed_global_batch_gives_the_same_weights():
    one, two, four = (train_with_accumulation(a) for a in (1, 2, 4))
    torch.testing.assert_close(two, one, rtol=0, atol=2e-6)
    torch.testing.assert_close(four, one, rtol=0, atol=2e-6)


def test_loss_is_mean_nats_over_target_tokens_only():
    torch.manual_seed(0)
    trainer = Trainer(TinyLM(), config())
    ids, targets = masked_rows()
    with torch.no_grad():
        logits = trainer.model(ids)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), targets.reshape(-1), ignore_index=-100)
    result = trainer.train_step([make_batch(ids, targets)], lr=0.0)
    assert result.loss == pytest.approx(expected.item(), rel=1e-5)


def test_nonfinite_loss_skips_the_update_and_leaves_weights_and_moments_alone():
    torch.manual_seed(0)
    model = TinyLM()
    trainer = Trainer(model, config())
    ids, targets = masked_rows()
    trainer.train_step([make_batch(ids, targets)], lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    handle = model.register_forward_hook(lambda mod, inp, out: out * float("nan"))
    result = trainer.train_step([make_batch(ids, targets)], lr=1e-2)
    handle.remove()
    assert result.nonfinite and not result.updated and math.isnan(result.loss)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for m, s in zip(moments, trainer.optimizer.state.values()):
        assert torch.equal(m, s["exp_avg"])
    assert all(p.grad is None for p in model.parameters())


def test_gradient_clipping_limits_the_gradient_adamw_sees_and_reports_the_raw_norm():
    torch.manual_seed(0)
    trainer = Trainer(TinyLM(), config(max_grad_norm=1e-3, adam_beta1=0.9))
    ids, targets = masked_rows()
    result = trainer.train_step([make_batch(ids, targets)], lr=1e-2)
    assert result.grad_norm > 1e-2   # the norm before clipping is reported
    # After one step exp_avg = (1 - beta1) * clipped gradient, so its global norm is 0.1 * max_grad_norm.
    moment_norm = torch.cat([s["exp_avg"].flatten() for s in trainer.optimizer.state.values()]).norm()
    assert moment_norm.item() == pytest.approx(0.1 * 1e-3, rel=1e-4)


def test_bf16_autocast_step_is_finite_and_weights_stay_fp32():
    torch.manual_seed(0)
    cfg = PipelineConfig.from_dict({"precision": {"dtype": "bf16"}})
    trainer = Trainer(TinyLM(), cfg)
    ids, targets = masked_rows()
    result = trainer.train_step([make_batch(ids, targets)], lr=1e-3)
    assert result.updated and math.isfinite(result.loss)
    assert trainer.precision.name == "bf16"
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
