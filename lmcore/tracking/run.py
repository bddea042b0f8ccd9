"""MLflow tracking for a pipeline run: params, stage keys, data, metrics, artifacts.

Why a wrapper rather than ``mlflow.*`` calls in each task: a pipeline run is
one MLflow run that several tasks (threads or processes) write to, so the run
is addressed by id through ``MlflowClient`` (no global "active run"), and the
rules live in one place:

- the tracking URI is ``cfg.tracking_uri()`` (env > ``tracking.uri`` > SQLite
  under ``paths.mlflow``) and, for a local store, artifacts go to
  ``paths.mlflow/mlartifacts``: never a stray ``mlflow.db`` or ``mlruns/`` in
  the current directory;
- only rank 0 logs (``is_main`` or env ``RANK``); other ranks and
  ``tracking.enabled: false`` get a :class:`NullRun` with the same methods;
- tracking never kills the work: a server that is down when the run starts
  gives a warning and a :class:`NullRun`; a failed call later gives one warning;
  training metrics are buffered and sent in batches by
  :class:`lmcore.tracking.buffer.MetricBuffer`.

Usage (the flow layer reads the Prefect flow-run id and passes it in)::

    tracker = PipelineTracker(cfg)
    with tracker.run(flow_run_id) as run:
        run.log_config()
        ...
    with tracker.resume(run_id) as run:   # from another task / process
        run.log_stage("train", key, summary)

The client and the never-fail rule are in :mod:`lmcore.tracking.client`, the trainer callback in
:mod:`lmcore.tracking.callback`, the registry (``register_model``, ``list_registry_versions``) in
:mod:`lmcore.tracking.registry`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from lmcore.locks import pid_alive
from lmcore.tracking.callback import MlflowTrainCallback, NullCallback
from lmcore.tracking.client import artifact_root, git_commit, is_local_store, make_client, never_fails, numeric
from lmcore.tracking.metric_names import eval_metric, finite_numbers, stage_metric
from lmcore.tracking.wandb_mirror import mirror_for, release

if TYPE_CHECKING:
    from lmcore.tracking.wandb_mirror import WandbMirror
    from mlflow import MlflowClient

    from lmcore.config import PipelineConfig

log = logging.getLogger("lmcore.tracking")

MAX_PARAMS_PER_BATCH = 100  # mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH
MAX_PARAM_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_LENGTH = 8000
MAX_STAGE_METRICS = 20


class PipelineTracker:
    """Opens (or re-opens) the MLflow run of a pipeline run. See the module docstring."""

    def __init__(self, cfg: "PipelineConfig", is_main: bool | None = None):
        self.cfg = cfg
        self.is_main = int(os.environ.get("RANK", "0") or 0) == 0 if is_main is None else is_main
        self.enabled = bool(cfg.tracking.enabled) and self.is_main
        self._client: "MlflowClient | None" = None

    @property
    def client(self) -> "MlflowClient":
        if self._client is None:
            self._client = make_client(self.cfg)
        return self._client

    def experiment_id(self) -> str:
        """Id of ``tracking.experiment_name``, created (with lmcore's artifact location) if missing."""
        name = self.cfg.tracking.experiment_name
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = artifact_root(self.cfg) if is_local_store(self.cfg.tracking_uri()) else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # another process created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    @contextmanager
    def run(self, flow_run_id: str | None = None, tags: dict[str, str] | None = None) -> Iterator["TrackedRun"]:
        """A new MLflow run for one pipeline run; ended FINISHED (or FAILED if the block raises)."""
        if not self.enabled:
            yield NullRun()
            return
        try:
            all_tags = {"lmcore.version": _lmcore_version(), "lmcore.host": socket.gethostname(),
                        "lmcore.pid": str(os.getpid())}
            if flow_run_id:
                all_tags["lmcore.flow_run_id"] = str(flow_run_id)
            commit = git_commit()
            if commit:
                all_tags["mlflow.source.git.commit"] = commit
            all_tags.update(tags or {})
            experiment_id = self.experiment_id()
            self.close_abandoned_runs(experiment_id)
            created = self.client.create_run(experiment_id, run_name=self.cfg.tracking.run_name, tags=all_tags)
        except Exception as exc:  # noqa: BLE001
            log.warning("tracking: cannot start an MLflow run at %s (%s: %s); continuing without tracking",
                        self.cfg.tracking_uri(), type(exc).__name__, str(exc)[:300])
            yield NullRun()
            return
        mirror = mirror_for(self.cfg, created.info.run_id)
        run = TrackedRun(self, created.info.run_id, mirror)
        status = "FAILED"
        try:
            yield run
            status = "FINISHED"
        finally:
            run.close()
            release(run.run_id, mirror)
            try:
                self.client.set_terminated(run.run_id, status=status)
            except Exception as exc:  # noqa: BLE001
                log.warning("tracking: could not mark run %s %s (%s)", run.run_id, status, exc)

    def close_abandoned_runs(self, experiment_id: str) -> list[str]:
        """Mark KILLED the runs of this experiment left RUNNING by an lmcore process of this host that
        no longer exists (a kill -9, a power cut); returns their ids. Runs of live processes and of
        other hosts are left alone."""
        from mlflow.entities import RunStatus

        host = socket.gethostname()
        closed = []
        try:
            runs = self.client.search_runs([experiment_id], max_results=200, filter_string=(
                f"attributes.status = 'RUNNING' and tags.`lmcore.host` = '{host}'"))
        except Exception as exc:  # noqa: BLE001 - a nicety; never stop a run for it
            log.debug("tracking: could not look for abandoned runs: %s", exc)
            return closed
        for run in runs:
            pid = run.data.tags.get("lmcore.pid", "")
            if pid.isdigit() and not pid_alive(int(pid)):
                self.client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
                closed.append(run.info.run_id)
        if closed:
            log.warning("tracking: marked %d run(s) KILLED that a dead process left RUNNING: %s", len(closed),
                        ", ".join(closed))
        return closed

    @contextmanager
    def resume(self, run_id: str | None) -> Iterator["TrackedRun"]:
        """Re-open an existing run (another task, thread or process); its status is left as it is."""
        if not self.enabled or not run_id:
            yield NullRun()
            return
        mirror = mirror_for(self.cfg, run_id, resume=True)
        run = TrackedRun(self, run_id, mirror)
        try:
            yield run
        finally:
            run.close()
            release(run_id, mirror)


class TrackedRun:
    """What a pipeline stage logs into its MLflow run. Every method warns instead of raising."""

    def __init__(self, tracker: PipelineTracker, run_id: str, mirror: "WandbMirror | None" = None):
        self.tracker = tracker
        self.cfg = tracker.cfg
        self.run_id = run_id
        self.mirror = mirror  # W&B, when tracking.wandb is set: gets the same params and metrics
        self._callbacks: list["MlflowTrainCallback"] = []

    @property
    def client(self) -> "MlflowClient":
        return self.tracker.client

    def close(self) -> None:
        for cb in self._callbacks:
            cb.close()

    # ------------------------------------------------------------------ params and tags
    @never_fails
    def log_config(self) -> int:
        """The resolved config as params (dotted keys, batches of 100) and as ``config/config.yaml``."""
        from mlflow.entities import Param

        params = [Param(k, _truncate("" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v),
                                     MAX_PARAM_LENGTH))
                  for k, v in self.cfg.flat().items()]
        if self.mirror is not None:
            self.mirror.log_params({p.key: p.value for p in params})
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS_PER_BATCH], synchronous=True)
        self.client.log_text(self.run_id, self.cfg.to_yaml(), "config/config.yaml")
        return len(params)

    @never_fails
    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _truncate(str(v), MAX_TAG_LENGTH)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[i:i + MAX_PARAMS_PER_BATCH], synchronous=True)

    @never_fails
    def log_stage(self, stage: str, key: str, summary: dict[str, Any] | None = None) -> None:
        """Tag ``lmcore.<stage>.key`` (and the summary's short strings as ``lmcore.<stage>.<name>``);
        log its top-level numbers under the one name :func:`~lmcore.tracking.metric_names.stage_metric`
        gives them (none for figures that already have a name)."""
        from mlflow.entities import Metric, RunTag

        summary = summary or {}
        tags = [RunTag(f"lmcore.{stage}.key", str(key))]
        tags += [RunTag(f"lmcore.{stage}.{name}", value) for name, value in summary.items()
                 if isinstance(value, str) and len(value) < 250]
        now = int(time.time() * 1000)
        numbers = finite_numbers(summary, lambda name: stage_metric(stage, name))
        metrics = [Metric(name, value, now, 0) for name, value in list(numbers.items())[:MAX_STAGE_METRICS]]
        if self.mirror is not None:
            self.mirror.log_summary({m.key: m.value for m in metrics})
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags[:MAX_PARAMS_PER_BATCH], synchronous=True)

    # ------------------------------------------------------------------ artifacts
    @never_fails
    def log_validation_report(self, path: str | Path) -> None:
        """The validate stage's report (and the quarantine file beside it, if small) under ``validation/``."""
        path = Path(path)
        self.client.log_artifact(self.run_id, str(path), "validation")
        quarantine = path.with_name("quarantine.jsonl")
        if quarantine.is_file() and quarantine.stat().st_size <= 5 * 1024 * 1024:
            self.client.log_artifact(self.run_id, str(quarantine), "validation")

    @never_fails
    def log_tokenizer(self, tokenizer_dir: str | Path) -> None:
        """The tokenizer folder under ``tokenizer/``."""
        self.client.log_artifacts(self.run_id, str(tokenizer_dir), "tokenizer")

    @never_fails
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    @never_fails
    def log_dataset(self, shard_manifest: dict[str, Any], location: str | Path | None = None,
                    context: str = "training") -> str:
        """The training data as an MLflow dataset input: name, digest of the shard files, source.

        ``location`` is the shard directory (default ``<paths.store>/shards/<key>``).
        Returns the digest (also tagged ``lmcore.data.digest``).
        """
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        digest = dataset_digest(shard_manifest)
        key = str(shard_manifest.get("key", "unknown"))
        location = location or shard_manifest.get("dir") or Path(self.cfg.paths.store) / "shards" / key
        source = _dataset_source(Path(location))
        dataset = MetaDataset(source=source, name=f"lmcore-shards-{key[:12]}", digest=digest)
        entity = dataset._to_mlflow_entity()
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])
        self.set_tags({"lmcore.data.digest": digest, "lmcore.shards.key": key})
        return digest

    # ------------------------------------------------------------------ metrics
    def train_callback(self) -> "MlflowTrainCallback":
        """A trainer callback that buffers metrics, sends them in batches and logs the loss curve."""
        cb = MlflowTrainCallback(self)
        self._callbacks.append(cb)
        return cb

    @never_fails
    def log_metrics(self, metrics: dict[str, Any], step: int = 0, prefix: str = "") -> int:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(prefix + k, n, now, step) for k, v in metrics.items()
                 if (n := numeric(v)) is not None]
        if self.mirror is not None:  # values logged once: the W&B summary (its history is per step)
            self.mirror.log_summary({m.key: m.value for m in items})
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000], synchronous=True)
        return len(items)

    def log_eval(self, metrics: dict[str, Any], step: int = 0) -> None:
        """The evaluate stage's figures (loss, perplexity, bits per byte ...) as ``eval/<name>``."""
        self.log_metrics(finite_numbers(metrics, eval_metric), step=step)

    # ------------------------------------------------------------------ registry
    def register(self, model_dir: str | Path, lineage: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        """Log ``model_dir`` as a pyfunc model and register it; see :func:`lmcore.tracking.registry.register_model`."""
        from lmcore.tracking.registry import register_model  # mlflow.pyfunc: loaded only to register

        try:
            return register_model(self, Path(model_dir), lineage, metrics)
        except Exception as exc:  # noqa: BLE001
            log.warning("tracking: registering %s failed (%s: %s); the model is still in %s",
                        model_dir, type(exc).__name__, str(exc)[:300], model_dir)
            return {"name": self.cfg.tracking.registered_model_name, "version": None, "alias": None,
                    "error": f"{type(exc).__name__}: {exc}"}


class NullRun:
    """Stands in when tracking is off, not rank 0, or the server is unreachable: records nothing."""

    run_id = None

    def close(self) -> None: ...
    def log_config(self) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_stage(self, stage: str, key: str, summary: dict[str, Any] | None = None) -> None: ...
    def log_validation_report(self, path: str | Path) -> None: ...
    def log_tokenizer(self, tokenizer_dir: str | Path) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, shard_manifest: dict[str, Any], location: str | Path | None = None,
                    context: str = "training") -> None: ...
    def log_metrics(self, metrics: dict[str, Any], step: int = 0, prefix: str = "") -> None: ...
    def log_eval(self, metrics: dict[str, Any], step: int = 0) -> None: ...

    def train_callback(self) -> NullCallback:
        return NullCallback()

    def register(self, model_dir: str | Path, lineage: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        return {"name": None, "version": None, "alias": None}


# --------------------------------------------------------------------------- helpers


def dataset_digest(shard_manifest: dict[str, Any]) -> str:
    """16 hex chars of sha256 over the shard files' names and hashes (the store key if none listed).

    Without a ``files`` list, the ``manifest.json`` in ``shard_manifest["dir"]`` is read for one.
    """
    files = shard_manifest.get("files") or []
    manifest_path = Path(str(shard_manifest.get("dir", ""))) / "manifest.json"
    if not files and shard_manifest.get("dir") and manifest_path.is_file():
        files = json.loads(manifest_path.read_text(encoding="utf-8")).get("files") or []
    files = [f for f in files if isinstance(f, dict) and f.get("name") != "manifest.json"]
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.get("name", "")):
        h.update(f"{f.get('name')}:{f.get('sha256')}\n".encode())
    if not files:
        h.update(str(shard_manifest.get("key", "")).encode())
    return h.hexdigest()[:16]


def _dataset_source(location: Path):
    """MLflow's local-artifact dataset source for a folder (resolved by URI scheme)."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": both are local files
        return resolve_dataset_source(location.resolve().as_uri())


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lmcore_version() -> str:
    import lmcore

    return lmcore.__version__
