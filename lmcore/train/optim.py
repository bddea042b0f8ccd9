"""The optimizers: AdamW (weight decay on matrices, none on vectors), or Muon on hidden matrices + AdamW.

AdamW: every parameter with fewer than two dimensions (norm gains, biases) gets no weight
decay; matrices (attention, MLP, and the embedding/LM-head matrix) do.  Decaying the
embedding is what GPT-2/LLaMA recipes do and it keeps tied embeddings in one group.  The
implementation picks ``fused=True`` where torch supports it (CUDA; CPU in recent torch),
else ``foreach=True``: one kernel per group instead of one per tensor.

``training.optimizer: muon`` (:class:`MuonWithAdamW`): Muon (momentum whose update is
orthogonalised by a Newton-Schulz iteration) learns more per token than AdamW on the
transformer's hidden matrices; on the Shakespeare recipe it reached a lower held-out bits
per byte in the same 300 s (docs/experiments.md, third session).  Muon is only defined for
matrices that map hidden states to hidden states, so embeddings, the LM head and the norm
gains stay on AdamW, as in the published recipes.  The update math is PyTorch's own
``torch.optim.Muon`` (torch >= 2.9), with ``adjust_lr_fn="match_rms_adamw"``: its updates
have the RMS of an AdamW update, so one ``training.learning_rate`` and one schedule drive
both halves; ``training.muon_lr_scale`` multiplies the Muon half's learning rate.
FSDP-sharded parameters are refused: the orthogonalisation needs whole matrices, and a
shard's would be a different update.  Weight decay follows torch's convention for both
halves: ``p *= 1 - group_lr * weight_decay``, so on the Muon half it scales with
``muon_lr_scale`` too.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch
from torch import nn

log = logging.getLogger(__name__)


def matrices_and_vectors(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Trainable parameters with two or more dimensions, and those with fewer (shared params counted once)."""
    matrices, vectors, seen = [], [], set()
    for _, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (matrices if param.dim() >= 2 else vectors).append(param)
    return matrices, vectors


def decay_groups(matrices: list, vectors: list, weight_decay: float) -> list[dict]:
    """``[{params: matrices, weight_decay}, {params: vectors, weight_decay: 0}]``, empty groups left out."""
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW's groups for the whole model: decay on matrices, none on vectors."""
    return decay_groups(*matrices_and_vectors(model), weight_decay)


def adamw(groups: list[dict], training_cfg, **kwargs) -> torch.optim.AdamW:
    """AdamW over ``groups`` with the ``training`` section's lr, betas and eps (``kwargs``: fused/foreach)."""
    return torch.optim.AdamW(groups, lr=training_cfg.learning_rate,
                             betas=(training_cfg.adam_beta1, training_cfg.adam_beta2), eps=training_cfg.adam_eps,
                             **kwargs)


def _fused_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        try:
            torch.optim.AdamW([torch.zeros(1, requires_grad=True)], fused=True)
            return True
        except (RuntimeError, TypeError, ValueError):
            return False
    return False


def build_optimizer(model: torch.nn.Module, training_cfg, device: torch.device | str | None = None,
                    implementation: str = "auto"):
    """AdamW from the ``training`` section (lr, betas, eps, weight_decay), or Muon+AdamW when
    ``training.optimizer`` is ``muon`` (:mod:`lmcore.train.optim`; its AdamW half is built the same way).

    ``implementation``: ``auto`` (fused where available, else foreach), ``fused``, ``foreach``
    or ``loop`` (the reference per-tensor loop).
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    kwargs: dict = {}
    if implementation == "auto":
        implementation = "fused" if _fused_supported(device) else "foreach"
    if implementation == "fused":
        kwargs["fused"] = True
    elif implementation == "foreach":
        kwargs["foreach"] = True
    elif implementation == "loop":
        kwargs["foreach"] = False
    else:
        raise ValueError(f"unknown optimizer implementation {implementation!r}")
    if training_cfg.optimizer == "muon":
        return MuonWithAdamW(model, training_cfg, kwargs)
    return adamw(param_groups(model, training_cfg.weight_decay), training_cfg, **kwargs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's ``lr`` on every group, times the group's ``lr_scale`` where it has one (Muon's half)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# --------------------------------------------------------------------------- Muon + AdamW


def split_for_muon(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """``(hidden matrices, other matrices, vectors)``: the first go to Muon, the rest to AdamW
    (matrices with weight decay, vectors without). Embedding tables and the module named
    ``lm_head`` are "other": they map tokens, not hidden states. Shared parameters once."""
    table_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    table_ids |= {id(p) for name, p in model.named_parameters() if name.split(".")[-2:-1] == ["lm_head"]}
    matrices, vectors = matrices_and_vectors(model)
    hidden, other = [], []
    for param in matrices:
        (hidden if param.dim() == 2 and id(param) not in table_ids else other).append(param)
    return hidden, other, vectors


class MuonWithAdamW:
    """Muon for ``split_for_muon``'s hidden matrices, AdamW for everything else, as one optimizer."""

    def __init__(self, model: nn.Module, training_cfg, adamw_kwargs: Optional[dict] = None):
        muon_cls = getattr(torch.optim, "Muon", None)
        if muon_cls is None:
            raise RuntimeError(f"training.optimizer 'muon' needs torch>=2.9 (torch.optim.Muon); this is "
                               f"torch {torch.__version__}. Upgrade torch or use optimizer 'adamw'.")
        if any(hasattr(p, "full_tensor") for p in model.parameters()):  # DTensor: a shard
            raise ValueError("training.optimizer 'muon' cannot run on FSDP-sharded parameters (it orthogonalises "
                             "whole matrices); use training.strategy 'ddp' or optimizer 'adamw'")
        hidden, other, vectors = split_for_muon(model)
        if not hidden:
            raise ValueError("training.optimizer 'muon': the model has no hidden matrices to give Muon")
        cfg = training_cfg
        self.muon = muon_cls(hidden, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                             momentum=cfg.muon_momentum, nesterov=True, adjust_lr_fn="match_rms_adamw")
        for group in self.muon.param_groups:
            group["lr_scale"] = cfg.muon_lr_scale
        self.adamw = adamw(decay_groups(other, vectors, cfg.weight_decay), cfg, **(adamw_kwargs or {}))
        self.defaults: dict[str, Any] = {}

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"muon", "adamw"}:
            raise ValueError("optimizer state is not a Muon+AdamW state (the checkpoint was written with "
                             "training.optimizer 'adamw'?)")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])
