"""RMSNorm: scale each token vector by the reciprocal of its root mean square.

No mean subtraction and no bias (LLaMA). The statistic is computed in float32
whatever the activation dtype, then cast back before the learned gain, exactly
as ``transformers``' ``LlamaRMSNorm`` does, so logits match it to rounding.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
