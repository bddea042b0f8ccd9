"""A bounded metric buffer that sends in batches from a background thread.

Why: training must never wait on, or die of, a tracking server. Logging one
metric per HTTP call costs about 50 ms here, and a server that is down makes
MLflow's client retry for minutes. So the training loop only appends to an
in-memory list; a daemon thread sends what has piled up every
``flush_every`` seconds (or as soon as a full batch is ready) with one
``send(batch)`` call per batch of at most 1000 metrics (MLflow's
``log_batch`` limit). When a send fails the metrics stay queued and the
thread retries with exponential backoff; one warning says so (not one per
step), and one info line says when sending works again. The queue is bounded:
beyond ``max_pending`` the oldest metrics are dropped and counted. ``close``
gives the queue a last chance within a time limit and warns with the number
of metrics it could not send.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

log = logging.getLogger("lmcore.tracking")

MAX_METRICS_PER_BATCH = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH


@dataclass(frozen=True)
class PendingMetric:
    """One value waiting to be sent; ``timestamp`` in milliseconds since the epoch."""

    key: str
    value: float
    step: int
    timestamp: int


class MetricBuffer:
    """Queue metrics with :meth:`add`; a background thread sends them with ``send(batch)``.

    ``send`` raises on failure (any exception); the batch then stays queued.
    ``background=False`` sends only when :meth:`flush` is called (for callers
    that want no thread).
    """

    def __init__(self, send: Callable[[Sequence[PendingMetric]], None], *, flush_every: float = 5.0,
                 max_pending: int = 100_000, batch_size: int = MAX_METRICS_PER_BATCH,
                 backoff_start: float = 1.0, backoff_max: float = 60.0, background: bool = True,
                 name: str = "metrics"):
        self._send = send
        self.flush_every = flush_every
        self.max_pending = max_pending
        self.batch_size = min(batch_size, MAX_METRICS_PER_BATCH)
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.name = name
        self._pending: list[PendingMetric] = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._retry_at = 0.0
        self._backoff = backoff_start
        self._failing = False
        self._warned_drop = False
        self.sent = 0
        self.batches_sent = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name=f"lmcore-{name}-sender", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ producer side
    def add(self, key: str, value: float, step: int, timestamp: int | None = None) -> None:
        """Queue one metric; never blocks on the network."""
        ts = int(time.time() * 1000) if timestamp is None else timestamp
        with self._lock:
            self._pending.append(PendingMetric(key, float(value), int(step), ts))
            overflow = len(self._pending) - self.max_pending
            if overflow > 0:
                del self._pending[:overflow]
                self.dropped += overflow
            full = len(self._pending) >= self.batch_size
        if overflow > 0 and not self._warned_drop:
            self._warned_drop = True
            log.warning("tracking: more than %d %s waiting to be sent; dropping the oldest",
                        self.max_pending, self.name)
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # ------------------------------------------------------------------ sending
    def flush(self, timeout: float | None = None, force: bool = True) -> int:
        """Send what is queued now, retrying with backoff until ``timeout`` seconds pass.

        Returns how many metrics are still unsent. ``timeout=None`` makes one
        attempt per batch. ``force`` ignores the backoff schedule for the first try.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if force:
            self._retry_at = 0.0
        while True:
            ok = self._send_pending()
            left = self.pending
            if ok and left == 0:
                return 0
            if deadline is None:
                return left
            now = time.monotonic()
            if now >= deadline:
                return left
            wait = max(0.05, min(self._retry_at - now, deadline - now))
            time.sleep(wait)

    def close(self, timeout: float = 60.0) -> int:
        """Stop the thread, try to send the rest within ``timeout`` s; warn and return what is left."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, timeout))
            self._thread = None
        left = self.flush(timeout=timeout, force=True)
        if left or self.dropped:
            log.warning("tracking: %d %s could not be sent and %d were dropped (last error: %s)",
                        left, self.name, self.dropped, self.last_error)
        return left + self.dropped

    def _send_pending(self) -> bool:
        """Send queued metrics batch by batch; False (and backoff scheduled) if a send failed."""
        with self._send_lock:
            while True:
                if time.monotonic() < self._retry_at:
                    return False
                with self._lock:
                    batch = self._pending[: self.batch_size]
                if not batch:
                    return True
                try:
                    self._send(batch)
                except Exception as exc:  # noqa: BLE001 - any failure of the server: keep the data
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    self._retry_at = time.monotonic() + self._backoff
                    if not self._failing:
                        log.warning("tracking: sending %s failed (%s); keeping them in memory "
                                    "(up to %d) and retrying with backoff", self.name, self.last_error,
                                    self.max_pending)
                    self._failing = True
                    self._backoff = min(self._backoff * 2, self.backoff_max)
                    return False
                with self._lock:
                    # add() only appends or trims the head, so remove the sent ones by identity
                    sent_ids = {id(m) for m in batch}
                    self._pending = [m for m in self._pending if id(m) not in sent_ids]
                self.sent += len(batch)
                self.batches_sent += 1
                if self._failing:
                    log.info("tracking: sending %s works again", self.name)
                self._failing = False
                self._backoff = self.backoff_start

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_every)
            self._wake.clear()
            if self._closed.is_set():
                return
            self._send_pending()
