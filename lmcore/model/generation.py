"""Autoregressive generation with a preallocated KV cache.

API (``model.generate`` forwards here)::

    generate(model, input_ids, max_new_tokens=64, temperature=1.0, top_k=None, top_p=None,
             stop_tokens=None, attention_mask=None, generator=None, pad_token_id=0)

* ``temperature == 0`` is greedy decoding (argmax); otherwise logits are divided
  by ``temperature``, filtered by ``top_k`` and/or nucleus ``top_p``, and sampled
  with ``generator`` (a ``torch.Generator`` makes sampling reproducible).
* ``input_ids`` is a ``[B, T]`` tensor (optionally with ``attention_mask`` ``[B, T]``,
  1 = real token, left or right padding) or a list of prompts (lists of ids) of
  different lengths. Prompts are left-padded internally; each row gets its own
  RoPE positions (counting real tokens only) and padding is masked out of attention.
* A row stops after emitting any of ``stop_tokens`` (the stop token is kept);
  other rows continue until ``max_new_tokens``. ``None`` entries are ignored, so
  ``[tok.end_of_turn_id, tok.eos_id]`` is fine for a tokenizer without one of them.
* Returns only the new tokens: for tensor input a ``[B, N]`` LongTensor (``N`` =
  steps run, rows that stopped are filled with ``pad_token_id``); for list input
  a list of lists, each cut after its stop token.

Speed: the prompt is processed in one pass (logits only for its last position),
then each step feeds one token per row through the cached layers; SDPA attends
over a view of the cache, so nothing is recomputed or concatenated.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lmcore.model.attention_backends import AttentionPlan


def generate(model, input_ids: torch.Tensor | Sequence[Sequence[int]], max_new_tokens: int = 64,
             temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
             stop_tokens: Optional[Sequence[int] | int] = None, attention_mask: Optional[torch.Tensor] = None,
             generator: Optional[torch.Generator] = None, pad_token_id: Optional[int] = 0):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if pad_token_id is None:
        pad_token_id = 0
    device = model.embed_tokens.weight.device
    prompts = _prompt_lists(input_ids, attention_mask)
    ids, mask = left_pad(prompts, 0, device)  # padded slots are masked out; 0 is merely a valid id
    stop_tokens = [t for t in ([stop_tokens] if isinstance(stop_tokens, int) else stop_tokens or []) if t is not None]
    stops = torch.tensor(list(stop_tokens), dtype=torch.long, device=device) if stop_tokens else None

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            new = _decode(model, ids, mask, max(0, max_new_tokens), temperature, top_k, top_p, stops,
                          generator, pad_token_id)
    finally:
        model.train(was_training)
    if isinstance(input_ids, torch.Tensor):
        return new
    return [_cut_at_stop(row, stop_tokens) for row in new.tolist()]


def _decode(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, temperature: float,
            top_k: Optional[int], top_p: Optional[float], stops: Optional[torch.Tensor],
            generator: Optional[torch.Generator], pad_token_id: int) -> torch.Tensor:
    B, P = ids.shape
    out = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=ids.device)
    if max_new_tokens == 0:
        return out
    backend = "math" if model.config.attention_backend == "math" else "sdpa"
    cache = model.new_cache(B, P + max_new_tokens)
    padded = not bool(mask.all())
    # key_valid[b, s]: cache slot s of row b holds a real token (prompt padding never does).
    key_valid = torch.ones(B, P + max_new_tokens, dtype=torch.bool, device=ids.device)
    key_valid[:, :P] = mask
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)

    if padded:  # causal, no padding keys; a padding query sees itself so its softmax row is defined
        causal = torch.ones(P, P, dtype=torch.bool, device=ids.device).tril()
        eye = torch.eye(P, dtype=torch.bool, device=ids.device)
        plan = AttentionPlan(backend, is_causal=False, mask=((causal & mask[:, None, :]) | eye)[:, None])
    else:
        plan = AttentionPlan(backend, is_causal=True)
    rope = model.rope_table(P + max_new_tokens)
    logits = model.forward_cached(ids, positions, plan, cache, rope)
    pos = positions[:, -1:]
    finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
    step_plan = AttentionPlan(backend, is_causal=False)

    for i in range(max_new_tokens):
        token = sample_next_token(logits, temperature, top_k, top_p, generator)  # finished rows still feed it
        out[:, i] = token if stops is None else token.masked_fill(finished, pad_token_id)
        if stops is not None:
            finished |= torch.isin(token, stops)
            if bool(finished.all()):
                return out[:, : i + 1]
        if i == max_new_tokens - 1:
            break
        pos = pos + 1
        if padded:
            step_plan.mask = key_valid[:, None, None, : cache.length + 1]
        logits = model.forward_cached(token[:, None], pos, step_plan, cache, rope)
    return out


def sample_next_token(logits: torch.Tensor, temperature: float, top_k: Optional[int] = None,
                      top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Next token ids ``[B]`` from logits ``[B, V]``: argmax at temperature 0, else filtered sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1)  # ascending
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= 1.0 - top_p  # the low-probability tail outside the nucleus
        drop_sorted[:, -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    probs = logits.softmax(dim=-1)
    if generator is not None and generator.device != probs.device:  # e.g. a CPU generator with a CUDA model
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def left_pad(prompts: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids [B, P]`` with each prompt right-aligned, and ``mask [B, P]`` (True = real token)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs at least one token")
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.bool)
    for row, p in enumerate(prompts):
        ids[row, P - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[row, P - len(p):] = True
    return ids.to(device), mask.to(device)


def _prompt_lists(input_ids, attention_mask: Optional[torch.Tensor]) -> list[list[int]]:
    if not isinstance(input_ids, torch.Tensor):
        return [list(map(int, p)) for p in input_ids]
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if attention_mask is None:
        return input_ids.tolist()
    keep = attention_mask.bool().reshape(input_ids.shape).cpu()
    rows = input_ids.cpu()
    return [rows[b][keep[b]].tolist() for b in range(rows.shape[0])]


def _cut_at_stop(row: list[int], stop_tokens: Optional[Sequence[int]]) -> list[int]:
    if stop_tokens:
        for i, t in enumerate(row):
            if t in stop_tokens:
                return row[: i + 1]
    return row
