"""Model FLOPs, device peak FLOPs, and MFU (model FLOPs utilisation).

MFU = achieved model FLOP/s / the device's dense peak, with model FLOPs per
token from the PaLM paper (Chowdhery et al. 2022, appendix B):
``6N + 12 * L * h * s`` where N counts the non-embedding parameters plus the
LM head (its matmul runs even when its weight is tied to the embedding), and
the second term is the attention score and value matmuls (counted for the full
``s x s`` square, as is usual, though causal kernels skip half of it).
Recomputation from gradient checkpointing is not model FLOPs, so MFU does not
rise when it is turned on.

Peak figures are NVIDIA/AMD datasheet *dense* (no 2:4 sparsity) tensor-core
throughput per GPU; GeForce cards are listed at their fp32-accumulate rate,
which is what PyTorch's bf16/fp16 matmuls use. On a CPU there is no datasheet:
:func:`measure_cpu_matmul_peak` times a large matmul instead.
"""

from __future__ import annotations

import functools
import time
from typing import Optional

import torch

from lmcore.config import ModelConfig

T = 1e12

# (substrings that must all appear in the upper-cased device name, {dtype: FLOP/s}).
# Order matters: more specific names first (H100 PCIe before H100, L40S before L4).
_PEAKS: list[tuple[tuple[str, ...], dict[str, float]]] = [
    (("B200",), {"bf16": 2250 * T, "fp16": 2250 * T, "tf32": 1100 * T, "fp32": 80 * T}),
    (("B100",), {"bf16": 1750 * T, "fp16": 1750 * T, "tf32": 875 * T, "fp32": 60 * T}),
    (("H200",), {"bf16": 989.4 * T, "fp16": 989.4 * T, "tf32": 494.7 * T, "fp32": 66.9 * T}),
    (("GH200",), {"bf16": 989.4 * T, "fp16": 989.4 * T, "tf32": 494.7 * T, "fp32": 66.9 * T}),
    (("H100", "PCIE"), {"bf16": 756.5 * T, "fp16": 756.5 * T, "tf32": 378 * T, "fp32": 51.2 * T}),
    (("H100", "NVL"), {"bf16": 835.5 * T, "fp16": 835.5 * T, "tf32": 417.8 * T, "fp32": 60 * T}),
    (("H100",), {"bf16": 989.4 * T, "fp16": 989.4 * T, "tf32": 494.7 * T, "fp32": 66.9 * T}),  # SXM
    (("H800",), {"bf16": 989.4 * T, "fp16": 989.4 * T, "tf32": 494.7 * T, "fp32": 66.9 * T}),
    (("A100",), {"bf16": 312 * T, "fp16": 312 * T, "tf32": 156 * T, "fp32": 19.5 * T}),
    (("A800",), {"bf16": 312 * T, "fp16": 312 * T, "tf32": 156 * T, "fp32": 19.5 * T}),
    (("A10G",), {"bf16": 70 * T, "fp16": 70 * T, "tf32": 35 * T, "fp32": 31.2 * T}),
    (("A10",), {"bf16": 125 * T, "fp16": 125 * T, "tf32": 62.5 * T, "fp32": 31.2 * T}),
    (("L40S",), {"bf16": 362.1 * T, "fp16": 362.1 * T, "tf32": 183 * T, "fp32": 91.6 * T}),
    (("L40",), {"bf16": 181 * T, "fp16": 181 * T, "tf32": 90.5 * T, "fp32": 90.5 * T}),
    (("L4",), {"bf16": 121 * T, "fp16": 121 * T, "tf32": 60 * T, "fp32": 30.3 * T}),
    (("RTX", "6000", "ADA"), {"bf16": 364.2 * T, "fp16": 364.2 * T, "tf32": 182.1 * T, "fp32": 91.1 * T}),
    (("A6000",), {"bf16": 154.8 * T, "fp16": 154.8 * T, "tf32": 77.4 * T, "fp32": 38.7 * T}),
    (("5090",), {"bf16": 209.5 * T, "fp16": 209.5 * T, "tf32": 104.8 * T, "fp32": 104.8 * T}),
    (("4090",), {"bf16": 165.2 * T, "fp16": 165.2 * T, "tf32": 82.6 * T, "fp32": 82.6 * T}),
    (("3090",), {"bf16": 71 * T, "fp16": 71 * T, "tf32": 35.6 * T, "fp32": 35.6 * T}),
    (("V100",), {"fp16": 125 * T, "fp32": 15.7 * T}),
    (("T4",), {"fp16": 65 * T, "fp32": 8.1 * T}),
    (("MI300X",), {"bf16": 1307.4 * T, "fp16": 1307.4 * T, "tf32": 653.7 * T, "fp32": 163.4 * T}),
    (("MI250X",), {"bf16": 383 * T, "fp16": 383 * T, "fp32": 47.9 * T}),
]


