"""Learning-rate schedules as pure functions of training progress.

A schedule here is a multiplier on the peak learning rate, computed from

* ``progress`` in [0, 1]: the fraction of the run done.  A step-limited run uses
  ``step / total_steps``; a run with a wall-clock budget (``training.max_time``) uses
  ``max(step / total_steps, elapsed / max_time)``, so a budgeted run still finishes its
  decay when the time is up (see :func:`run_progress`);
* ``step``: the optimizer update about to be made (0-based), for warmups given in steps.

Warmup is linear: ``training.warmup_steps`` when set (in updates), else
``training.warmup_ratio`` of the progress.  After warmup the decay runs over the rest of
the progress and never goes below ``min_lr_ratio`` (the floor applies to every decaying
schedule).  Pure functions keep resume exact: the state to save is just step and
elapsed time, which the trainer checkpoints anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, get_args

from lmcore.config import SchedulerType

SCHEDULES = get_args(SchedulerType)


@dataclass(frozen=True)
class ScheduleSpec:
    """The ``training`` keys that shape the learning rate over a run."""

    kind: str = "cosine_with_warmup"
    warmup_ratio: float = 0.0
    warmup_steps: Optional[int] = None
    min_lr_ratio: float = 0.0
    num_cycles: int = 1

    @classmethod
    def from_training(cls, training_cfg) -> "ScheduleSpec":
        return cls(kind=training_cfg.scheduler_type, warmup_ratio=training_cfg.warmup_ratio,
                   warmup_steps=training_cfg.warmup_steps, min_lr_ratio=training_cfg.min_lr_ratio,
                   num_cycles=training_cfg.num_cycles)


def cosine_with_warmup(decay_progress: float, min_lr_ratio: float) -> float:
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * decay_progress))


def cosine_with_restarts(decay_progress: float, min_lr_ratio: float, num_cycles: int) -> float:
    if decay_progress >= 1.0:
        return min_lr_ratio
    cycle_progress = (decay_progress * num_cycles) % 1.0
    return cosine_with_warmup(cycle_progress, min_lr_ratio)


def linear(decay_progress: float, min_lr_ratio: float) -> float:
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - decay_progress)


def constant_with_warmup(decay_progress: float, min_lr_ratio: float) -> float:  # noqa: ARG001
    return 1.0


def lr_multiplier(spec: ScheduleSpec, progress: float, step: int, total_steps: Optional[int] = None) -> float:
    """Multiplier on the peak lr for update ``step`` at run ``progress`` (both defined in the module doc)."""
    if spec.kind not in SCHEDULES:
        raise ValueError(f"unknown scheduler_type {spec.kind!r}; choose one of {', '.join(SCHEDULES)}")
    progress = min(max(progress, 0.0), 1.0)
    if spec.warmup_steps is not None:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        warm_fraction = spec.warmup_steps / total_steps if total_steps else 0.0
    else:
        warm_fraction = spec.warmup_ratio
        if progress < warm_fraction:
            # (step + 1) / total keeps the first update's lr above zero in step-limited runs.
            nudged = max(progress, (step + 1) / total_steps) if total_steps else progress
            return min(1.0, max(nudged, 1e-3 * warm_fraction) / warm_fraction)
    warm_fraction = min(warm_fraction, 0.999)
    decay_progress = min(max((progress - warm_fraction) / (1.0 - warm_fraction), 0.0), 1.0)
    if spec.kind == "cosine_with_restarts":
        return cosine_with_restarts(decay_progress, spec.min_lr_ratio, spec.num_cycles)
    return {"cosine_with_warmup": cosine_with_warmup, "linear": linear,
            "constant_with_warmup": constant_with_warmup}[spec.kind](decay_progress, spec.min_lr_ratio)


def run_progress(step: int, total_steps: Optional[int], elapsed_s: float = 0.0,
                 max_time_s: Optional[float] = None) -> float:
    """Fraction of the run done: the larger of the step fraction and the time fraction."""
    fractions = []
    if total_steps:
        fractions.append(step / total_steps)
    if max_time_s:
        fractions.append(elapsed_s / max_time_s)
    return min(max(fractions), 1.0) if fractions else 0.0


SEQ_LENGTH_STEP = 64


def seq_length_at(progress: float, full: int, start: Optional[int], fraction: float) -> int:
    """Packed sequence length at run ``progress`` under ``training.seq_length_warmup``: from ``start``
    up to ``full`` over the first ``fraction`` of the run, in steps of 64 (``full`` itself at the end)."""
    if not start or start >= full:
        return full
    grown = (full - start) * min(progress / fraction, 1.0)
    return min(full, start + SEQ_LENGTH_STEP * int(grown // SEQ_LENGTH_STEP))
