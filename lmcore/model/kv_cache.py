"""A preallocated key/value cache for incremental decoding.

One ``[layers, B, KV, max_len, D]`` tensor each for keys and values, allocated
once per ``generate`` call: a decoding step writes one slot per layer and
attends over the filled prefix (a view, no concatenation, no copies). All
rows share the write position because prompts are left-padded to one length;
padding slots are hidden by the attention mask, not by the cache.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = (num_layers, batch, kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0  # slots filled by completed forward passes

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v`` ``[B, KV, T, D]`` after the filled prefix; return keys/values for all filled slots."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked for {end}")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, steps: int) -> None:
        """Mark ``steps`` more slots as filled (called once per forward, after every layer wrote)."""
        self.length += steps
