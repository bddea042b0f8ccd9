"""RMSNorm: scale each token vector by the reciprocal of its root mean square.

    y = weight * x / sqrt(mean(x^2) + eps)

No mean subtraction and no bias (LLaMA). ``F.rms_norm`` computes exactly that
in one fused kernel (bit-identical to the written-out formula in float32, and
it accumulates low-precision inputs in float32 like ``LlamaRMSNorm``); one
kernel instead of six matters for per-token decoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
