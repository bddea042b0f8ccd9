"""LoRA: which parameters train, that step 0 is the base, that merging is exact, that resume is exact."""

from __future__ import annotations

import pytest
import torch

from lmcore.config import ModelConfig, PipelineConfig
from lmcore.model import Transformer
from lmcore.model.lora import LoRALinear, adapter_state_dict, apply_lora, merged_state_dict
from lmcore.train import checkpoint as ckpt
from lmcore.train.stage import run_train

CFG = ModelConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                  seq_length=32)
TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


def test_only_the_adapters_train_and_their_count_is_rank_times_in_plus_out():
    model = Transformer(CFG)
    trainable = apply_lora(model, rank=4, alpha=8, dropout=0.0, targets=TARGETS)
    # per layer, r * (in + out): qkv 32 -> 32+2*16=64, o 32 -> 32, gate_up 32 -> 128, down 64 -> 32
    per_layer = 4 * ((32 + 64) + (32 + 32) + (32 + 128) + (64 + 32))
    assert trainable == 2 * per_layer == 3328
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {f"layers.{i}.{part}.{ab}" for i in range(2) for part in
                     ("attn.qkv_proj", "attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj") for ab in ("lora_A", "lora_B")}


def test_step_0_is_the_base_model_and_merging_folds_the_adapters_in_exactly():
    torch.manual_seed(0)
    base = Transformer(CFG).eval()
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        expected = base(ids)
        tuned = Transformer(CFG).eval()
        tuned.load_state_dict(base.state_dict())
        apply_lora(tuned, rank=4, alpha=8, dropout=0.0, targets=TARGETS)
        torch.testing.assert_close(tuned(ids), expected, atol=0, rtol=0)  # B starts at zero
        for module in tuned.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(std=0.05)  # as if trained
        adapted = tuned(ids)
        assert not torch.allclose(adapted, expected, atol=1e-4)
        plain = Transformer(CFG).eval()
        plain.load_state_dict(merged_state_dict(tuned.state_dict(), {"rank": 4, "alpha": 8}))
        torch.testing.assert_close(plain(ids), adapted, atol=1e-5, rtol=1e-5)
    adapter = adapter_state_dict(tuned.state_dict())
    assert adapter["layers.0.attn.qkv_proj.lora_A"].shape == (4, 32)
    assert adapter["layers.0.attn.qkv_proj.lora_B"].shape == (64, 4)
    assert adapter["layers.1.mlp.down_proj.lora_A"].shape == (4, 64) and len(adapter) == 16


def test_a_target_that_names_no_layer_is_an_error():
    with pytest.raises(ValueError, match=r"\['q_proj'\]"):
        apply_lora(Transformer(CFG), rank=4, alpha=8, dropout=0.0, targets=["q_proj"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "train"))
    from train_fixtures import build_token_dir, synthetic_texts

    return build_token_dir(tmp_path_factory.mktemp("lora-corpus"), synthetic_texts(80, 0), synthetic_texts(8, 1))


class CrashAt:
    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, step, path):
        if step == self.step:
            raise KeyboardInterrupt  # as if killed right after this checkpoint


def test_a_lora_run_resumes_to_the_same_weights_and_its_checkpoint_loads_merged(corpus, tmp_path):
    token_dir, tok_dir, _ = corpus
    cfg = PipelineConfig.from_dict({"training": {"batch_size": 4, "max_steps": 12, "learning_rate": 5e-3,
                                                 "warmup_steps": 2, "checkpoint_every": 4, "eval_every": 100,
                                                 "lora": {"rank": 4, "alpha": 8, "dropout": 0.1}},
                                    "precision": {"dtype": "fp32"}})
    torch.set_num_threads(1)
    straight = run_train(cfg, CFG, [token_dir], tok_dir, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg, CFG, [token_dir], tok_dir, tmp_path / "killed", [CrashAt(8)])
    resumed = run_train(cfg, CFG, [token_dir], tok_dir, tmp_path / "killed")
    assert resumed["resumed_from"] == "checkpoints/step-00000008" and resumed["trainable_parameters"] == 3328
    a = (tmp_path / "straight" / "final" / "model.safetensors").read_bytes()
    b = (tmp_path / "killed" / "final" / "model.safetensors").read_bytes()
    assert a == b  # adapters, frozen base and dropout RNG all restored exactly
    merged, _, meta = ckpt.load_model(tmp_path / "straight" / "final")
    assert meta["lora"]["rank"] == 4 and not any("lora" in n for n, _ in merged.named_parameters())
    assert straight["steps"] == 12
