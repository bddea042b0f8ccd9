import torch

from lmcore.config import TrainingConfig
from lmcore.train.optim import build_optimizer, param_groups

from train_fixtures import TinyLM


def test_vectors_get_no_weight_decay_and_matrices_do():
    model = TinyLM()
    groups = param_groups(model, 0.1)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_optimizer_takes_betas_eps_and_lr_from_config():
    cfg = TrainingConfig(learning_rate=2e-3, adam_beta1=0.8, adam_beta2=0.9, adam_eps=1e-6, weight_decay=0.05)
    opt = build_optimizer(TinyLM(), cfg, "cpu")
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (2e-3, (0.8, 0.9), 1e-6, 0.05)
    assert g.get("fused") or g.get("foreach")


def test_fused_and_loop_implementations_agree():
    cfg = TrainingConfig(learning_rate=1e-2)
    results = []
    for impl in ("auto", "loop"):
        torch.manual_seed(0)
        model = TinyLM()
        opt = build_optimizer(model, cfg, "cpu", implementation=impl)
        for _ in range(3):
            model(torch.arange(8)[None]).square().mean().backward()
            opt.step()
            opt.zero_grad()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
