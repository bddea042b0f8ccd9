"""Advisory OS file locks that say who holds them: how lmcore tells live work from abandoned work.

Why an OS lock rather than a pid file or an age: the kernel releases a ``flock`` the moment its
holder dies (``kill -9`` included), so "is anybody still writing this?" has a true answer at any
age, and two processes can never both believe they own the same work. A pid file can name a
recycled pid, and an age says nothing about a training run that has been going for a day.

A :class:`FileLock` is a small file beside the thing it guards (``<stage>/.work-<key>.lock`` for
a store entry in progress). The holder writes who it is into the file (pid, host, start time,
command line) so a process that has to wait can say whom it is waiting for. Readers never need
the lock to read that note.

Rules that keep it correct:

* A lock file may be removed only by a process that holds its lock (``lmcore store gc`` does),
  and :meth:`FileLock.acquire` re-checks after locking that the file it locked is still the one
  at the path, so a removal racing an acquisition never yields two holders.
* ``flock`` locks belong to an open file description: a second :class:`FileLock` on the same
  path in the same process conflicts like another process would.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

POLL_SECONDS = 0.2


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing); a context manager that waits for it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = True, on_wait: Optional[Callable[[dict[str, Any]], None]] = None,
                poll: float = POLL_SECONDS) -> bool:
        """Take the lock; False only when ``blocking`` is off and someone else holds it.

        While waiting, ``on_wait(holder)`` is called once with the holder's note (see
        :func:`holder`). Waiting polls, so Ctrl-C interrupts it at once.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this FileLock is already held")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not blocking:
                    return False
                if on_wait is not None and not told:
                    told = True
                    on_wait(holder(self.path) or {})
                time.sleep(poll)
                continue
            if _same_file(fd, self.path):
                self._fd = fd
                self._write_note()
                return True
            os.close(fd)  # the file was removed (gc) between our open and our lock: lock the new one

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def remove(self) -> None:
        """Delete the lock file while holding it, then release (see the module rules)."""
        if self._fd is None:
            raise RuntimeError(f"{self.path}: remove() needs the lock held")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.release()

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _write_note(self) -> None:
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                           "command": " ".join(sys.argv)[:500]}).encode("utf-8")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, note, 0)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def is_locked(path: str | Path) -> bool:
    """True while some process (this one included) holds the lock on ``path``; False if nobody
    does or the file does not exist."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists on this host (a zombie counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(path: str | Path) -> Optional[dict[str, Any]]:
    """The note the current (or last) holder wrote: ``{pid, host, started, command}``, or None."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def describe(note: Optional[dict[str, Any]]) -> str:
    """``pid 123 on host-a, started 14:02:11`` for messages; ``another process`` when unknown."""
    if not note:
        return "another process"
    started = time.strftime("%H:%M:%S", time.localtime(note["started"])) if note.get("started") else "?"
    return f"pid {note.get('pid', '?')} on {note.get('host', '?')}, started {started}"
