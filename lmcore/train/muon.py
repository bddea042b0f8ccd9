"""Muon on the hidden matrices, AdamW on the rest: ``training.optimizer: muon``.

Why: Muon (momentum whose update is orthogonalised by a Newton-Schulz iteration) learns
more per token than AdamW on the transformer's hidden matrices; on the Shakespeare
recipe it reached a lower held-out bits per byte in the same 300 s (docs/experiments.md,
third session).  Muon is only defined for matrices that map hidden states to hidden
states, so embeddings, the LM head and the norm gains stay on AdamW, as in the
published recipes.

The update math is PyTorch's own ``torch.optim.Muon`` (torch >= 2.9), with
``adjust_lr_fn="match_rms_adamw"``: its updates have the RMS of an AdamW update, so one
``training.learning_rate`` and one schedule drive both halves.  ``training.muon_lr_scale``
multiplies the Muon half's learning rate when the optimum differs.

:class:`MuonWithAdamW` holds the two torch optimizers and exposes what the engine,
``GradScaler`` and checkpoints use: ``param_groups`` (both halves, so setting the
learning rate reaches every group), ``state``, ``step``, ``zero_grad``, ``state_dict``
and ``load_state_dict``.  FSDP-sharded parameters are refused: the orthogonalisation
needs whole matrices, and a shard's would be a different update.  Weight decay follows
torch's convention for both halves: ``p *= 1 - group_lr * weight_decay``, so on the Muon half
it scales with ``muon_lr_scale`` too.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from lmcore.train.optim import adamw, decay_groups, matrices_and_vectors


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
