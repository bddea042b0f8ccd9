"""Which Prefect API an ``lmcore`` command talks to, and the servers lmcore starts for it.

In order of preference:

1. ``PREFECT_API_URL`` set by the user: that server, untouched.
2. A server started by ``lmcore server start`` under the same ``PREFECT_HOME`` (its URL and pid
   are in ``$PREFECT_HOME/lmcore-server.json``) that answers its health check: no start-up cost,
   which is most of a cached rerun's time.
3. Otherwise a temporary server for this command alone (``flows.api_server --temporary``), in its
   own session, so that a Ctrl-C in the terminal stops the run but not the server the run reports
   to, and tied to this process, so that it never outlives it (``kill -9`` included). Its start is
   serialised under a lock in ``PREFECT_HOME``: two first runs at once must not both create the
   database.

The choice is made before Prefect is imported (Prefect reads ``PREFECT_API_URL`` when it loads),
and the temporary server boots while the command imports its own modules; :meth:`PrefectApi.ready`
waits for it.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from lmcore.errors import LmcoreError
from lmcore.locks import FileLock

SERVER_FILE = "lmcore-server.json"
LOG_FILE = "lmcore-api-server.log"
START_LOCK = ".lmcore-api-start.lock"
STARTUP_TIMEOUT = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
ROOT = Path(__file__).resolve().parent.parent


def prefect_home() -> Path:
    from flows.runtime import configure

    return configure()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True when ``GET <api_url>/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def recorded_server(home: Path) -> Optional[dict]:
    """The ``lmcore server`` recorded under ``home`` if it is up: ``{url, pid, port, started}``."""
    try:
        info = json.loads((home / SERVER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if healthy(info.get("url", "")) else None


def launch(home: Path, port: int, temporary: bool, exit_with: Optional[int]) -> subprocess.Popen:
    """Start ``flows.api_server`` in its own session; its output goes to ``$PREFECT_HOME/lmcore-api-server.log``."""
    cmd = [sys.executable, "-m", "flows.api_server", "--port", str(port)]
    if temporary:
        cmd.append("--temporary")
    if exit_with:
        cmd += ["--exit-with", str(exit_with)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("PREFECT_API_URL", None)
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / LOG_FILE, "ab")
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True)
    finally:
        log.close()


def wait_healthy(api_url: str, proc: subprocess.Popen, home: Path, timeout: float = STARTUP_TIMEOUT) -> None:
    """Block until the server answers; a server that exits or never answers is an error with its log."""
    deadline = time.monotonic() + timeout
    while not healthy(api_url, timeout=1.0):
        if proc.poll() is not None:
            raise LmcoreError(f"the Prefect API server exited with code {proc.returncode} while starting; "
                              f"see {home / LOG_FILE}:\n{_tail(home / LOG_FILE)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise LmcoreError(f"the Prefect API server did not answer within {timeout:.0f} s "
                              f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); see {home / LOG_FILE}")
        time.sleep(0.1)


def stop_process(proc_or_pid: "subprocess.Popen | int", timeout: float = 10.0) -> None:
    """SIGTERM (graceful shutdown), then SIGKILL after ``timeout`` seconds."""
    pid = proc_or_pid if isinstance(proc_or_pid, int) else proc_or_pid.pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(proc_or_pid, subprocess.Popen):
            if proc_or_pid.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if isinstance(proc_or_pid, subprocess.Popen):
        proc_or_pid.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours still "exists": ask the kernel whether it has exited
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class PrefectApi:
    """Picks the API for this command (see the module doc); ``with PrefectApi(status) as api: ... api.ready()``.

    ``status(message)`` receives one line when the choice is made and one when a temporary server
    is ready, so a user never stares at a silent terminal.
    """

    def __init__(self, status: Callable[[str], None] = lambda message: None):
        self.status = status
        self.home = prefect_home()
        self.source = ""
        self.url = ""
        self.proc: Optional[subprocess.Popen] = None
        self._lock: Optional[FileLock] = None
        self._started = 0.0

    def __enter__(self) -> "PrefectApi":
        if "prefect" in sys.modules:  # loaded already (a caller in the same process): its settings are fixed
            self.source = "already loaded"
            return self
        if os.environ.get("PREFECT_API_URL"):
            self.source, self.url = "PREFECT_API_URL", os.environ["PREFECT_API_URL"]
            self.status(f"Prefect API {self.url} (PREFECT_API_URL)")
            return self
        server = recorded_server(self.home)
        if server is not None:
            self.source, self.url = "lmcore server", server["url"]
            os.environ["PREFECT_API_URL"] = self.url
            self.status(f"Prefect API {self.url} (lmcore server)")
            return self
        self._lock = FileLock(self.home / START_LOCK)
        self._lock.acquire()
        self._started = time.perf_counter()
        port = free_port()
        self.source, self.url = "temporary", f"http://127.0.0.1:{port}/api"
        self.proc = launch(self.home, port, temporary=True, exit_with=os.getpid())
        # Stopped at interpreter exit, not when the block ends: Prefect's log and event workers drain
        # to the server from their own exit hooks, which run before ``atexit``'s.
        atexit.register(self.stop)
        os.environ["PREFECT_API_URL"] = self.url
        self.status("starting a temporary Prefect API (`lmcore server start` keeps one running) ...")
        return self

    def ready(self) -> None:
        """Wait for a temporary server to answer (a no-op for the others)."""
        if self.proc is None or self._lock is None:
            return
        try:
            wait_healthy(self.url, self.proc, self.home)
        finally:
            self._lock.release()
            self._lock = None
        self.status(f"Prefect API ready in {time.perf_counter() - self._started:.1f} s")

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def stop(self) -> None:
        """Stop a temporary server (also run at exit; a kill ends it through ``--exit-with``)."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
