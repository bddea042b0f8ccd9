"""The raw files a pipeline config names, checked before any work starts.

Why a function of its own: a missing or empty data file is a usage error, and the command should
say so (naming the config key) in a fraction of a second, before Prefect, torch or a server start.
The data stages read the same files through :func:`lmcore.data.formats.expand_paths`, so what is
checked here is what they will read.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmcore.data.formats import expand_paths
from lmcore.errors import ConfigError, DataFormatError


def _expand(patterns: list[str], key: str) -> list[str]:
    try:
        files = expand_paths(patterns)
    except DataFormatError as exc:
        raise ConfigError(str(exc).replace(" (data.training_data_path / data.eval_data_path)", ""), key=key) from None
    return [str(Path(f).resolve()) for f in files]


def input_paths(cfg) -> tuple[list[str], list[str]]:
    """``(training files, eval files)`` named by ``data.training_data_path`` / ``data.eval_data_path``:
    absolute paths in a stable order; a ``ConfigError`` naming the key when there are none, when a
    pattern matches nothing, or when every training file is empty."""
    if not cfg.data.training_data_path:
        raise ConfigError("no training data given", key="data.training_data_path")
    train = _expand(cfg.data.training_data_path, "data.training_data_path")
    evals = _expand(cfg.data.eval_data_path, "data.eval_data_path") if cfg.data.eval_data_path else []
    if all(os.path.getsize(f) == 0 for f in train):
        raise ConfigError(f"every training file is empty ({', '.join(train[:3])}{' ...' if len(train) > 3 else ''})",
                          key="data.training_data_path")
    return train, evals
