"""Stopping a training run on request: finish the step, write a checkpoint, say how to resume.

Why: Ctrl-C, a scheduler's SIGTERM (Prefect cancellation, Slurm or Kubernetes preemption) and a
spot instance's notice are ordinary events in a run that lasts hours. The run must end within a
step and a checkpoint write, keep everything, and never hang.

* :func:`stop_on_signals` (used by the training loop) installs SIGINT/SIGTERM handlers for the
  loop's lifetime when it runs in the main thread. The first signal only records the request
  (:func:`stop_requested`); the loop finishes its update, writes a checkpoint and raises
  :class:`~lmcore.errors.TrainingInterrupted` (exit code 130 for SIGINT, 143 for SIGTERM).
  A second signal ends the process at once (``os._exit``): the last complete checkpoint is
  already on disk, and checkpoints are written atomically.
* Code that cannot install handlers (another thread, a parent process relaying to torchrun
  children) calls :func:`request_stop` itself; under torchrun the main process tells the ranks
  with a stop file in the run directory (:data:`STOP_FILE`), and the ranks agree on the step to
  stop at through the all-reduce every update already makes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional

STOP_FILE = ".stop-requested"
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: Optional[int] = None


def request_stop(signum: int = signal.SIGINT) -> None:
    """Ask the running training loop to stop after its current update."""
    global _requested
    if _requested is None:
        _requested = int(signum)


def stop_requested() -> Optional[int]:
    """The signal number of a pending stop request, or None."""
    return _requested


def clear() -> None:
    global _requested
    _requested = None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _handler(on_request: Optional[Callable[[int], None]], on_hard_exit: Optional[Callable[[], None]]):
    def handle(signum: int, _frame) -> None:
        if _requested is not None:
            sys.stderr.write(f"\nlmcore: second {signal_name(signum)}: exiting now; the last checkpoint is kept\n")
            sys.stderr.flush()
            if on_hard_exit is not None:
                on_hard_exit()
            os._exit(128 + signum)
        request_stop(signum)
        sys.stderr.write(f"\nlmcore: {signal_name(signum)} received: finishing this step and writing a checkpoint "
                         f"(send it again to exit at once)\n")
        sys.stderr.flush()
        if on_request is not None:
            on_request(signum)

    return handle


@contextlib.contextmanager
def stop_on_signals(on_request: Optional[Callable[[int], None]] = None,
                    on_hard_exit: Optional[Callable[[], None]] = None) -> Iterator[None]:
    """Graceful-stop handlers for SIGINT and SIGTERM while the block runs (main thread only;
    elsewhere the block runs unchanged and relies on :func:`request_stop`). The previous handlers
    come back afterwards. ``on_request(signum)`` also runs on the first signal (a relaying parent
    writes the stop file), ``on_hard_exit()`` before the second one ends the process."""
    clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    handler = _handler(on_request, on_hard_exit)
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        clear()


def stop_file_requested(stop_file: Optional[Path]) -> Optional[int]:
    """The signal number written into ``stop_file`` by a relaying parent, or None when absent."""
    if stop_file is None:
        return None
    try:
        text = Path(stop_file).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else int(signal.SIGTERM)
