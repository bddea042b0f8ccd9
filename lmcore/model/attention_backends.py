"""Attention kernels and the choice between them.

Four interchangeable ways to compute ``softmax(q k^T / sqrt(D) + mask) v``:

* ``flash``: the ``flash_attn`` package (CUDA, fp16/bf16 only). Packed
  documents use ``flash_attn_varlen_func`` with cumulative sequence lengths, so
  no ``T x T`` mask is ever built. Imported lazily; not a hard dependency.
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``. Causal-only
  attention takes the ``is_causal=True`` fast path; document masking passes a
  block-diagonal causal boolean mask. GQA uses ``enable_gqa`` (no K/V copies).
* ``flex``: PyTorch's ``flex_attention`` with a block-sparse document mask.
  Chosen by ``auto`` on CUDA for packed documents when flash-attn is absent:
  SDPA with a dense ``[B, 1, T, T]`` mask falls off its flash kernel, while
  flex skips the fully masked blocks. Not a config value; compiled on CUDA.
* ``math``: the formula written out, in float32 softmax. The reference the
  other ones are tested against.

``auto`` picks flash when it is importable and the activations are CUDA
fp16/bf16, else sdpa (flex for packed documents on CUDA). An explicit ``flash`` that cannot run falls back to sdpa
with one warning (a model trained on a GPU must still load on a laptop).

Tensors are ``[B, H, T, D]`` (queries) and ``[B, KV, S, D]`` (keys/values).
An :class:`AttentionPlan` is built once per forward pass and shared by every
layer, so masks and sequence lengths are computed once, not per layer.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Optional, get_args

import torch
import torch.nn.functional as F

from lmcore.config import AttentionBackend

BACKENDS = get_args(AttentionBackend)


@dataclass
class AttentionPlan:
    """What every layer needs to attend in one forward pass.

    ``mask`` (bool, True = may attend) is ``[B, 1, Tq, S]`` or ``None``; with
    ``None``, ``is_causal`` says whether the plain causal mask applies (only
    used when ``Tq == S``). ``cu_seqlens``/``max_seqlen`` describe packed
    documents for flash varlen.
    """

    backend: str
    is_causal: bool = True
    mask: Optional[torch.Tensor] = None
    cu_seqlens: Optional[torch.Tensor] = None
    max_seqlen: int = 0
    dropout_p: float = 0.0
    block_mask: Optional[object] = None  # flex_attention BlockMask
    doc_ids: Optional[torch.Tensor] = None  # kept by flex plans for the dense-mask fallback


@functools.cache
def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA build raising something else
        return False
    return True


@functools.cache
def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except Exception:  # torch < 2.5
        return False
    return True


FLEX_HEAD_DIMS = (16, 32, 64, 128, 256)


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend that will actually run for activations on ``device`` in ``dtype``."""
    if requested not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {requested!r}")
    flash_ok = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and flash_attn_available()
    if requested == "auto":
        return "flash" if flash_ok else "sdpa"
    if requested == "flash" and not flash_ok:
        _warn_flash_fallback(device.type, str(dtype))
        return "sdpa"
    return requested


@functools.cache
def _warn_flash_fallback(device: str, dtype: str) -> None:
    warnings.warn(f"attention_backend='flash' needs flash_attn on CUDA in fp16/bf16 (have {device}, {dtype}, "
                  f"flash_attn importable: {flash_attn_available()}); using sdpa", stacklevel=3)


