"""Rotary position embeddings (RoPE), in the Hugging Face LLaMA convention.

A head vector of size ``D`` is split into halves ``(x1, x2)``; frequency ``i``
rotates the pair ``(x1[i], x2[i])``. This "rotate_half" layout is the one
``LlamaForCausalLM`` uses, so q/k projection weights map 1:1 to transformers
with no permutation (the original Meta checkpoints interleave pairs instead).

The tables are computed on demand rather than stored as buffers: they are a
few kilobytes, cost a handful of small kernels, and a model built on the meta
device (FSDP) or moved between devices and dtypes can never hold stale ones.
"""

from __future__ import annotations

import torch


def rope_tables(head_dim: int, theta: float, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``positions.shape + (head_dim,)`` in float32.

    ``positions`` holds integer positions: ``arange(T)`` for training, a ``[B, T]``
    tensor when rows of a left-padded batch start at different offsets.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    freqs = positions[..., None].float() * inv_freq  # [..., D/2]
    angles = torch.cat((freqs, freqs), dim=-1)  # [..., D]: both halves share frequency i
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, T, D]`` by the angles in ``cos``/``sin`` (``[T, D]`` or ``[B, 1, T, D]``)."""
    return x * cos + rotate_half(x) * sin
