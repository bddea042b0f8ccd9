"""Weights & Biases as a second tracker: the MLflow run's params and metrics, mirrored.

Why a mirror and not a second implementation of every tracking call: MLflow stays the record
(registry, artifacts, lineage); teams that watch runs in W&B get the same params (the dotted
config keys) and the same metric names (``lmcore.tracking.metric_names``). :class:`TrackedRun`
forwards to the mirror as it logs, so nothing can be logged to one and forgotten in the other.

* One W&B run per MLflow run, with the MLflow run id as its id: the tasks of one pipeline run
  (threads of one process) share it through :func:`mirror_for`; a task in another process resumes
  it by that id.
* Per-step figures (``train/``, ``val/``) go to W&B's history at their training step; figures logged
  once (stage totals, ``eval/``) go to the run summary, since W&B refuses a step lower than the last.
* W&B must never stop or slow training: every call warns once and carries on, like MLflow's.
* ``wandb`` is imported only when ``tracking.wandb`` is set (the ``wandb`` extra installs it).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lmcore.errors import ConfigError

if TYPE_CHECKING:
    from lmcore.config import PipelineConfig

log = logging.getLogger(__name__)

_lock = threading.Lock()
_open: dict[str, "WandbMirror"] = {}  # MLflow run id -> its mirror in this process


def check_installed(cfg: "PipelineConfig") -> None:
    """A ConfigError naming ``tracking.wandb`` when it is set and ``wandb`` cannot be imported: said
    before any work starts, not after training."""
    if cfg.tracking.wandb is None or cfg.tracking.wandb.mode == "disabled":
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError("tracking.wandb is set but the wandb package is not installed: "
                          "pip install 'lmcore[wandb]' (or pip install wandb)", key="tracking.wandb") from None


class WandbMirror:
    """One W&B run that receives what an MLflow run receives."""

    def __init__(self, wandb_run: Any):
        self.run = wandb_run
        self.users = 0
        self.last_step = -1
        self._warned = False
        self._step_lock = threading.Lock()

    # ------------------------------------------------------------------ what TrackedRun forwards
    def log_params(self, params: dict[str, Any]) -> None:
        self._call(lambda: self.run.config.update(params, allow_val_change=True))

    def log_history(self, metrics: dict[str, float], step: int) -> None:
        """Per-step figures at ``step``; a step before the last one goes to the summary instead."""
        if not metrics:
            return
        with self._step_lock:
            late = step < self.last_step
            self.last_step = max(self.last_step, step)
        if late:
            self.log_summary(metrics)
        else:
            self._call(lambda: self.run.log(dict(metrics), step=step))

    def log_summary(self, metrics: dict[str, float]) -> None:
        if metrics:
            self._call(lambda: self.run.summary.update(dict(metrics)))

    def finish(self) -> None:
        self._call(self.run.finish)

    def _call(self, fn) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - W&B never stops training
            if not self._warned:
                self._warned = True
                log.warning("W&B: logging failed (%s: %s); MLflow still has the run", type(exc).__name__,
                            str(exc)[:200])


def _start(cfg: "PipelineConfig", run_id: str, resume: bool) -> Optional[WandbMirror]:
    wcfg = cfg.tracking.wandb
    try:
        import wandb

        folder = Path(wcfg.dir or cfg.paths.mlflow)
        folder.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=wcfg.project, entity=wcfg.entity, mode=wcfg.mode, dir=str(folder), id=run_id,
                         name=cfg.tracking.run_name, resume="allow" if resume else None, reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off"))
    except Exception as exc:  # noqa: BLE001
        log.warning("W&B: cannot start a run (%s: %s); continuing with MLflow only", type(exc).__name__,
                    str(exc)[:300])
        return None
    where = getattr(run, "url", None) or (getattr(run, "dir", None) if wcfg.mode == "offline" else None)
    log.info("W&B run %s%s", run_id, f": {where}" if where else "")
    return WandbMirror(run)


def mirror_for(cfg: "PipelineConfig", run_id: str, resume: bool = False) -> Optional[WandbMirror]:
    """The W&B mirror of MLflow run ``run_id`` (started, or resumed when ``resume`` and this process
    has none); None when ``tracking.wandb`` is unset or W&B cannot start. Pair with :func:`release`."""
    if cfg.tracking.wandb is None or cfg.tracking.wandb.mode == "disabled":
        return None
    with _lock:
        mirror = _open.get(run_id)
        if mirror is None:
            mirror = _start(cfg, run_id, resume)
            if mirror is None:
                return None
            _open[run_id] = mirror
        mirror.users += 1
        return mirror


def release(run_id: str, mirror: Optional[WandbMirror]) -> None:
    """The caller is done with the mirror; the last user finishes the W&B run."""
    if mirror is None:
        return
    with _lock:
        mirror.users -= 1
        if mirror.users > 0:
            return
        _open.pop(run_id, None)
    mirror.finish()
