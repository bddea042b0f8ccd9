"""The decoder-only transformer: embeddings, N blocks, final norm, LM head.

Reads top to bottom like the data flows::

    x = embed(ids)                                  [B, T, C]
    for block in layers: x = block(x, rope, mask)   pre-norm attention + gated MLP
    logits = head(norm(x))                          [B, T, V]  (head = embedding matrix when tied)

No biases anywhere. Weight init: normal(0, init_std), except the two projections
that write into the residual stream (``attn.o_proj``, ``mlp.down_proj``), which
get ``init_std / sqrt(2 * num_layers)`` so the stream's variance does not grow
with depth. When embeddings are tied there is no ``lm_head`` module at all: the
state dict holds one copy of the matrix (safetensors refuses shared tensors).

``forward`` returns logits, or with ``targets`` the summed loss (which the trainer uses: the
chunked head + loss of :mod:`lmcore.model.loss` never holds the full logits). Generation with a
KV cache lives in :mod:`lmcore.model.generation` (``model.generate``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmcore.config import ModelConfig
from lmcore.model.attention_backends import AttentionPlan, activation_dtype, plan_attention
from lmcore.model.block import Block
from lmcore.model.kv_cache import KVCache
from lmcore.model.loss import cross_entropy_sum, linear_cross_entropy
from lmcore.model.norm import RMSNorm
from lmcore.model.rope import rope_tables

RESIDUAL_PROJECTIONS = ("attn.o_proj.weight", "mlp.down_proj.weight")


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter; call after ``to_empty`` when the model was built on the meta device."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.num_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:  # RMSNorm gains
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, mean=0.0, std=residual_std if name.endswith(RESIDUAL_PROJECTIONS) else std)

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Parameter count (a tied matrix counted once); equals ``config.num_parameters()``."""
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.embed_tokens.weight.numel() + (self.lm_head.weight.numel() if self.lm_head is not None else 0)
        return n

    # ------------------------------------------------------------------ forward

    def forward(self, input_ids: torch.Tensor, doc_ids: Optional[torch.Tensor] = None,
                targets: Optional[torch.Tensor] = None, loss_chunk_rows: int = 0) -> torch.Tensor:
        """Logits ``[B, T, V]`` for token ids ``[B, T]``; with ``targets`` ``[B, T]``, the summed
        cross-entropy (nats, float32) against them instead (``-100`` = no target).

        ``doc_ids`` ``[B, T]`` marks packed documents (contiguous runs of one id, as
        ``PackedLoader`` yields them); when ``config.document_masking`` is on, a token
        attends only to earlier tokens of its own document. Logits are in the activation
        dtype (float32 for a float32 model; bf16 under bf16 autocast). ``loss_chunk_rows`` > 0
        computes the loss ``loss_chunk_rows`` tokens at a time without the full logits
        (:mod:`lmcore.model.loss`); 0 through the logits.
        """
        cfg = self.config
        x = self.embed_tokens(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        cos, sin = self._rope(positions, activation_dtype(x))
        plan = plan_attention(cfg.attention_backend, x, doc_ids if cfg.document_masking else None,
                              dropout_p=cfg.dropout if self.training else 0.0, head_dim=cfg.head_dim)
        checkpointing = cfg.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if checkpointing:
                x = checkpoint(layer, x, cos, sin, plan, use_reentrant=False)
            else:
                x = layer(x, cos, sin, plan)
        if targets is None:
            return self.head(self.norm(x))
        return self.loss(self.norm(x), targets, loss_chunk_rows)

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor, chunk_rows: int = 0) -> torch.Tensor:
        """Summed cross-entropy (float32 nats) of the head's logits for ``hidden`` against ``targets``."""
        if chunk_rows > 0 and (self.lm_head is None or type(self.lm_head) is nn.Linear):  # not under LoRA
            weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
            return linear_cross_entropy(hidden, weight, targets, chunk_rows)
        return cross_entropy_sum(self.head(hidden), targets)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[..., C]`` to logits ``[..., V]``."""
        return F.linear(x, self.embed_tokens.weight) if self.lm_head is None else self.lm_head(x)

    def forward_cached(self, input_ids: torch.Tensor, positions: torch.Tensor, plan: AttentionPlan,
                       cache: KVCache, rope_table: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                       last_only: bool = True) -> torch.Tensor:
        """One incremental step for generation: append ``input_ids`` ``[B, T]`` at ``positions`` ``[B, T]``
        to ``cache`` and return logits (``[B, V]`` for the last position when ``last_only``, else ``[B, T, V]``).

        ``rope_table`` (from :meth:`rope_table`) saves recomputing the angles at every step."""
        x = self.embed_tokens(input_ids)
        cos_table, sin_table = rope_table or self.rope_table(int(positions.max()) + 1)
        cos, sin = cos_table[positions][:, None], sin_table[positions][:, None]  # [B, 1, T, D]: broadcast over heads
        for layer in self.layers:
            x = layer(x, cos, sin, plan, cache)
        cache.advance(input_ids.shape[1])
        if last_only:
            x = x[:, -1]
        return self.head(self.norm(x))

    def rope_table(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos, sin`` ``[length, D]`` for positions ``0..length-1`` in this model's dtype and device."""
        w = self.embed_tokens.weight
        return self._rope(torch.arange(length, device=w.device), w.dtype)

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rope_tables(self.config.head_dim, self.config.rope_theta, positions)
        return cos.to(dtype), sin.to(dtype)

    # ------------------------------------------------------------------ generation

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache for ``batch`` rows and up to ``max_len`` positions, on this model's device/dtype."""
        w = self.embed_tokens.weight
        return KVCache(self.config.num_layers, batch, self.config.kv_heads, max_len, self.config.head_dim,
                       w.device, w.dtype)

    def generate(self, input_ids: torch.Tensor | Sequence[Sequence[int]], max_new_tokens: int = 64,
                 temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 stop_tokens: Optional[Sequence[int] | int] = None, attention_mask: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None, pad_token_id: int = 0):
        """Sample continuations with a KV cache; see :func:`lmcore.model.generation.generate`."""
        from lmcore.model.generation import generate

        return generate(self, input_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, stop_tokens=stop_tokens, attention_mask=attention_mask, generator=generator,
                        pad_token_id=pad_token_id)
