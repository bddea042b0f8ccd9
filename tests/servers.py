"""Real servers for tests and scripts: a free port, an ``mlflow server``, polling, stopping.

One copy of the start/poll/stop logic that the tracking tests, the deployment end-to-end
test and ``scripts/screenshot_mlflow.py`` all need. Servers run in their own process
group (``start_new_session``) so that stopping one also stops the workers it forked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout: float, procs: Sequence[subprocess.Popen] = (),
             logs: Sequence[Path] = ()):
    """Poll ``check()`` until it returns something truthy; fail early if a process in ``procs`` dies.

    Connection errors (``OSError``) count as "not yet". The failure message carries the tail of
    each log, which is what one needs to see why a server never came up.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        for proc, log in zip(procs, logs):
            if proc.poll() is not None:
                raise AssertionError(f"{what}: process exited early:\n{Path(log).read_text()[-3000:]}")
        time.sleep(0.3)
    tails = "\n---\n".join(Path(log).read_text()[-3000:] for log in logs)
    raise AssertionError(f"timed out waiting for {what}:\n{tails}")


def healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def start_mlflow_server(port: int, db: Path, log: Path, artifact_args: Sequence[str] = (), timeout: float = 120,
                        cwd: Optional[Path] = None) -> subprocess.Popen:
    """``mlflow server`` on ``127.0.0.1:port`` over the SQLite ``db``, returned once /health answers.

    ``artifact_args``: e.g. ``["--artifacts-destination", dir]`` (proxied uploads) or
    ``["--default-artifact-root", uri]`` (serve what local runs already wrote).
    """
    cmd = [str(BIN / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{db}", *artifact_args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        wait_for("mlflow server health", lambda: healthy(f"http://127.0.0.1:{port}/health"), timeout, [proc], [log])
    except AssertionError:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the process group, SIGKILL it if it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
