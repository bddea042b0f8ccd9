"""In-process observers of running stages (the CLI's progress bars).

Why a registry: Prefect task parameters must be small and serialisable, so a
live object such as a rich progress bar cannot be passed to a task; the CLI,
which runs the flow in its own process, registers observers here and the tasks
hand them to the lmcore functions. Both lists are empty by default.

* ``TRAIN_CALLBACKS``: trainer callbacks added to ``run_train``'s callbacks.
* ``PROGRESS_LISTENERS``: ``listener(stage, done, total)`` for stages that
  report bytes read (validate, shard).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

TRAIN_CALLBACKS: list[Any] = []
PROGRESS_LISTENERS: list[Callable[[str, int, int], None]] = []


def progress_for(stage: str) -> Optional[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback for ``stage``, or None when nobody listens."""
    if not PROGRESS_LISTENERS:
        return None

    def report(done: int, total: int) -> None:
        for listener in list(PROGRESS_LISTENERS):
            listener(stage, done, total)

    return report
