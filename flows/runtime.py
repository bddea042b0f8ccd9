"""Prefect/MLflow environment defaults, applied before Prefect is imported.

Why a module of its own: Prefect reads its settings when it is first imported,
so these defaults must be in ``os.environ`` before any ``import prefect``.
Every flow module and CLI command calls :func:`configure` first.

Defaults (each one only if the variable is not already set, so the user's
environment always wins):

* no server: Prefect's ephemeral API (SQLite under ``PREFECT_HOME``);
* ``PREFECT_HOME`` = ``./.prefect-home`` (``LMCORE_PREFECT_HOME`` or
  ``PREFECT_HOME`` override it); results, and therefore Prefect's cache
  records, live in ``$PREFECT_HOME/storage``;
* telemetry off (Prefect analytics, MLflow telemetry, ``DO_NOT_TRACK``);
* ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120`` (the default 20 s
  is exceeded on a loaded 2-core machine);
* quiet console (``quiet=True``, used by the CLI): Prefect's console *handler*
  at WARNING (not ``PREFECT_LOGGING_LEVEL``, which would also drop INFO lines
  before the API handler): task log lines still reach the Prefect API and UI;
* lmcore's loggers at INFO and attached to Prefect's API handler
  (``PREFECT_LOGGING_EXTRA_LOGGERS=lmcore``): the per-step training lines and the
  store's warnings are in the task logs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # lmcore's own log lines (per-step training lines, store warnings) reach Prefect's API: the task logs
    "PREFECT_LOGGING_EXTRA_LOGGERS": "lmcore",
    # ... and outside a flow run (the library used directly) they are simply not sent, without a warning
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # a local Dask cluster (orchestration.task_runner: dask) reports its start and stop at INFO: not news
    "DASK_LOGGING__DISTRIBUTED": "warning",
}
QUIET = {
    # The console handler, not the loggers: INFO task lines still go to the API handler.
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL": "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # a local Dask cluster (orchestration.task_runner: dask) reports its start and stop at INFO: not news
    "DASK_LOGGING__DISTRIBUTED": "warning",
}


def configure(quiet: bool = False, workdir: str | Path | None = None) -> Path:
    """Set the environment defaults; returns the Prefect home in use."""
    home = os.environ.get("PREFECT_HOME") or os.environ.get("LMCORE_PREFECT_HOME")
    if not home:
        home = str((Path(workdir or os.getcwd()) / ".prefect-home").resolve())
    os.environ["PREFECT_HOME"] = home
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    import logging

    if logging.getLogger("lmcore").level == logging.NOTSET:
        logging.getLogger("lmcore").setLevel(logging.INFO)  # INFO reaches the API and the log file
    if quiet:
        import warnings

        for name, value in QUIET.items():
            os.environ.setdefault(name, value)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\.|$)")
    return Path(home)
