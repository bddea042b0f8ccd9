"""Training callbacks: how the loop reports progress without knowing who listens.

A callback is any object with some of ``on_train_start(info)``, ``on_log(step, metrics)``,
``on_eval(step, metrics)``, ``on_checkpoint(step, path)``, ``on_train_end(summary)``
(contract in docs/internals.md).  :class:`CallbackList` calls only the methods an object
has, and only on the main rank.  Two standard ones live here:

* :class:`LoggingCallback`: one ``logging`` line per log/eval/checkpoint; Prefect captures
  these inside the train task, and plain scripts see them with ``logging.basicConfig``.
* :class:`RichProgressCallback`: a rich progress bar (step, loss, lr, tokens/s, ETA) for
  the CLI.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

log = logging.getLogger("lmcore.train")

EVENTS = ("on_train_start", "on_log", "on_eval", "on_checkpoint", "on_train_end")


class CallbackList:
    """Dispatches events to callbacks that define them; silent on non-main ranks, except to callbacks
    marked ``every_rank = True`` (the multi-node event relay, whose rank need not be global rank 0)."""

    def __init__(self, callbacks: Iterable[Any] = (), is_main: bool = True):
        self.callbacks = list(callbacks)
        self.is_main = is_main

    def __call__(self, event: str, *args) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown callback event {event!r}")
        for cb in self.callbacks:
            if not (self.is_main or getattr(cb, "every_rank", False)):
                continue
            method = getattr(cb, event, None)
            if method is not None:
                method(*args)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def duration(seconds: float) -> str:
    """``1:02:03`` / ``2:05``: how long, for people."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def step_line(step: int, total: int | None, metrics: dict, eta_s: float | None = None) -> str:
    """One plain line per logged step: ``step 10/60  loss 4.873  lr 3.00e-03  823 tok/s  ETA 1:02``."""
    parts = [f"step {step}/{total}" if total else f"step {step}"]
    if metrics.get("loss") is not None:
        parts.append(f"loss {metrics['loss']:.4f}")
    if metrics.get("lr") is not None:
        parts.append(f"lr {metrics['lr']:.2e}")
    if metrics.get("tokens_per_sec") is not None:
        parts.append(f"{metrics['tokens_per_sec']:,.0f} tok/s")
    if metrics.get("seq_length") is not None:
        parts.append(f"seq {metrics['seq_length']}")
    if eta_s is not None:
        parts.append(f"ETA {duration(eta_s)}")
    return "  ".join(parts)


class StepClock:
    """ETA from the pace so far: (steps left) x (seconds per step since the first logged step), or the
    training time ``training.max_time`` leaves, whichever ends first."""

    def __init__(self) -> None:
        self.total: int | None = None
        self._start: tuple[float, int] | None = None
        self._time_left: float | None = None  # max_time minus the training time of earlier sessions

    def start(self, total: int | None, start_step: int, max_time: float | None = None,
              elapsed_s: float = 0.0) -> None:
        self.total, self._start = total, (time.perf_counter(), start_step)
        self._time_left = max_time - elapsed_s if max_time else None

    def start_from(self, info: dict) -> None:
        """:meth:`start` from the trainer's ``on_train_start`` info."""
        self.start(info.get("total_steps"), info.get("start_step", 0), info.get("max_time"),
                   info.get("elapsed_s") or 0.0)

    def eta(self, step: int) -> float | None:
        if self._start is None:
            return None
        t0, s0 = self._start
        since = time.perf_counter() - t0
        by_time = max(0.0, self._time_left - since) if self._time_left is not None else None
        by_steps = (self.total - step) * since / (step - s0) if self.total and step > s0 else None
        return min((e for e in (by_steps, by_time) if e is not None), default=None)


class LoggingCallback:
    """Writes one INFO line per event to the ``lmcore.train`` logger (inside Prefect: the task's log)."""

    def __init__(self, logger: logging.Logger | None = None):
        self.log = logger or log
        self.clock = StepClock()

    def on_train_start(self, info: dict) -> None:
        self.clock.start_from(info)
        self.log.info("train start: %s", ", ".join(f"{k}={_fmt(v)}" for k, v in info.items()))

    def on_log(self, step: int, metrics: dict) -> None:
        self.log.info("%s", step_line(step, self.clock.total, metrics, self.clock.eta(step)))

    def on_eval(self, step: int, metrics: dict) -> None:
        self.log.info("eval step %d %s", step, " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))

    def on_checkpoint(self, step: int, path) -> None:
        self.log.info("checkpoint step %d -> %s", step, path)

    def on_train_end(self, summary: dict) -> None:
        self.log.info("train end: %s", ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items()
                                                 if not isinstance(v, (dict, list))))


class RichProgressCallback:
    """A rich progress bar over optimizer steps (total from ``info['total_steps']`` when known)."""

    def __init__(self, console=None):
        self.console = console
        self.progress = None
        self.task = None

    def on_train_start(self, info: dict) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=info.get("total_steps"),
                                           completed=info.get("start_step", 0), stats="")

    def on_log(self, step: int, metrics: dict) -> None:
        if self.progress is None:
            return
        stats = (f"loss {metrics.get('loss', float('nan')):.4f}  lr {metrics.get('lr', 0.0):.2e}  "
                 f"{metrics.get('tokens_per_sec', 0.0):,.0f} tok/s")
        self.progress.update(self.task, completed=step, stats=stats)

    def on_eval(self, step: int, metrics: dict) -> None:
        if self.progress is not None and "eval_loss" in metrics:
            self.progress.console.print(f"step {step}: eval loss {metrics['eval_loss']:.4f}")

    def on_train_end(self, summary: dict) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=summary.get("steps", 0))
            self.progress.stop()
            self.progress = None