def document_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """``[B, 1, T, T]`` bool: token i may attend to j iff ``j <= i`` and both are in the same document."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same_doc & causal)[:, None]


def document_cu_seqlens(doc_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Flash varlen boundaries for ``[B, T]`` doc ids: every row start and every change of id starts a segment."""
    B, T = doc_ids.shape
    starts = torch.ones(B, T, dtype=torch.bool, device=doc_ids.device)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    offsets = starts.flatten().nonzero().flatten()
    cu = torch.cat([offsets, offsets.new_tensor([B * T])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max().item())


def activation_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on ``x`` will produce: the autocast dtype when autocast is on, else ``x.dtype``."""
    device_type = x.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype


def plan_attention(requested: str, x: torch.Tensor, doc_ids: Optional[torch.Tensor] = None,
                   dropout_p: float = 0.0, head_dim: Optional[int] = None) -> AttentionPlan:
    """Plan for a full-sequence (training or scoring) forward of ``x`` ``[B, T, C]``.

    ``doc_ids`` ``[B, T]`` (or None) confines attention to each packed document.
    ``head_dim`` lets ``auto`` choose flex for packed documents on CUDA (it needs 16..256).
    """
    backend = resolve_backend(requested, x.device, activation_dtype(x))
    if doc_ids is None:
        return AttentionPlan(backend, is_causal=True, dropout_p=dropout_p)
    if backend == "flash":
        cu, max_len = document_cu_seqlens(doc_ids)
        return AttentionPlan(backend, cu_seqlens=cu, max_seqlen=max_len, dropout_p=dropout_p)
    if (requested == "auto" and backend == "sdpa" and doc_ids.is_cuda and dropout_p == 0.0
            and head_dim in FLEX_HEAD_DIMS and flex_attention_available()):
        return AttentionPlan("flex", is_causal=False, block_mask=document_block_mask(doc_ids), doc_ids=doc_ids)
    return AttentionPlan(backend, is_causal=False, mask=document_causal_mask(doc_ids), dropout_p=dropout_p)


def document_block_mask(doc_ids: torch.Tensor):
    """flex_attention ``BlockMask``: causal within each packed document, blocks of other documents skipped."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, T = doc_ids.shape

    def same_document_causal(b, h, q_idx, kv_idx):
        return (doc_ids[b, q_idx] == doc_ids[b, kv_idx]) & (q_idx >= kv_idx)

    return create_block_mask(same_document_causal, B, None, T, T, device=doc_ids.device)


# --------------------------------------------------------------------------- kernels


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
    """``[B, H, Tq, D]`` attention output for queries ``q`` over keys/values ``k, v`` ``[B, KV, S, D]``."""
    if plan.backend == "flash":
        return flash_attention(q, k, v, plan)
    if plan.backend == "math":
        return math_attention(q, k, v, plan)
    if plan.backend == "flex":
        return flex_document_attention(q, k, v, plan)
    B, H, Tq, D = q.shape
    KV = k.shape[1]
    sees_all_keys = plan.mask.shape[2] == 1 if plan.mask is not None else (not plan.is_causal or k.shape[2] == 1)
    if Tq == 1 and H != KV and sees_all_keys:
        # Decoding one token: fold each group's queries into the query axis, [B, KV, H/KV, D],
        # so every query of a group attends the shared K/V without repeating them (2x faster).
        out = F.scaled_dot_product_attention(q.reshape(B, KV, H // KV, D), k, v, attn_mask=plan.mask,
                                             dropout_p=plan.dropout_p)
        return out.view(B, H, 1, D)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, dropout_p=plan.dropout_p,
                                          is_causal=plan.mask is None and plan.is_causal,
                                          enable_gqa=H != KV)


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
    """The reference: repeat K/V per query group, scores, mask, float32 softmax, weighted sum."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, H, Tq, S]
    mask = plan.mask
    if mask is None and plan.is_causal:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    probs = F.dropout(probs, p=plan.dropout_p, training=plan.dropout_p > 0)
    return probs @ v


_compiled_flex = None


def flex_document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
    """flex_attention over the plan's block mask; compiled once on CUDA (eager flex is a slow reference).

    Outside torch.compile a kernel that fails to build (an unsupported GPU or shape) warns once
    and falls back to SDPA with the dense document mask, which computes the same attention.
    """
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    gqa = q.shape[1] != k.shape[1]
    if not q.is_cuda or torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=plan.block_mask, enable_gqa=gqa)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    if _compiled_flex is not False:
        try:
            return _compiled_flex(q, k, v, block_mask=plan.block_mask, enable_gqa=gqa)
        except Exception as exc:  # inductor/triton errors share no public base class
            warnings.warn(f"flex_attention failed ({type(exc).__name__}); using SDPA with a dense mask",
                          stacklevel=2)
            _compiled_flex = False
    mask = document_causal_mask(plan.doc_ids)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
    """flash_attn wants ``[B, T, H, D]``; it handles GQA itself. Packed documents go through varlen."""
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if plan.mask is not None:
        raise ValueError("the flash backend takes causal or packed-document attention, not an explicit mask")
    B, H, T, D = q.shape
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if plan.cu_seqlens is None:
        out = flash_attn_func(q, k, v, dropout_p=plan.dropout_p, causal=plan.is_causal)
    else:
        out = flash_attn_varlen_func(q.reshape(B * T, H, D), k.reshape(B * T, -1, D), v.reshape(B * T, -1, D),
                                     plan.cu_seqlens, plan.cu_seqlens, plan.max_seqlen, plan.max_seqlen,
                                     dropout_p=plan.dropout_p, causal=True)
        out = out.view(B, T, H, D)
    return out.transpose(1, 2)
