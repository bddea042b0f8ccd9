"""Prefect task: write the valid records as Parquet text shards (train/eval split).

Key: the raw files' fingerprints + the validate key + the ``data`` section +
``lmcore.data.shard.STAGE_VERSION``.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from lmcore.store import stage_key
from tasks._common import TASK_OPTIONS, build, lazy, cache_key_fn, stage_version
from tasks.validate import data_key_config, raw_inputs

STAGE = "shards"
MODULE = "lmcore.data.shard"


def inputs(p: dict[str, Any]) -> dict[str, Any]:
    return {**raw_inputs(p["files"], p["eval_files"]), "validate": p["validate"]["key"]}


def key(p: dict[str, Any]) -> str:
    return stage_key(STAGE, inputs(p), data_key_config(p["config"]), stage_version(MODULE))


def figure(summary: dict[str, Any]) -> str:
    splits = summary.get("splits", {})
    train, evals = splits.get("train"), splits.get("eval")
    if isinstance(train, int) and isinstance(evals, int):
        return f"{train:,} train / {evals:,} eval records in {len(summary.get('files', [])) or '?'} shards"
    return ""


@task(name="shard", cache_key_fn=cache_key_fn(key, STAGE), **TASK_OPTIONS)
def shard_task(files: list[str], eval_files: list[str], validate: dict[str, Any], config: dict[str, Any],
               store: str, refresh: bool = False, verify: bool = False, parts_dir: str | None = None) -> dict[str, Any]:
    from lmcore.config import DataConfig
    from tasks.hooks import progress_for

    run_shard = lazy("lmcore.data.shard", "run_shard")

    params = {"files": files, "eval_files": eval_files, "validate": validate, "config": config}
    data_cfg = DataConfig(**{**config["data"], "training_data_path": files, "eval_data_path": eval_files})
    return build(STAGE, store, key(params),
                 lambda out: run_shard(files, data_cfg, out, progress=progress_for("shard"), parts_dir=parts_dir),
                 inputs=inputs(params), config=data_key_config(config), code_version=stage_version(MODULE),
                 refresh=refresh, verify=verify, figure=figure)
