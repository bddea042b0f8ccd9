"""What every stage task shares: the Prefect cache key = the store key, and the store call.

Why one helper: each ``tasks/<stage>.py`` stays a screenful (its key
ingredients, the call into lmcore, the log line), while the rules live here
once:

* the Prefect cache key is ``<stage>-<store key>-<store root hash>``; the store
  key is computed from the task's parameters exactly as the body computes it,
  so the Prefect cache and the store always agree;
* the body first looks in the store and returns the existing manifest without
  recomputing ("cached (store)"), so wiping Prefect's database and result
  storage loses no finished work; ``refresh=True`` (``--refresh``) bypasses it;
* persisted results are small dicts (dir, key, inputs, summary, seconds),
  serialised as JSON, never tensors.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Callable

from prefect import get_run_logger
from prefect.serializers import JSONSerializer

from lmcore.store import Store, file_fingerprint

TASK_OPTIONS: dict[str, Any] = dict(persist_result=True, result_serializer=JSONSerializer(),
                                    cache_result_in_memory=False)


_VERSION_LINE = re.compile(r"^STAGE_VERSION\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)


@functools.lru_cache(maxsize=None)
def stage_version(module: str) -> str:
    """The ``STAGE_VERSION`` constant of an lmcore stage module (bump it when output changes).

    Read from the module's source, not by importing it: a cache key must be cheap, and
    importing ``lmcore.train.stage`` (torch) only to learn "1" costs seconds on a cached rerun.
    """
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        found = _VERSION_LINE.search(Path(spec.origin).read_text(encoding="utf-8"))
        if found:
            return found.group(1)
    return str(getattr(importlib.import_module(module), "STAGE_VERSION", "0"))


@functools.lru_cache(maxsize=1024)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    return file_fingerprint(path)


def fingerprint(path: str) -> str:
    """Content key of a raw file (memoised per size+mtime inside one process only)."""
    st = os.stat(path)
    return _fingerprint(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported when first called: a store hit never pays for torch's import,
    and the stage's measured time includes what its lmcore function needs to load."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def cache_key_fn(key_of: Callable[[dict[str, Any]], str], stage: str):
    """A Prefect ``cache_key_fn`` that returns the store key of ``stage`` for these parameters."""

    def cache_key(_context: Any, parameters: dict[str, Any]) -> str:
        root = hashlib.blake2b(str(Path(parameters["store"]).resolve()).encode(), digest_size=4).hexdigest()
        return f"{stage}-{key_of(parameters)}-{root}"

    return cache_key


def build(stage: str, store: str, key: str, fn: Callable[[Path], dict[str, Any]], *, inputs: Any,
          config: Any, code_version: str, refresh: bool, figure: Callable[[dict], str] = str,
          resumable: bool = False, verify: bool = False) -> dict[str, Any]:
    """Store lookup or computation, the log line, and the small manifest the task returns.

    ``resumable`` keeps the stage's work directory across failures (training); ``verify`` checks
    the sha256 of every file of a stored output before reusing it (else size and mtime).
    """
    logger = get_run_logger()
    output, computed = Store(store).build(stage, key, fn, inputs=inputs, config=config,
                                          code_version=code_version, refresh=refresh, resumable=resumable,
                                          deep_verify=verify, on_wait=logger.warning)
    manifest = output.manifest
    verdict = "ran" if computed else "cached (store)"
    logger.info("%s %s %s in %.2fs: %s", stage, key, verdict, manifest.get("seconds", 0.0),
                figure(manifest.get("summary", {})))
    return {"stage": stage, "key": key, "dir": str(output.dir), "inputs": manifest.get("inputs", {}),
            "summary": manifest.get("summary", {}), "seconds": manifest.get("seconds", 0.0) if computed else 0.0,
            "store_hit": not computed}
