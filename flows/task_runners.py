"""The Prefect task runner ``orchestration.task_runner`` names, started only when a stage needs it.

Why not the flow's own ``task_runner=``: a flow's runner is fixed when it is decorated, but the
choice is per config (and per deployment run). The data stages submit their fan-out tasks (parsed
parts, pretokenized shards) through :class:`LazyTaskRunner`, which starts the runner on first use:
a fully cached run never starts a process pool or a Dask cluster.

* ``threads``: Prefect's ``ThreadPoolTaskRunner`` (``max_workers`` threads, default one per core).
  The data stages parse their input in their own task then: threads share one interpreter, so
  parsing in parts would only add the reduce's cost.
* ``processes``: Prefect's ``ProcessPoolTaskRunner``: real parallelism on one machine.
* ``dask``: ``prefect_dask.DaskTaskRunner`` (extra ``dask``): the cluster at ``dask_address``, or a
  local cluster of ``max_workers`` (default 2) single-threaded worker processes.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any, Callable, Optional

from lmcore.errors import ConfigError

LOCAL_DASK_WORKERS = 2
PARALLEL_RUNNERS = ("processes", "dask")  # the runners on which the data stages parse in parts


def make_task_runner(orchestration: Any):
    """A (not yet started) Prefect task runner for an ``orchestration`` config section."""
    kind = orchestration.task_runner
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        # one thread per core: Prefect's default is unbounded, and every pretokenize task holding a
        # shard at once made memory grow with the corpus (measured: 652 MB at 50 MB, 857 MB at 200 MB)
        return ThreadPoolTaskRunner(max_workers=orchestration.max_workers or os.cpu_count() or 1)
    if kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=orchestration.max_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("orchestration.task_runner dask needs prefect-dask: pip install -e '.[dask]'",
                          key="orchestration.task_runner") from None
    if orchestration.dask_address:
        return DaskTaskRunner(address=orchestration.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": orchestration.max_workers or LOCAL_DASK_WORKERS,
                                          "threads_per_worker": 1, "processes": True, "dashboard_address": None})


class LazyTaskRunner:
    """Use as a context manager around a run; :meth:`submit` starts the runner the first time."""

    def __init__(self, orchestration: Any):
        self.orchestration = orchestration
        self._stack = ExitStack()
        self._runner: Optional[Any] = None

    def __enter__(self) -> "LazyTaskRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def submit(self, task: Any, **parameters: Any):
        if self._runner is None:
            self._runner = self._stack.enter_context(make_task_runner(self.orchestration))
        return self._runner.submit(task, parameters=parameters)

    def submit_all(self, task: Any, calls: list[dict[str, Any]],
                   after_each: Optional[Callable[[int], None]] = None) -> list[Any]:
        """Submit ``task`` once per parameter dict, wait for all of them in order (``after_each(i)`` when
        call ``i`` has finished) and return the finished futures: a failure surfaces at ``result()``, after
        every call has ended (no half-cancelled work)."""
        futures = [self.submit(task, **params) for params in calls]
        for i, future in enumerate(futures):
            future.wait()
            if after_each is not None:
                after_each(i)
        return futures
