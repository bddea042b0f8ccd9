"""How lmcore talks to MLflow: the client on the configured store, and the rule that tracking never kills work.

* :func:`make_client` opens an ``MlflowClient`` on ``cfg.tracking_uri()`` (env > ``tracking.uri``
  > SQLite under ``paths.mlflow``); an embedded SQLite store is created under a file lock.
* Artifacts of a local store go to ``paths.mlflow/mlartifacts`` (:func:`artifact_root`): never a
  stray ``mlflow.db`` or ``mlruns/`` in the current directory.
* :func:`never_fails` turns a tracking call's exception into one warning: the pipeline's work
  matters more than its record.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcore.locks import FileLock

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from lmcore.config import PipelineConfig

log = logging.getLogger("lmcore.tracking")

_ENV_SET_HERE: set[str] = set()


def prepare_mlflow_env(cfg: "PipelineConfig") -> None:
    """Environment MLflow reads at call time: no telemetry, short HTTP timeouts.

    A variable the user set is left alone; one lmcore set follows the latest config.
    """
    wanted = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(cfg.tracking.request_timeout),
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(cfg.tracking.request_retries)}
    for name, value in wanted.items():
        if name not in os.environ or name in _ENV_SET_HERE:
            os.environ[name] = value
            _ENV_SET_HERE.add(name)


def is_local_store(uri: str) -> bool:
    """True for stores whose artifacts lmcore places itself (SQLite / file), False for servers."""
    return uri.startswith(("sqlite:", "file:", "/", "postgresql:", "mysql:")) or "://" not in uri


def artifact_root(cfg: "PipelineConfig") -> str:
    """``file://`` URI of ``paths.mlflow/mlartifacts`` (absolute)."""
    return (Path(cfg.paths.mlflow) / "mlartifacts").resolve().as_uri()


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def make_client(cfg: "PipelineConfig") -> "MlflowClient":
    """An ``MlflowClient`` on the configured URI (creating ``paths.mlflow`` for the SQLite default).

    An embedded SQLite store is opened under a file lock beside the database: MLflow creates and
    migrates the database the first time it is opened, and two processes doing that at once leave
    it broken (``_alembic_tmp_... already exists``). Under the lock the second one finds it ready.
    """
    prepare_mlflow_env(cfg)
    from mlflow import MlflowClient

    uri = cfg.tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    db = sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(db.with_name(db.name + ".lock"))
        lock.acquire()
        try:
            client.search_experiments(max_results=1)  # creates and migrates the database, once
            client.search_registered_models(max_results=1)
        finally:
            lock.remove()
    return client


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (None when not in a repository or git is absent)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def numeric(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def never_fails(method):
    """Tracking calls warn instead of raising: the pipeline's work matters more than its record."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            log.warning("tracking: %s failed (%s: %s); the pipeline goes on", method.__name__,
                        type(exc).__name__, str(exc)[:300])
            return None

    return wrapper


@contextmanager
def scoped_tracking_uri(uri: str):
    """Set MLflow's global tracking URI for a block, then put back the old one and the env var.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into ``os.environ``, which
    would then override every later config's URI in this process (env wins in ``cfg.tracking_uri()``).
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    old_global = getattr(tracking_utils, "_tracking_uri", None)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_global)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
