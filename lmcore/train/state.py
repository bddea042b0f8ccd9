"""Everything besides weights and optimizer that an exact resume needs, as weights_only-safe data.

``trainer_state.pt`` is read with ``torch.load(weights_only=True)``, which accepts tensors,
numbers, strings and plain containers only.  Python's and NumPy's RNG states and a loader's
state may hold NumPy arrays and scalars, so :func:`to_safe` turns them into tensors and
Python numbers (tagging arrays so :func:`from_safe` gives back the same types).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

_ARRAY_TAG = "__ndarray__"


def to_safe(value: Any) -> Any:
    """Convert NumPy values inside ``value`` to tensors / Python numbers (recursively)."""
    if isinstance(value, np.ndarray):
        return {_ARRAY_TAG: torch.from_numpy(np.ascontiguousarray(value).copy()), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        converted = [to_safe(v) for v in value]
        return converted if isinstance(value, list) else tuple(converted)
    return value


def from_safe(value: Any) -> Any:
    """Inverse of :func:`to_safe`."""
    if isinstance(value, dict):
        if _ARRAY_TAG in value:
            return value[_ARRAY_TAG].numpy().astype(value["dtype"], copy=True)
        return {k: from_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_safe(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_safe(v) for v in value)
    return value


def capture_rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": to_safe(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(from_safe(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainProgress:
    """Counters of a run; saved in every checkpoint and restored on resume."""

    step: int = 0                 # optimizer updates made
    micro_steps: int = 0          # micro-batches consumed
    tokens_seen: int = 0          # input tokens consumed (all ranks)
    target_tokens_seen: int = 0   # tokens that contributed to the loss (all ranks)
    epoch: int = 0
    elapsed_s: float = 0.0        # training wall time over all sessions of this run
    train_time_s: float = 0.0     # of which data + update time (no eval, no checkpoints): for tokens/s
    skipped_steps: int = 0        # updates skipped for non-finite loss or gradients
    consecutive_nonfinite: int = 0
    best_eval_loss: float | None = None
    best_checkpoint: str | None = None      # checkpoint with the lowest eval loss, relative to the run dir
    best_checkpoint_loss: float | None = None
    last_loss: float | None = None
    history: list = field(default_factory=list)   # [(step, eval_loss)]

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> "TrainProgress":
        known = {k: v for k, v in state.items() if k in cls.__dataclass_fields__}
        return cls(**known)
