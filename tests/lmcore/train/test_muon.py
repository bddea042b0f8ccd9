"""training.optimizer: muon: which parameters Muon gets, what its update looks like, exact resume, a real run."""

import pytest
import torch

from lmcore.config import ModelConfig, PipelineConfig
from lmcore.model import Transformer
from lmcore.train.trainer import Trainer
from lmcore.train.optim import MuonWithAdamW, split_for_muon
from lmcore.train.optim import build_optimizer, set_learning_rate
from lmcore.train.stage import run_train

from train_fixtures import build_token_dir, random_batches, synthetic_texts

pytestmark = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch>=2.9")


def model_cfg(tied=True):
    return ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=64, seq_length=16, tie_embeddings=tied)


def pipeline(**training):
    training = {"optimizer": "muon", "learning_rate": 1e-2, **training}
    return PipelineConfig.from_dict({"training": training, "precision": {"dtype": "fp32"}})


@pytest.mark.parametrize("tied", [True, False])
def test_muon_gets_the_hidden_matrices_and_adamw_the_token_tables_and_norms(tied):
    model = Transformer(model_cfg(tied))
    hidden, other, vectors = split_for_muon(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)].split(".", 2)[-1] for p in hidden) == sorted(
        ["attn.qkv_proj.weight", "attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight"] * 2)
    assert {names[id(p)] for p in other} == ({"embed_tokens.weight"} if tied else
                                             {"embed_tokens.weight", "lm_head.weight"})
    assert all(p.dim() == 1 for p in vectors)
    assert sum(p.numel() for p in hidden + other + vectors) == model.num_parameters()


def test_one_learning_rate_drives_both_halves_and_muon_lr_scale_scales_only_muon():
    opt = build_optimizer(Transformer(model_cfg()), pipeline(muon_lr_scale=2.0).training, "cpu")
    assert isinstance(opt, MuonWithAdamW)
    set_learning_rate(opt, 1e-3)
    assert [g["lr"] for g in opt.muon.param_groups] == [2e-3]
    assert [g["lr"] for g in opt.adamw.param_groups] == [1e-3, 1e-3]
    assert [g["weight_decay"] for g in opt.adamw.param_groups] == [0.1, 0.0]  # no decay on norm gains


def test_muon_update_is_orthogonalised_and_has_the_rms_of_an_adamw_update():
    torch.manual_seed(0)
    model = Transformer(model_cfg())
    opt = build_optimizer(model, pipeline(weight_decay=0.0).training, "cpu")
    w = model.layers[0].mlp.gate_up_proj.weight
    before = w.detach().clone()
    (batch,) = random_batches(1, batch=4, seq=16)
    torch.nn.functional.cross_entropy(model(batch.input_ids).flatten(0, 1), batch.targets.flatten()).backward()
    grad_sv = torch.linalg.svdvals(w.grad)
    opt.step()
    delta = w.detach() - before
    sv = torch.linalg.svdvals(delta)
    # Newton-Schulz flattens the spectrum: Muon's singular values lie within ~[0.5, 1.5] of one another ...
    assert sv.max() / sv.min() < 4 < grad_sv.max() / grad_sv.min()
    # ... and "match_rms_adamw" sizes the step like AdamW's (RMS about 0.2 * lr).
    rms = delta.square().mean().sqrt().item()
    assert 0.1 * 1e-2 < rms < 0.3 * 1e-2


