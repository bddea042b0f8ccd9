"""The trainer callback that records a training run in MLflow.

Why its own module: it is the one piece of tracking that runs inside the
training loop, so it must cost nothing per step. ``on_log``/``on_eval`` only
append to a :class:`~lmcore.tracking.buffer.MetricBuffer` (sent in batches by a
background thread) and to in-memory loss/lr series; ``on_train_end`` sends
what is left within ``tracking.final_flush_timeout`` and logs
``plots/loss_curve.png`` drawn from those series, so the plot exists even if
the server was down for part of the run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lmcore.tracking.buffer import MetricBuffer
from lmcore.tracking.client import never_fails, numeric
from lmcore.tracking.metric_names import train_metric, val_metric


class NullCallback:
    """Trainer callback that records nothing."""

    def on_train_start(self, info: dict | None = None) -> None: ...
    def on_log(self, step: int, metrics: dict) -> None: ...
    def on_eval(self, step: int, metrics: dict) -> None: ...
    def on_checkpoint(self, step: int, path: Any) -> None: ...
    def on_train_end(self, summary: dict | None = None) -> None: ...


class MlflowTrainCallback:
    """Trainer callback (``on_log`` / ``on_eval`` / ``on_train_end``) writing to one MLflow run.

    Metrics go through a :class:`MetricBuffer` (background thread, batches of up
    to 1000, retry with backoff). Loss and learning-rate history is also kept
    here so that ``on_train_end`` can draw ``plots/loss_curve.png`` even if the
    server was down meanwhile.
    """

    def __init__(self, run):
        from mlflow.entities import Metric

        self.run = run
        tcfg = run.cfg.tracking
        client, run_id = run.client, run.run_id

        def send(batch) -> None:
            client.log_batch(run_id, metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in batch],
                             synchronous=True)

        self.buffer = MetricBuffer(send, flush_every=tcfg.flush_every_seconds,
                                   max_pending=tcfg.max_buffered_metrics)
        self.train_loss: list[tuple[int, float]] = []
        self.val_loss: list[tuple[int, float]] = []
        self.lr: list[tuple[int, float]] = []
        self.unsent = 0
        self._closed = False

    def on_train_start(self, info: dict | None = None) -> None:
        if info:
            scalars = {f"lmcore.train.{k}": v for k, v in info.items() if isinstance(v, (int, float, str))}
            self.run.set_tags(dict(list(scalars.items())[:50]))

    def on_log(self, step: int, metrics: dict) -> None:
        """Per-step figures as ``train/<name>`` (see :mod:`lmcore.tracking.metric_names`)."""
        self._history(step, metrics, train_metric)
        if numeric(metrics.get("loss")) is not None:
            self.train_loss.append((step, float(metrics["loss"])))
        if numeric(metrics.get("lr")) is not None:
            self.lr.append((step, float(metrics["lr"])))

    def on_eval(self, step: int, metrics: dict) -> None:
        """Validation figures as ``val/<name>`` (the trainer's ``eval_loss`` becomes ``val/loss``)."""
        self._history(step, metrics, val_metric)
        if numeric(metrics.get("eval_loss")) is not None:
            self.val_loss.append((step, float(metrics["eval_loss"])))

    def _history(self, step: int, metrics: dict, name) -> None:
        """The real numbers of ``metrics`` at ``step``, named by ``name(key)``: buffered for MLflow, and
        sent to the W&B mirror when there is one."""
        history = {name(key): number for key, value in metrics.items()
                   if key != "step" and (number := numeric(value)) is not None}
        for key, number in history.items():
            self.buffer.add(key, number, step)
        if self.run.mirror is not None:
            self.run.mirror.log_history(history, step)

    def on_checkpoint(self, step: int, path: Any) -> None:
        return None

    def on_train_end(self, summary: dict | None = None) -> None:
        """Send what is left (within ``tracking.final_flush_timeout``) and log the loss-curve PNG. The
        summary's totals are logged by the pipeline with the stage (``train/steps`` ...), once."""
        self.close()
        self._log_plot()

    def close(self) -> int:
        if not self._closed:
            self._closed = True
            self.unsent = self.buffer.close(timeout=self.run.cfg.tracking.final_flush_timeout)
        return self.unsent

    @never_fails
    def _log_plot(self) -> None:
        from lmcore.tracking.plots import plot_loss_curve

        if not self.train_loss and not self.val_loss:
            return
        with tempfile.TemporaryDirectory(prefix="lmcore-plot-") as tmp:
            png = plot_loss_curve(self.train_loss, Path(tmp) / "loss_curve.png", val=self.val_loss, lr=self.lr)
            self.run.client.log_artifact(self.run.run_id, str(png), "plots")
