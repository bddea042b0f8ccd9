"""Model FLOPs per token and MFU, delegating to ``lmcore.hardware`` when it has them.

``lmcore.hardware`` owns the peak-FLOPs table (GPUs by name, and a measured CPU matmul
peak) and the FLOPs formula; this module imports it lazily and falls back to the same
formula (6N + 12·L·H·T per token, N = non-embedding parameters + the LM-head matrix)
and to "unknown" (MFU 0.0) when no peak is known, so training never fails for lack of
a number it only reports.
"""

from __future__ import annotations

import functools
import importlib
import logging

import torch

log = logging.getLogger(__name__)


def _hardware_function(name: str):
    for module in ("lmcore.hardware", "lmcore.hardware.flops"):
        try:
            fn = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if fn is not None:
            return fn
    return None


def flops_per_token(model_cfg, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token."""
    fn = _hardware_function("model_flops_per_token")
    if fn is not None:
        try:
            return float(fn(model_cfg, seq_len))
        except Exception as exc:  # a partner module still in flux must not stop training
            log.debug("lmcore.hardware.model_flops_per_token failed: %s", exc)
    n = model_cfg.num_parameters(include_embeddings=False) + model_cfg.vocab_size * model_cfg.hidden_size
    return 6.0 * n + 12.0 * model_cfg.num_layers * model_cfg.hidden_size * seq_len


@functools.lru_cache(maxsize=8)
def _cpu_peak(dtype_name: str) -> float | None:
    fn = _hardware_function("measure_cpu_matmul_peak")
    if fn is None:
        return None
    return float(fn(dtype_name, seconds=0.2, size=512))


def peak_flops(device: torch.device, dtype_name: str) -> float | None:
    """Peak FLOP/s of one ``device`` in ``dtype_name`` (bf16/fp16/fp32), or None when unknown."""
    try:
        if device.type == "cuda":
            fn = _hardware_function("peak_flops")
            value = fn(torch.cuda.get_device_name(device), dtype_name) if fn else None
        elif device.type == "cpu":
            value = _cpu_peak(dtype_name)
        else:
            value = None
    except Exception as exc:
        log.debug("peak FLOPs unknown: %s", exc)
        return None
    return float(value) if value else None


def mfu(tokens_per_sec: float, flops_per_tok: float, peak: float | None) -> float:
    """Model FLOPs utilisation in [0, 1] of one device; 0.0 when the peak is unknown."""
    if not peak:
        return 0.0
    return tokens_per_sec * flops_per_tok / peak
