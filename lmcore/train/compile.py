"""``torch.compile`` with a way out: a model that fails to compile trains uncompiled, with one warning.

Why: compilation is lazy in torch (it happens on the first forward), so a failure shows up in
the middle of the first step, on a machine or torch version the user cannot change at once.
:func:`maybe_compile` wraps the model in :class:`CompiledWithFallback`, which catches that
failure, warns once and continues with the eager module (the summary says ``compile_failed``).
"""

from __future__ import annotations

import logging
import warnings

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


def maybe_compile(model: torch.nn.Module, precision_cfg) -> torch.nn.Module:
    """``torch.compile(model)`` when ``precision.use_compile``, with an eager fallback; else ``model``."""
    if not precision_cfg.use_compile:
        return model
    try:
        compiled = torch.compile(model, mode=precision_cfg.compile_mode)
    except Exception as exc:  # e.g. unsupported Python / platform
        wrapper = CompiledWithFallback(model, None)
        wrapper._disable(exc)
        return wrapper
    return CompiledWithFallback(model, compiled)
