"""One pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lmcore.config import ModelConfig
from lmcore.model.attention import CausalSelfAttention
from lmcore.model.attention_backends import AttentionPlan
from lmcore.model.kv_cache import KVCache
from lmcore.model.mlp import GatedMLP
from lmcore.model.norm import RMSNorm


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.dropout = cfg.dropout
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = GatedMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan,
                cache: Optional[KVCache] = None) -> torch.Tensor:
        x = x + self._drop(self.attn(self.attn_norm(x), cos, sin, plan, cache))
        x = x + self._drop(self.mlp(self.mlp_norm(x)))
        return x

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, training=True) if self.dropout and self.training else x
