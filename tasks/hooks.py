"""In-process observers of running stages (the CLI's progress bar).

Why a registry: Prefect task parameters must be small and serialisable, so a
live object such as a rich progress bar cannot be passed to a task; the CLI,
which runs the flow in its own process, registers trainer callbacks here and
the train task adds them to the trainer's callbacks. Empty by default.
"""

from __future__ import annotations

from typing import Any

TRAIN_CALLBACKS: list[Any] = []
