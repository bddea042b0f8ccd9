"""Prefect task: parse one part of a data stage's input (``lmcore.data.parts.parse_part``), on any worker.

The validate and shard stages fan out into these before they reduce; the flow submits them through
the task runner ``orchestration.task_runner`` names (threads, processes or a Dask cluster). No cache
key: a finished part is found on disk (its ``.json`` beside the ``.arrow``) and not parsed again.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks._common import lazy


@task(name="parse-part", persist_result=False, cache_policy=None,
      task_run_name="parse-{stage}-part-{index}")
def parse_part_task(parts_dir: str, index: int, stage: str) -> dict[str, Any]:
    return lazy("lmcore.data.parts", "parse_part")(parts_dir, index)
