"""An MLflow run opened only when a stage actually computes something.

Why: a fully cached ``lmcore run`` recomputes nothing, and opening an MLflow
run for it would cost seconds (importing mlflow pulls pandas and scipy) and
leave an empty duplicate run per rerun. So the pipeline logs through this
wrapper: calls are buffered until :meth:`open` (a stage ran, or is about to
run), then replayed in order into a real ``lmcore.tracking`` run, and sent
directly afterwards. If nothing ran, no run is created and ``run_id`` stays None.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Optional


class DeferredRun:
    """Use as a context manager; ``open()`` before anything that needs ``run_id``."""

    def __init__(self, cfg: Any, flow_run_id: Optional[str]):
        self.cfg = cfg
        self.flow_run_id = flow_run_id
        self._stack = ExitStack()
        self._buffer: list[tuple[str, tuple, dict]] = []
        self._run: Any = None

    def __enter__(self) -> "DeferredRun":
        return self

    def __exit__(self, *exc: Any) -> Optional[bool]:
        return self._stack.__exit__(*exc)

    @property
    def opened(self) -> bool:
        return self._run is not None

    @property
    def run_id(self) -> Optional[str]:
        return getattr(self._run, "run_id", None)

    def open(self) -> Optional[str]:
        """Create the MLflow run (once) and replay what was logged so far; returns its id (None if disabled)."""
        if self._run is None:
            if not self.cfg.tracking.enabled:
                return None
            from lmcore.tracking.run import PipelineTracker

            self._run = self._stack.enter_context(PipelineTracker(self.cfg).run(self.flow_run_id))
            for name, args, kwargs in self._buffer:
                getattr(self._run, name)(*args, **kwargs)
            self._buffer.clear()
        return self.run_id

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._run is None:
                self._buffer.append((name, args, kwargs))
                return None
            return getattr(self._run, name)(*args, **kwargs)

        return call
