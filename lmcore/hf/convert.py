"""Hugging Face interop: lmcore models as ``LlamaForCausalLM`` folders and back.

``save_hf(model, out_dir, tokenizer=None)`` writes ``model.safetensors``,
``config.json`` and ``generation_config.json`` that
``transformers.AutoModelForCausalLM.from_pretrained`` loads with equal logits;
``load_hf(dir)`` reads such a folder (ours or one written by
``LlamaForCausalLM.save_pretrained``) into a :class:`~lmcore.model.Transformer`.

Every name and shape translation is in the state-dict adapter below
(``to_hf_state_dict`` / ``from_hf_state_dict``): lmcore fuses q/k/v into
``qkv_proj`` and gate/up into ``gate_up_proj``; Hugging Face keeps them apart.
RoPE uses the same rotate_half layout on both sides, so no permutation is needed.

Only SwiGLU maps to LlamaForCausalLM. GeGLU would need Gemma, which also scales
the embeddings and offsets the norm gains, so such models are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmcore.config import ModelConfig
from lmcore.errors import CheckpointError, ConfigError
from lmcore.model import Transformer

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
# lmcore-only settings (no HF equivalent) ride along in config.json under this key.
LMCORE_KEY = "lmcore"
_RUNTIME_FIELDS = ("attention_backend", "document_masking", "gradient_checkpointing", "init_std", "dropout")

# lmcore name (per layer, after "layers.{i}.") -> HF name (after "model.layers.{i}.")
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
_QKV = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")
_GATE_UP = ("mlp.gate_proj.weight", "mlp.up_proj.weight")


# --------------------------------------------------------------------------- state-dict adapter


def to_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmcore ``state_dict()`` -> LlamaForCausalLM names (no ``lm_head`` when tied, as transformers saves)."""
    _require_swiglu(cfg)
    q_rows, kv_rows = cfg.num_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    out = {"model.embed_tokens.weight": state["embed_tokens.weight"], "model.norm.weight": state["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(cfg.num_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        for ours, theirs in _LAYER_NAMES.items():
            out[dst + theirs] = state[src + ours]
        for name, part in zip(_QKV, state[src + "attn.qkv_proj.weight"].split([q_rows, kv_rows, kv_rows])):
            out[dst + name] = part
        for name, part in zip(_GATE_UP, state[src + "mlp.gate_up_proj.weight"].chunk(2)):
            out[dst + name] = part
    return {k: v.detach().contiguous() for k, v in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig, source: str = "") -> dict[str, torch.Tensor]:
    """LlamaForCausalLM tensors -> lmcore ``state_dict()`` names (fusing q/k/v and gate/up)."""

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise CheckpointError(f"missing tensor '{name}'", path=source or None)
        return hf[name]

    out = {"embed_tokens.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = take("lm_head.weight")
    for i in range(cfg.num_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        for ours, theirs in _LAYER_NAMES.items():
            out[dst + ours] = take(src + theirs)
        out[dst + "attn.qkv_proj.weight"] = torch.cat([take(src + n) for n in _QKV])
        out[dst + "mlp.gate_up_proj.weight"] = torch.cat([take(src + n) for n in _GATE_UP])
    return out


# --------------------------------------------------------------------------- config adapter


def to_hf_config(cfg: ModelConfig, dtype: torch.dtype = torch.float32, tokenizer: Any = None) -> dict[str, Any]:
    """The ``config.json`` of the equivalent LlamaForCausalLM."""
    _require_swiglu(cfg)
    dtype_name = str(dtype).removeprefix("torch.")
    ids = special_token_ids(tokenizer)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.ffn_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.seq_length,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # transformers < 5
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # transformers >= 5
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        "torch_dtype": dtype_name,  # transformers < 5
        "dtype": dtype_name,
        "use_cache": True,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
        LMCORE_KEY: {name: getattr(cfg, name) for name in _RUNTIME_FIELDS},
    }


def from_hf_config(raw: dict[str, Any], source: str = "") -> ModelConfig:
    """A ``ModelConfig`` for a LlamaForCausalLM ``config.json``; refuses what lmcore cannot reproduce."""
    where = source or None
    if raw.get("model_type") != "llama" and "LlamaForCausalLM" not in (raw.get("architectures") or []):
        raise CheckpointError(f"not a LlamaForCausalLM config (model_type={raw.get('model_type')!r})", path=where)
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    unsupported = {
        "hidden_act": raw.get("hidden_act", "silu") != "silu",
        "attention_bias": bool(raw.get("attention_bias")),
        "mlp_bias": bool(raw.get("mlp_bias")),
        f"rope type {rope_type!r}": rope_type != "default",
        "pretraining_tp": raw.get("pretraining_tp", 1) != 1,
    }
    heads, hidden = raw["num_attention_heads"], raw["hidden_size"]
    if raw.get("head_dim") not in (None, hidden // heads) or hidden % heads:
        unsupported["head_dim != hidden_size / num_attention_heads"] = True
    bad = [name for name, is_bad in unsupported.items() if is_bad]
    if bad:
        raise CheckpointError(f"unsupported LlamaForCausalLM feature(s): {', '.join(bad)}", path=where)
    fields: dict[str, Any] = dict(
        vocab_size=raw["vocab_size"], hidden_size=hidden, num_layers=raw["num_hidden_layers"], num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads") or heads, intermediate_size=raw["intermediate_size"],
        seq_length=raw.get("max_position_embeddings", 2048), mlp_type="swiglu",
        rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10_000.0))),
        norm_eps=raw.get("rms_norm_eps", 1e-6), tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
        init_std=raw.get("initializer_range", 0.02))
    fields.update({k: v for k, v in (raw.get(LMCORE_KEY) or {}).items() if k in _RUNTIME_FIELDS})
    try:
        return ModelConfig(**fields)
    except ValueError as exc:
        raise CheckpointError(f"config.json does not describe a valid model: {exc}", path=where) from None


def special_token_ids(tokenizer: Any) -> dict[str, Optional[int]]:
    """bos/eos/pad ids of an ``LmcoreTokenizer`` (``bos_id``...) or a transformers tokenizer (``bos_token_id``...)."""

    def first(*names: str) -> Optional[int]:
        for name in names:
            value = getattr(tokenizer, name, None)
            if isinstance(value, int):
                return value
        return None

    if tokenizer is None:
        return {"bos": None, "eos": None, "pad": None, "end_of_turn": None}
    return {"bos": first("bos_id", "bos_token_id"), "eos": first("eos_id", "eos_token_id"),
            "pad": first("pad_id", "pad_token_id"), "end_of_turn": first("end_of_turn_id")}


# --------------------------------------------------------------------------- folders


def save_hf(model: Transformer, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write a transformers-loadable LlamaForCausalLM folder; also ``tokenizer.save_pretrained(out_dir)`` if given."""
    cfg = model.config
    _require_swiglu(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = model.embed_tokens.weight.dtype
    tensors = {k: v.cpu() for k, v in to_hf_state_dict(model.state_dict(), cfg).items()}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    config = to_hf_config(cfg, dtype, tokenizer)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    ids = special_token_ids(tokenizer)
    eos = [t for t in (ids["eos"], ids["end_of_turn"]) if t is not None]
    generation = {"bos_token_id": ids["bos"], "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
                  "pad_token_id": ids["pad"]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def load_hf(path: str | Path, dtype: Optional[torch.dtype] = None, device: str | torch.device = "cpu") -> Transformer:
    """A :class:`Transformer` from a LlamaForCausalLM folder (single or sharded safetensors).

    Weights keep their stored dtype unless ``dtype`` is given; the model is in eval mode.
    """
    folder = Path(path)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError("no config.json: not a Hugging Face model folder", path=str(folder))
    cfg = from_hf_config(json.loads(config_path.read_text(encoding="utf-8")), source=str(config_path))
    hf_state = read_safetensors(folder)
    state = from_hf_state_dict(hf_state, cfg, source=str(folder))
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a transformers folder (one file, or the shards its index names)."""
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    if (folder / INDEX_NAME).is_file():
        index = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
        return [folder / name for name in sorted(set(index["weight_map"].values()))]
    raise CheckpointError(f"no {WEIGHTS_NAME} or {INDEX_NAME} (only safetensors weights are read)", path=str(folder))


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers folder, under its Hugging Face names."""
    tensors: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def _require_swiglu(cfg: ModelConfig) -> None:
    if cfg.mlp_type != "swiglu":
        raise ConfigError(f"only SwiGLU models map to LlamaForCausalLM; this model uses {cfg.mlp_type!r} "
                          "(train with model.custom.mlp_type=swiglu to export to transformers)",
                          key="model.mlp_type")
