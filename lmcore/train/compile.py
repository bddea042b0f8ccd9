"""``torch.compile``: when it pays, where its artifacts live, and a way out when it fails.

* **When** (``precision.use_compile: auto``, the default): always on CUDA; on a CPU only for a run
  long enough to earn back the compile time (:data:`CPU_MIN_STEPS` updates and, with a ``max_time``,
  :data:`CPU_MIN_SECONDS` of it). Measured on a 2-core CPU (docs/experiments.md): whole-model compile
  gives 1.17-1.21x tokens/s at hidden 256 but costs 25-30 s before the first step when cold, 4-5 s
  with a warm cache; in the 300 s Shakespeare recipe (hidden 128, Muon) the cold compile ate the gain.
  Regional compile of the repeated block compiled faster but gave nothing here (the gains are the
  fusions across the block boundary, the loss and the norm), so the whole model is compiled.
* **Where**: :func:`compile_cache` points inductor's on-disk cache at a folder under the store
  (unless ``TORCHINDUCTOR_CACHE_DIR`` is set), so the second run of a shape starts in seconds.
* **Fallback**: compilation is lazy in torch (it happens on the first forward), so a failure shows
  up in the middle of the first step, on a machine or torch version the user cannot change at once.
  :func:`maybe_compile` wraps the model in :class:`CompiledWithFallback`, which catches that
  failure, warns once and continues with the eager module (the summary says ``compile_failed``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional

import torch

log = logging.getLogger(__name__)


class CompiledWithFallback(torch.nn.Module):
    """Calls the compiled module; if compiling fails on a call, warns once and uses the eager module."""

    def __init__(self, module: torch.nn.Module, compiled):
        super().__init__()
        self.module = module           # registered: parameters and state_dict stay the eager module's
        # Not registered as a submodule: it wraps ``module``, whose parameters must appear once.
        object.__setattr__(self, "_compiled", compiled)
        self.compile_failed = False

    def forward(self, *args, **kwargs):
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as exc:  # torch._dynamo / inductor errors have no common public base
                self._disable(exc)
        return self.module(*args, **kwargs)

    def _disable(self, exc: BaseException) -> None:
        message = f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); continuing uncompiled"
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        object.__setattr__(self, "_compiled", None)
        self.compile_failed = True


CPU_MIN_STEPS = 500       # updates a CPU run must plan for ``auto`` to compile
CPU_MIN_SECONDS = 600     # and seconds of max_time, when one is set (a cold compile costs 25-30 s)
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_pays(use_compile, device: torch.device | str, planned_steps: Optional[int],
                 planned_seconds: Optional[float]) -> bool:
    """Whether to compile: ``use_compile`` True/False as set; ``"auto"``: on CUDA, and on a CPU (with a C
    compiler) for runs that plan at least ``CPU_MIN_STEPS`` updates and, under a ``max_time``, at least
    ``CPU_MIN_SECONDS`` (None: that limit is not set)."""
    if use_compile != "auto":
        return bool(use_compile)
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    if kind != "cpu":
        return False
    from lmcore.hardware.detect import compile_available

    long_run = (planned_steps is None or planned_steps >= CPU_MIN_STEPS) and \
        (planned_seconds is None or planned_seconds >= CPU_MIN_SECONDS)
    return long_run and compile_available("cpu")


@contextlib.contextmanager
def compile_cache(folder: Optional[Path]) -> Iterator[None]:
    """Inductor's cache in ``folder`` for the duration (and the processes started meanwhile), unless
    ``TORCHINDUCTOR_CACHE_DIR`` is already set or ``folder`` is None."""
    if folder is None or os.environ.get(CACHE_ENV):
        yield
        return
    os.environ[CACHE_ENV] = str(folder)  # inductor creates it when it first writes
    try:
        yield
    finally:
        os.environ.pop(CACHE_ENV, None)


def maybe_compile(model: torch.nn.Module, compile_: bool, mode: str = "default") -> torch.nn.Module:
    """``torch.compile(model, mode=mode)`` with an eager fallback when ``compile_``; else ``model``."""
    if not compile_:
        return model
    try:
        compiled = torch.compile(model, mode=mode)
    except Exception as exc:  # e.g. unsupported Python / platform
        wrapper = CompiledWithFallback(model, None)
        wrapper._disable(exc)
        return wrapper
    return CompiledWithFallback(model, compiled)
