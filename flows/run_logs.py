"""Where a command's logs go: one line per problem on the console, everything in a log file.

Why: a failing stage used to print two Prefect tracebacks (about 100 lines) before the one useful
line. The console now shows lmcore's own lines (and warnings); every record, tracebacks included,
goes to ``$PREFECT_HOME/logs/lmcore-<time>-<pid>.log``, whose path the error line names.
``lmcore --debug ...`` prints tracebacks on the console as well.

* :func:`start_log_file` attaches the file handler to the root logger (Prefect's and lmcore's
  loggers propagate there) and returns the path.
* :func:`quiet_console` keeps Prefect's console handler from printing its own reports of a
  failed or crashed run (ERROR records of ``prefect.flow_runs`` / ``prefect.task_runs``, each with a
  traceback): the CLI reports the failure in one line.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import Optional

LOG_DIR = "logs"
KEEP_LOGS = 50
RUN_REPORTERS = ("prefect.flow_runs", "prefect.task_runs")

_log_file: Optional[Path] = None
_handler: Optional[logging.Handler] = None


def log_dir() -> Path:
    from flows.runtime import configure

    return configure() / LOG_DIR


def start_log_file() -> Path:
    """Send every log record of this process (DEBUG and up, with tracebacks) to a new file; once."""
    global _log_file, _handler
    if _log_file is not None:
        return _log_file
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"lmcore-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    _log_file, _handler = path, handler
    _prune(folder)
    return path


def current_log_file() -> Optional[Path]:
    return _log_file


def log_exception(exc: BaseException) -> Path:
    """Append ``exc``'s traceback to the log file (started if need be; not through logging, which would
    also print it on the console); returns its path."""
    path = start_log_file()
    if _handler is not None:
        _handler.flush()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR   lmcore.cli: the command failed\n")
        fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return path


class _NoRunReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(RUN_REPORTERS))


def quiet_console() -> None:
    """Drop Prefect's run-failure reports from its console handler (they stay in the file and the API)."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
                isinstance(f, _NoRunReports) for f in handler.filters):
            handler.addFilter(_NoRunReports())


def _prune(folder: Path) -> None:
    logs = sorted(folder.glob("lmcore-*.log"))
    for old in logs[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)
