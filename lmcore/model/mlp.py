"""The gated feed-forward network: ``down(act(gate(x)) * up(x))``.

SwiGLU (act = SiLU, LLaMA) or GeGLU (act = tanh-approximated GELU). The gate
and up projections are one ``[2 * ffn, hidden]`` matrix (``gate_up_proj``):
one matmul instead of two; ``lmcore.hf`` splits it for transformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmcore.config import ModelConfig

ACTIVATIONS = {
    "swiglu": F.silu,
    "geglu": lambda x: F.gelu(x, approximate="tanh"),
}


class GatedMLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ffn_size = cfg.ffn_size
        self.act = ACTIVATIONS[cfg.mlp_type]
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.ffn_size, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.ffn_size, dim=-1)
        return self.down_proj(self.act(gate) * up)