def peak_flops(device_name: str, dtype: str = "bf16") -> Optional[float]:
    """Dense peak FLOP/s of one GPU named ``device_name`` for ``dtype``; None if unknown."""
    name = device_name.upper()
    dtype = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32"}.get(dtype, dtype)
    for patterns, table in _PEAKS:
        if all(_has_token(name, p) for p in patterns):
            return table.get(dtype)
    return None


def _has_token(name: str, pattern: str) -> bool:
    """``pattern`` occurs in ``name`` not followed by a digit/letter that would make it another
    model ("L4" must not match "L40S", "A10" must not match "A100")."""
    start = name.find(pattern)
    while start != -1:
        end = start + len(pattern)
        if end == len(name) or not name[end].isalnum():
            return True
        start = name.find(pattern, start + 1)
    return False


def measure_cpu_matmul_peak(dtype: str | torch.dtype = "fp32", seconds: float = 0.5, size: int = 1024) -> float:
    """Measured FLOP/s of square ``size`` matmuls on the CPU for about ``seconds``."""
    dt = _torch_dtype(dtype)
    generator = torch.Generator().manual_seed(0)  # its own: a training run's RNG state must not move
    a = torch.randn(size, size, generator=generator).to(dt)
    b = torch.randn(size, size, generator=generator).to(dt)
    torch.mm(a, b)  # warm-up: thread pool, packing buffers
    flops_per = 2 * size ** 3
    count = 0
    start = time.perf_counter()
    while True:
        torch.mm(a, b)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * flops_per / elapsed


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def model_flops_per_token(model_cfg: ModelConfig, seq_length: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token: ``6N + 12 * L * h * s``."""
    s = seq_length or model_cfg.seq_length
    n = model_cfg.num_parameters(include_embeddings=False) + model_cfg.vocab_size * model_cfg.hidden_size
    return 6.0 * n + 12.0 * model_cfg.num_layers * model_cfg.hidden_size * s


def mfu(tokens_per_sec: float, flops_per_token: float, peak: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation in [0, 1] (None when the peak is unknown). ``flops_per_token`` is
    :func:`model_flops_per_token` for training (a third of it for a forward pass); ``peak`` is for
    all devices producing ``tokens_per_sec`` together (multiply a per-GPU peak by the world size)."""
    if not peak:
        return None
    return tokens_per_sec * flops_per_token / peak


@functools.lru_cache(maxsize=8)
def _cpu_peak(dtype: str) -> float:
    return measure_cpu_matmul_peak(dtype, seconds=0.2, size=512)


def device_peak_flops(device: torch.device | str, dtype: str) -> Optional[float]:
    """Peak FLOP/s of one training ``device`` in ``dtype``: the datasheet for a GPU, a short matmul
    measurement (once per process) on a CPU, None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return peak_flops(torch.cuda.get_device_name(device), dtype)
    if device.type == "cpu":
        return _cpu_peak(dtype)
    return None
