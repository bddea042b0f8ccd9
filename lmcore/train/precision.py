"""Numeric precision: which dtype a run computes in, and how.

``precision.dtype`` resolution:

* ``auto``: bf16 autocast on GPUs that support bf16 (Ampere and later), fp16 autocast
  plus a ``GradScaler`` on older GPUs; on a CPU, bf16 autocast where bf16 matmuls are clearly
  faster (measured once per machine, :mod:`lmcore.hardware.bf16_probe`) and the model is at least
  256 wide, else fp32.
* ``bf16`` / ``fp16`` / ``fp32``: as asked (fp16 on CPU is not supported by autocast and
  falls back to bf16 with a warning).
* ``precision.use_mixed_precision: false`` forces fp32 whatever ``dtype`` says.

Weights and optimizer state stay fp32 in every mode (autocast casts per op), so a
checkpoint never depends on the precision it was trained in.

Compilation is :mod:`lmcore.train.compile`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Precision:
    """The resolved choice: ``name`` in bf16/fp16/fp32, the autocast dtype, and whether to scale grads."""

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    @property
    def use_autocast(self) -> bool:
        return self.name != "fp32"

    @property
    def use_grad_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self):
        """Context manager for forward passes (a no-op in fp32)."""
        if not self.use_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler":
        """A GradScaler, enabled only for fp16 (disabled scalers pass through, keeping one code path)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.use_grad_scaler)


def resolve_precision(precision_cfg, device: torch.device | str, hidden_size: int | None = None) -> Precision:
    """Turn the ``precision`` config section into a :class:`Precision` for ``device`` (``hidden_size``: the
    model's width, which ``auto`` on a CPU weighs; None when unknown)."""
    device = torch.device(device)
    kind = device.type
    if not precision_cfg.use_mixed_precision:
        return Precision("fp32", kind)
    want = precision_cfg.dtype
    if want == "auto":
        if kind == "cuda":
            want = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif kind == "cpu":
            from lmcore.hardware.bf16_probe import cpu_bf16_pays

            want = "bf16" if cpu_bf16_pays(hidden_size) else "fp32"
        else:
            want = "fp32"
    if want == "fp16" and kind == "cpu":
        log.warning("fp16 autocast is not supported on CPU; using bf16")
        want = "bf16"
    if want == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16 support; using fp16 with a GradScaler")
        want = "fp16"
    return Precision(want, kind)