def test_grad_scaler_drives_muon_like_fp16_training_does_and_skips_overflowing_steps():
    """The fp16 path (GPU) on CPU: GradScaler unscales both halves before the step and skips on inf."""
    (batch,) = random_batches(1, batch=2, seq=16)
    finals, grads = [], []
    for scale in (None, 2.0 ** 12):
        torch.manual_seed(0)
        model = Transformer(model_cfg())
        opt = build_optimizer(model, pipeline().training, "cpu")
        scaler = torch.amp.GradScaler("cpu", init_scale=scale or 1.0, enabled=scale is not None)
        loss = torch.nn.functional.cross_entropy(model(batch.input_ids).flatten(0, 1), batch.targets.flatten())
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # clipping reads these grads: every group of both halves must be unscaled
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        scaler.step(opt)
        scaler.update()
        finals.append(_weights(model))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(finals[1], finals[0], rtol=1e-4, atol=1e-6)

    before = _weights(model)
    model.layers[0].attn.o_proj.weight.grad = torch.full_like(model.layers[0].attn.o_proj.weight, float("inf"))
    scaler.step(opt)  # an overflow: the scaler must not call Muon or AdamW
    scaler.update()
    assert torch.equal(_weights(model), before) and scaler.get_scale() < 2.0 ** 12


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_muon_run_saved_and_loaded_continues_bitwise_like_an_uninterrupted_one(tmp_path):
    batches = random_batches(5, batch=2, seq=16)
    torch.manual_seed(0)
    straight = Trainer(Transformer(model_cfg()), pipeline())
    for b in batches:
        straight.train_step([b], lr=1e-2)

    torch.manual_seed(0)
    first = Trainer(Transformer(model_cfg()), pipeline())
    for b in batches[:3]:
        first.train_step([b], lr=1e-2)
    first.save(tmp_path / "ckpt", model_cfg(), loader_state=None)
    torch.manual_seed(123)  # the resumed trainer starts from different weights: load must overwrite all
    resumed = Trainer(Transformer(model_cfg()), pipeline())
    resumed.load(tmp_path / "ckpt")
    assert resumed.optimizer.muon.state and resumed.optimizer.adamw.state  # momentum and moments came back
    for b in batches[3:]:
        resumed.train_step([b], lr=1e-2)
    assert torch.equal(_weights(resumed.model), _weights(straight.model))


def test_an_adamw_checkpoint_is_refused_with_a_clear_error(tmp_path):
    adamw = torch.optim.AdamW(Transformer(model_cfg()).parameters())
    opt = build_optimizer(Transformer(model_cfg()), pipeline().training, "cpu")
    with pytest.raises(ValueError, match="optimizer 'adamw'"):
        opt.load_state_dict(adamw.state_dict())


def test_unknown_optimizer_name_is_a_config_error_naming_the_key():
    from lmcore.errors import ConfigError

    with pytest.raises(ConfigError, match="training.optimizer"):
        PipelineConfig.from_dict({"training": {"optimizer": "sgd"}})


def test_muon_with_fsdp_across_processes_is_refused_when_the_config_is_read():
    from lmcore.errors import ConfigError

    with pytest.raises(ConfigError, match="FSDP shards"):
        PipelineConfig.from_dict({"training": {"optimizer": "muon", "strategy": "fsdp", "nproc_per_node": 2}})


def test_run_train_with_muon_learns_on_real_token_shards(tmp_path):
    token_dir, tok_dir, _ = build_token_dir(tmp_path / "corpus", synthetic_texts(200, 0), synthetic_texts(20, 1))
    cfg = PipelineConfig.from_dict({
        "training": {"optimizer": "muon", "batch_size": 4, "max_steps": 30, "learning_rate": 3e-3,
                     "warmup_steps": 2, "eval_every": 10, "eval_batches": 4, "checkpoint_every": 30},
        "precision": {"dtype": "fp32"}})
    arch = ModelConfig(vocab_size=300, hidden_size=48, num_layers=2, num_heads=4, num_kv_heads=2, seq_length=64)
    losses = []

    class Collect:
        def on_log(self, step, metrics):
            losses.append(metrics["loss"])

    summary = run_train(cfg, arch, [token_dir], tok_dir, tmp_path / "run", [Collect()])
    assert summary["steps"] == 30 and summary["skipped_steps"] == 0
    assert summary["final_loss"] < losses[0] - 1.0   # starts near ln 300 = 5.7
