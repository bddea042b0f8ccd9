"""One MLflow (and W&B) name per figure, grouped by prefix the way both UIs group charts.

Why a module of its own: the same figure used to reach the run under two names (``eval_loss`` and
``evaluate.eval_loss``, ``train.*`` and ``train_final.*``), 78 metrics in all. Every name is made
here, so each figure has exactly one:

* ``train/<name>``: per-step history from the training loop (``train/loss``, ``train/lr``,
  ``train/grad_norm``, ``train/tokens_per_sec``, ``train/mfu``, ``train/seq_length``), plus the
  run's totals logged once at its last step (``train/steps``, ``train/tokens``, ...). Totals that
  restate the last history point (``final_loss``) are not logged again; averages over the whole
  run are ``train/mean_<name>`` so they do not join the per-step history.
* ``val/<name>``: the evaluations during training (``val/loss``, ``val/perplexity``), and
  ``val/best_loss``.
* ``eval/<name>``: the evaluate stage's held-out figures (``eval/loss``, ``eval/perplexity``,
  ``eval/bits_per_byte``, ...).
* ``<stage>/<name>``: the other stages' numbers (``validate/invalid_fraction``, ``shard/records``,
  ``tokenizer/vocab_size`` ...).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from lmcore.tracking.client import numeric

TRAIN, VAL, EVAL = "train/", "val/", "eval/"

# train-stage summary keys -> their name, or None when the figure is already in a history or a tag
_TRAIN_TOTALS: dict[str, Optional[str]] = {
    "final_loss": None,            # = the last train/loss point
    "final_eval_loss": None,       # = the last val/loss point
    "best_eval_loss": VAL + "best_loss",
    "tokens_per_sec": TRAIN + "mean_tokens_per_sec",
    "mfu": TRAIN + "mean_mfu",
}
# evaluate-stage keys that restate the train stage's figures (already under train/)
_EVAL_COPIES = ("train_tokens_per_sec", "train_mfu", "train_elapsed_s", "train_tokens")


def _bare(name: str) -> str:
    return name.removeprefix("eval_").removeprefix("val_")


def train_metric(name: str) -> str:
    """A per-step training figure: ``loss`` -> ``train/loss``."""
    return TRAIN + name


def val_metric(name: str) -> str:
    """An evaluation during training: ``eval_loss`` -> ``val/loss``."""
    return VAL + _bare(name)


def eval_metric(name: str) -> Optional[str]:
    """The evaluate stage's figure: ``eval_loss`` -> ``eval/loss``; None for copies of train figures."""
    if name in _EVAL_COPIES or name == "step":
        return None
    return EVAL + _bare(name)


def stage_metric(stage: str, name: str) -> Optional[str]:
    """A stage summary's number, or None where the figure already has its name (the evaluate stage's
    are its ``eval/`` metrics; the train stage's final loss is its last ``train/loss`` point)."""
    if stage == "evaluate":
        return None
    if stage == "train":
        return _TRAIN_TOTALS.get(name, TRAIN + name)
    return f"{stage}/{name}"


def finite_numbers(metrics: dict[str, Any], rename) -> dict[str, float]:
    """``{rename(key): value}`` for the finite real numbers in ``metrics`` whose name is not None."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        number, name = numeric(value), rename(key)
        if number is not None and name is not None and math.isfinite(number):
            out[name] = number
    return out
