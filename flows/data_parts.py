"""The fan-out half of the validate and shard stages: parse the input in parts on the task runner.

The flow plans the parts (``lmcore.data.parts``), writes the plan into the store, submits one
``parse-part`` task per part through :class:`~flows.task_runners.LazyTaskRunner` and waits; the
stage task then reduces the parts (``run_validate`` / ``run_shard`` with ``parts_dir``) exactly as if
it had parsed the lines itself. The parts folder is held under a lock while the run uses it.

Durability: a part is written atomically and a finished one is not parsed again, so a run that is
killed while parsing keeps what its workers finished; the rerun plans the same parts and parses
only the rest. A stage that fails (bad data) or finishes removes the folder.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from lmcore.config import DataConfig
from lmcore.data.parts import (PLAN_FILE, parse_settings, part_done, plan_parts, read_plan, write_plan)
from lmcore.data.verdicts import stage_inputs
from lmcore.locks import FileLock
from lmcore.store import LOCK_SUFFIX, Store


@contextmanager
def parsed_parts(stage: str, store_stage: str, key: str, files: list[str], eval_files: list[str],
                 config: dict[str, Any], store: str, runner: Any,
                 progress: Optional[Callable[[int, int], None]] = None) -> Iterator[Path]:
    """Parse the stage's input in parts (resuming finished ones); yields the parts folder for the reduce."""
    from tasks.parse_part import parse_part_task

    data_cfg = DataConfig(**{**config["data"], "training_data_path": files, "eval_data_path": eval_files})
    parts = plan_parts(stage_inputs(files, data_cfg), config["orchestration"]["part_bytes"])
    settings = parse_settings(data_cfg)
    parts_dir = Store(store).parts_path(store_stage, key)
    parts_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(Path(f"{parts_dir}{LOCK_SUFFIX}"))
    lock.acquire()
    try:
        if not _same_plan(parts_dir, parts, settings):
            shutil.rmtree(parts_dir, ignore_errors=True)
            write_plan(parts_dir, parts, settings)
        todo = [p for p in parts if part_done(parts_dir, p) is None]
        total = sum(p.byte_count() for p in parts)
        done = total - sum(p.byte_count() for p in todo)

        def parsed(i: int) -> None:
            nonlocal done
            done += todo[i].byte_count()
            if progress is not None:
                progress(done, total)

        calls = [{"parts_dir": str(parts_dir), "index": p.index, "stage": stage} for p in todo]
        for future in runner.submit_all(parse_part_task, calls, after_each=parsed):
            future.result()  # the first failed part raises its own error (a worker without the store, ...)
        yield parts_dir
    except Exception:
        shutil.rmtree(parts_dir, ignore_errors=True)  # a failed stage: nothing worth resuming
        raise
    else:
        shutil.rmtree(parts_dir, ignore_errors=True)  # the stage reduced and published them
    finally:
        lock.remove()


def _same_plan(parts_dir: Path, parts: list, settings: dict[str, Any]) -> bool:
    if not (parts_dir / PLAN_FILE).is_file():
        return False
    try:
        planned, planned_settings = read_plan(parts_dir)
    except (OSError, ValueError, TypeError, json.JSONDecodeError):
        return False
    return planned == parts and planned_settings == settings

