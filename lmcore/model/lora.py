"""Low-rank adapters (LoRA): ``y = W x + (alpha / r) * B A dropout(x)``, with ``W`` frozen.

Why this shape: fine-tuning a model on a few thousand conversations needs a few million trainable
numbers, not all of them; the frozen ``W`` keeps what the base learned. ``A`` starts random and
``B`` at zero, so step 0 computes exactly the base model.

:class:`LoRALinear` keeps the wrapped layer's parameter name (``...qkv_proj.weight``) and adds
``lora_A`` ``[r, in]`` and ``lora_B`` ``[out, r]`` beside it, so a checkpoint holds the base weights
under their usual names plus the adapters, and resumes exactly like full training. Fused layers
(``qkv_proj``, ``gate_up_proj``) get one adapter for the fused matrix. :func:`merged_state_dict`
folds the adapters into the weights (``W + (alpha / r) B A``): the registered model is a plain
model that ``export-hf``, ``generate`` and the MLflow pyfunc load unchanged, and
:func:`adapter_state_dict` is the adapter on its own.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER_KEYS = (".lora_A", ".lora_B")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (no bias) plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if base.bias is not None:
            raise ValueError("LoRALinear wraps bias-free linear layers (lmcore's have no biases)")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.scale = alpha / rank
        self.dropout = dropout
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device,
                                               dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device,
                                               dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapter_in = F.dropout(x, self.dropout, training=self.training) if self.dropout else x
        return F.linear(x, self.weight) + F.linear(F.linear(adapter_in, self.lora_A), self.lora_B) * self.scale

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, rank={self.lora_A.shape[0]}, scale={self.scale:g}"


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> int:
    """Wrap every ``nn.Linear`` named in ``targets`` (the last part of its name) and freeze everything
    else; returns the number of trainable parameters. A target that matches nothing is an error."""
    found: set[str] = set()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha, dropout))
                found.add(name)
    missing = sorted(set(targets) - found)
    if missing:
        raise ValueError(f"training.lora.targets {missing} name no linear layer of the model "
                         "(its layers: qkv_proj, o_proj, gate_up_proj, down_proj, lm_head)")
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith(ADAPTER_KEYS))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def is_adapter_key(name: str) -> bool:
    return name.endswith(ADAPTER_KEYS)


def adapter_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters alone (``...lora_A`` / ``...lora_B``)."""
    return {k: v for k, v in state.items() if is_adapter_key(k)}


def merged_state_dict(state: dict[str, torch.Tensor], lora: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A plain model's state dict: every ``weight`` with its adapter folded in, the adapters dropped."""
    scale = lora["alpha"] / lora["rank"]
    merged = {k: v for k, v in state.items() if not is_adapter_key(k)}
    for key in state:
        if key.endswith(".lora_A"):
            prefix = key[: -len("lora_A")]
            a, b = state[key].float(), state[prefix + "lora_B"].float()
            weight = merged[prefix + "weight"]
            merged[prefix + "weight"] = (weight.float() + scale * (b @ a)).to(weight.dtype)
    return merged
