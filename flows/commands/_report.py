"""The console side of ``lmcore run`` and ``lmcore stage`` (no register(); not a command).

Why here: the flow emits "start"/"done" events (``flows.pipeline.STAGE_LISTENERS``)
and the trainer calls callbacks (``tasks.hooks.TRAIN_CALLBACKS``); this module
turns them into one line per stage plus a progress bar for the running stage
(a step bar during training), and prints where to look afterwards.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

STATUS_STYLE = {"ran": "green", "cached": "cyan", "cached (store)": "cyan"}


class TrainProgress:
    """Trainer callback that advances the progress bar's step count."""

    def __init__(self, reporter: "StageReporter"):
        self.reporter = reporter

    def on_train_start(self, info: Any = None) -> None:
        self.reporter.set_total((info or {}).get("total_steps"))

    def on_log(self, step: int, metrics: dict) -> None:
        loss = metrics.get("loss")
        self.reporter.advance_to(step, f"loss {loss:.3f}" if isinstance(loss, (int, float)) else "")


class StageReporter:
    """Live console output for a pipeline run; use as a context manager around the flow call."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description:<12}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.task_id: Any = None
        self.current: str | None = None
        self.records: dict[str, Any] = {}

    def __enter__(self) -> "StageReporter":
        from flows.pipeline import STAGE_LISTENERS
        from tasks.hooks import PROGRESS_LISTENERS, TRAIN_CALLBACKS

        STAGE_LISTENERS.append(self.on_event)
        TRAIN_CALLBACKS.append(TrainProgress(self))
        PROGRESS_LISTENERS.append(self.on_progress)
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        from flows.pipeline import STAGE_LISTENERS
        from tasks.hooks import PROGRESS_LISTENERS, TRAIN_CALLBACKS

        self.progress.stop()
        STAGE_LISTENERS.remove(self.on_event)
        PROGRESS_LISTENERS.remove(self.on_progress)
        TRAIN_CALLBACKS[:] = [c for c in TRAIN_CALLBACKS if getattr(c, "reporter", None) is not self]

    def on_event(self, event: str, record: dict[str, Any]) -> None:
        if event == "start":
            self.current = record["stage"]
            if self.task_id is not None:
                self.progress.remove_task(self.task_id)
            self.task_id = self.progress.add_task(record["stage"], total=None, note="")
        elif event == "done":
            self.current = None
            self.records[record["stage"]] = record
            if self.task_id is not None:
                self.progress.remove_task(self.task_id)
                self.task_id = None
            self.progress.console.print(stage_line(record), highlight=False)

    def on_progress(self, stage: str, done: int, total: int) -> None:
        """Bytes read by validate/shard."""
        if self.task_id is not None and total:
            self.progress.update(self.task_id, total=total, completed=min(done, total), note="bytes")

    def set_total(self, total: int | None) -> None:
        if self.task_id is not None and total:
            self.progress.update(self.task_id, total=int(total))

    def advance_to(self, step: int, note: str = "") -> None:
        if self.task_id is not None:
            self.progress.update(self.task_id, completed=step, note=note)


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

    home = os.environ.get("PREFECT_HOME", ".prefect-home")
    console.print(f"[bold]Prefect[/]    PREFECT_HOME={home} prefect server start   (then http://127.0.0.1:4200)")
