"""Where this process sits in a (possibly distributed) run: rank, world size, device.

The trainer never asks torch.distributed directly; it asks a ``DistContext``.
A single process gets :func:`single_process_context`; :mod:`lmcore.train.distributed`
builds the multi-process one under torchrun (``init_context``) and wraps the model for
DDP/FSDP (``wrap_for_training``), so the loop is the same code on one CPU and on many GPUs.
This module imports nothing of lmcore: both sides depend on it, not on each other.

Rules the trainer follows with a context: only ``ctx.is_main`` writes checkpoints and
calls callbacks; token counts used for loss normalisation are summed over ranks with
``ctx.all_reduce_sum``; gradient sync is skipped on non-final micro-batches with
``ctx.no_sync(model)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class DistContext:
    """Rank-aware facts and the few collective operations the trainer needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    # Filled by lmcore.train.distributed for multi-process runs; None = single process.
    all_reduce_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    barrier_fn: Optional[Callable[[], None]] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over ranks (identity on one process)."""
        if self.world_size == 1 or self.all_reduce_fn is None:
            return tensor
        return self.all_reduce_fn(tensor)

    def barrier(self) -> None:
        if self.world_size > 1 and self.barrier_fn is not None:
            self.barrier_fn()

    def no_sync(self, model: torch.nn.Module, skip_sync: bool):
        """``model.no_sync()`` for DDP micro-batches that are not the last of a group."""
        if skip_sync and self.world_size > 1 and hasattr(model, "no_sync"):
            return model.no_sync()
        return contextlib.nullcontext()


def default_device() -> torch.device:
    """CUDA when present (first visible GPU), else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def single_process_context(device: torch.device | str | None = None) -> DistContext:
    return DistContext(device=torch.device(device) if device is not None else default_device())
