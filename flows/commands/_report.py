"""The console side of ``lmcore run`` and ``lmcore stage`` (no register(); not a command).

Why here: the flow emits "start"/"done" events (``flows.pipeline.STAGE_LISTENERS``)
and the trainer calls callbacks (``tasks.hooks.TRAIN_CALLBACKS``); this module
turns them into one line per stage plus a progress bar for the running stage
(a step bar during training), and prints where to look afterwards.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from lmcore.train.callbacks import StepClock, duration, step_line

STATUS_STYLE = {"ran": "green", "cached": "cyan", "cached (store)": "cyan"}
SETTING_UP = {"train": "setting up: model, data, checkpoints", "evaluate": "loading the checkpoint"}


class EtaColumn(TimeRemainingColumn):
    """Time remaining: the trainer's own estimate when it gave one (it knows ``training.max_time``),
    else rich's from the bar's speed."""

    def render(self, task):
        eta = task.fields.get("eta")
        if eta is None:
            return super().render(task)
        from rich.text import Text

        return Text(duration(eta), style="progress.remaining")


class TrainProgress:
    """Trainer callback that feeds the reporter: the step bar, or plain step lines off a terminal."""

    def __init__(self, reporter: "StageReporter"):
        self.reporter = reporter
        self.clock = StepClock()

    def on_train_start(self, info: Any = None) -> None:
        info = info or {}
        self.clock.start_from(info)
        self.reporter.set_total(info.get("total_steps"), completed=info.get("start_step", 0),
                                note=f"resumed at step {info['start_step']}" if info.get("start_step") else "")

    def on_log(self, step: int, metrics: dict) -> None:
        self.reporter.train_step(step, metrics, self.clock)


class StageReporter:
    """Live console output for a pipeline run; use as a context manager around the flow call.

    On a terminal: one line per finished stage and a progress bar for the running one (bytes for
    validate and shard, steps with loss, tokens/s and ETA for train, batches for evaluate). Off a
    terminal (CI, a log file): the same stage lines, a line when a stage starts, and one plain line
    per logged training step.
    """

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.interactive = self.console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description:<12}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), EtaColumn(), console=self.console, transient=True)
        self.task_id: Any = None
        self.current: str | None = None
        self.records: dict[str, Any] = {}
        self._announce: Any = None  # off a terminal: "X running" once a stage takes over a second

    def __enter__(self) -> "StageReporter":
        from flows.pipeline import STAGE_LISTENERS
        from tasks.hooks import PROGRESS_LISTENERS, TRAIN_CALLBACKS

        STAGE_LISTENERS.append(self.on_event)
        TRAIN_CALLBACKS.append(TrainProgress(self))
        PROGRESS_LISTENERS.append(self.on_progress)
        if self.interactive:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        from flows.pipeline import STAGE_LISTENERS
        from tasks.hooks import PROGRESS_LISTENERS, TRAIN_CALLBACKS

        if self.interactive:
            self.progress.stop()
        STAGE_LISTENERS.remove(self.on_event)
        PROGRESS_LISTENERS.remove(self.on_progress)
        TRAIN_CALLBACKS[:] = [c for c in TRAIN_CALLBACKS if getattr(c, "reporter", None) is not self]

    def on_event(self, event: str, record: dict[str, Any]) -> None:
        if event == "start":
            self.current = record["stage"]
            if self.task_id is not None:
                self.progress.remove_task(self.task_id)
            note = SETTING_UP.get(record["stage"], "")
            self.task_id = self.progress.add_task(record["stage"], total=None, note=note)
            if not self.interactive:
                import threading

                line = f"{record['stage']:<12} running" + (f" ({note})" if note else "")
                self._announce = threading.Timer(1.0, lambda: self.console.print(line, highlight=False))
                self._announce.daemon = True
                self._announce.start()
        elif event == "done":
            if self._announce is not None:
                self._announce.cancel()
            self.current = None
            self.records[record["stage"]] = record
            if self.task_id is not None:
                self.progress.remove_task(self.task_id)
                self.task_id = None
            self.console.print(stage_line(record), highlight=False)

    def on_progress(self, stage: str, done: int, total: int) -> None:
        """Bytes read by validate/shard, batches scored by evaluate."""
        if self.task_id is not None and total:
            unit = "batches" if stage == "evaluate" else "bytes"
            self.progress.update(self.task_id, total=total, completed=min(done, total), note=unit)

    def set_total(self, total: int | None, completed: int = 0, note: str = "") -> None:
        if self.task_id is not None and total:
            self.progress.reset(self.task_id, total=int(total), completed=completed, note=note)

    def train_step(self, step: int, metrics: dict, clock: StepClock) -> None:
        if not self.interactive:
            self.console.print(f"{'train':<12} {step_line(step, clock.total, metrics, clock.eta(step))}",
                               highlight=False)
        elif self.task_id is not None:
            loss, tps = metrics.get("loss"), metrics.get("tokens_per_sec")
            note = "  ".join(p for p in (f"loss {loss:.3f}" if loss is not None else "",
                                         f"{tps:,.0f} tok/s" if tps is not None else "") if p)
            self.progress.update(self.task_id, completed=step, note=note, eta=clock.eta(step))


def stage_line(record: dict[str, Any]) -> str:
    status = record["status"]
    style = STATUS_STYLE.get(status, "white")
    figure = record.get("figure") or ""
    return (f"{record['stage']:<12} [{style}]{status:<15}[/] {record['seconds']:>7.1f}s  {figure}").rstrip()


def where_to_look(records: dict[str, Any], console: Console) -> None:
    run = records.get("_run", {})
    console.print(f"[bold]store[/]      {run.get('store')}")
    if run.get("tracking_uri"):
        console.print(f"[bold]MLflow[/]     mlflow ui --backend-store-uri {run['tracking_uri']}"
                      + (f"   (run {run['mlflow_run_id']})" if run.get("mlflow_run_id")
                         else "   (no new run: nothing was recomputed)"))
    import os

    api = os.environ.get("PREFECT_API_URL", "")
    if api and run.get("prefect_api") in ("lmcore server", "PREFECT_API_URL"):
        console.print(f"[bold]Prefect[/]    {api.removesuffix('/api')}   (the flow runs, their tasks and logs)")
    else:
        console.print("[bold]Prefect[/]    lmcore server start   (a server with the UI, used by the next commands)")
