"""Hugging Face interop: logits parity with LlamaForCausalLM, save_hf/load_hf round trips, refusals.

transformers models are built locally from a LlamaConfig; nothing is downloaded.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lmcore.config import ModelConfig
from lmcore.errors import CheckpointError, ConfigError
from lmcore.hf.convert import from_hf_state_dict, load_hf, save_hf, to_hf_state_dict
from lmcore.model import Transformer


def tiny(**overrides) -> ModelConfig:
    base = dict(vocab_size=131, hidden_size=48, num_layers=2, num_heads=6, num_kv_heads=2, intermediate_size=80,
                seq_length=64, rope_theta=5000.0, norm_eps=1e-6, init_std=0.1)
    base.update(overrides)
    return ModelConfig(**base)


def llama_for(cfg: ModelConfig) -> LlamaForCausalLM:
    hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn_size,
                         num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                         num_key_value_heads=cfg.kv_heads, max_position_embeddings=cfg.seq_length,
                         rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps,
                         tie_word_embeddings=cfg.tie_embeddings, attn_implementation="sdpa")
    return LlamaForCausalLM(hf_cfg).eval()


@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_transformers_llama_with_identical_weights(seed, tie):
    cfg = tiny(tie_embeddings=tie)
    ours = Transformer(cfg).eval()
    theirs = llama_for(cfg)
    missing, unexpected = theirs.load_state_dict(to_hf_state_dict(ours.state_dict(), cfg), strict=False)
    assert unexpected == [] and missing in ([], ["lm_head.weight"])
    if tie:
        assert theirs.lm_head.weight.data_ptr() == theirs.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(0, cfg.vocab_size, (2, 21))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=0, atol=1e-4)


def test_transformers_weights_load_into_lmcore_with_equal_logits(seed):
    cfg = tiny(tie_embeddings=False)
    theirs = llama_for(cfg)
    ours = Transformer(cfg).eval()
    ours.load_state_dict(from_hf_state_dict(theirs.state_dict(), cfg))
    ids = torch.randint(0, cfg.vocab_size, (1, 17))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=0, atol=1e-4)


class DuckTokenizer:
    """Stands in for LmcoreTokenizer: the ids and save_pretrained are all save_hf uses."""

    bos_id, eos_id, pad_id, end_of_turn_id = 1, 2, 0, 9

    def save_pretrained(self, out_dir):
        with open(f"{out_dir}/tokenizer_config.json", "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)


def test_save_hf_folder_loads_in_transformers_with_equal_logits(seed, tmp_path):
    cfg = tiny(tie_embeddings=True)
    ours = Transformer(cfg).eval()
    save_hf(ours, tmp_path, tokenizer=DuckTokenizer())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == [2, 9]
    assert (tmp_path / "tokenizer_config.json").is_file()
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(theirs, LlamaForCausalLM)
    ids = torch.randint(0, cfg.vocab_size, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=0, atol=1e-4)
        # Same greedy continuation from transformers' generate and ours.
        hf_out = theirs.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                 pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours.generate(ids, max_new_tokens=6, temperature=0), hf_out[:, 13:])


@pytest.mark.parametrize("tie", [True, False])
def test_save_hf_then_load_hf_is_bitwise_exact(seed, tmp_path, tie):
    cfg = tiny(tie_embeddings=tie, attention_backend="math", document_masking=False)
    ours = Transformer(cfg)
    save_hf(ours, tmp_path)
    loaded = load_hf(tmp_path)
    assert loaded.config.attention_backend == "math" and loaded.config.document_masking is False
    assert loaded.config.ffn_size == cfg.ffn_size and loaded.config.tie_embeddings == tie
    original, restored = ours.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)


def test_load_hf_reads_a_folder_written_by_transformers(seed, tmp_path):
    cfg = tiny(tie_embeddings=True)
    theirs = llama_for(cfg)
    theirs.save_pretrained(tmp_path)
    ours = load_hf(tmp_path)
    ids = torch.randint(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=0, atol=1e-4)


def test_bf16_model_saves_its_dtype_and_loads_back_in_bf16(seed, tmp_path):
    ours = Transformer(tiny()).to(torch.bfloat16)
    save_hf(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    loaded = load_hf(tmp_path)
    assert loaded.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(loaded.layers[1].attn.qkv_proj.weight, ours.layers[1].attn.qkv_proj.weight)


def test_geglu_model_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="only SwiGLU models map to LlamaForCausalLM"):
        save_hf(Transformer(tiny(mlp_type="geglu")), tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_load_hf_refuses_llama_features_lmcore_lacks(seed, tmp_path):
    save_hf(Transformer(tiny()), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["attention_bias"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="attention_bias"):
        load_hf(tmp_path)


def test_load_hf_names_a_missing_tensor(seed, tmp_path):
    from safetensors.torch import load_file, save_file

    save_hf(Transformer(tiny()), tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.up_proj.weight"):
        load_hf(tmp_path)


def test_load_hf_reads_sharded_safetensors(seed, tmp_path):
    cfg = tiny(tie_embeddings=False)
    theirs = llama_for(cfg)
    theirs.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = load_hf(tmp_path)
    ids = torch.randint(0, cfg.vocab_size, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=0, atol=1e-4)
