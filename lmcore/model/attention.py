"""Causal self-attention with grouped-query heads and rotary positions.

``H`` query heads share ``KV`` key/value heads (``H % KV == 0``; ``KV == H`` is
multi-head, ``KV == 1`` multi-query). q, k and v come from one fused
projection ``qkv_proj`` (rows: H*D query, KV*D key, KV*D value), so the input
is read once; ``lmcore.hf`` splits it into q_proj/k_proj/v_proj. The kernel
that does the softmax is chosen by :mod:`lmcore.model.attention_backends`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lmcore.config import ModelConfig
from lmcore.model.attention_backends import AttentionPlan, attend
from lmcore.model.kv_cache import KVCache
from lmcore.model.rope import apply_rope


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, (cfg.num_heads + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan,
                cache: Optional[KVCache] = None) -> torch.Tensor:
        B, T, _ = x.shape
        H, KV = self.num_heads, self.kv_heads
        qkv = self.qkv_proj(x).view(B, T, H + 2 * KV, self.head_dim).transpose(1, 2)  # [B, H + 2KV, T, D]
        qk, v = qkv.split([H + KV, KV], dim=1)  # split, not slicing: its backward is one cat, no zero-fill
        q, k = apply_rope(qk, cos, sin).split([H, KV], dim=1)  # queries and keys rotate together
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        y = attend(q, k, v, plan)  # [B, H, T, D]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))
