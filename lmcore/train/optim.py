"""AdamW with two parameter groups: weight decay on matrices, none on vectors (or Muon+AdamW).

Decision: every parameter with fewer than two dimensions (norm gains, biases) gets no
weight decay; matrices (attention, MLP, and the embedding/LM-head matrix) do.  Decaying
the embedding is what GPT-2/LLaMA recipes do and it keeps tied embeddings in one group.

The implementation picks ``fused=True`` where torch supports it (CUDA; CPU in recent
torch), else ``foreach=True``: one kernel per group instead of one per tensor.
"""

from __future__ import annotations

import logging

import torch

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
    ``training.optimizer`` is ``muon`` (:mod:`lmcore.train.muon`; its AdamW half is built the same way).

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
        from lmcore.train.muon import MuonWithAdamW

        return MuonWithAdamW(model, training_cfg, kwargs)
    return adamw(param_groups(model, training_cfg.weight_decay), training_cfg, **kwargs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's ``lr`` on every group, times the group's ``lr_scale`` where it has one (Muon's half)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
