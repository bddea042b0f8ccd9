"""Prefect task: pre-tokenise ONE Parquet shard (the flow maps it over all shards).

Key: the shards key + the shard's file name + the tokenizer key + the
``tokenizer`` section and chat switch + ``lmcore.data.pretokenize.STAGE_VERSION``.
One store directory per shard, so a new shard only tokenises itself.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from lmcore.store import stage_key
from tasks._common import TASK_OPTIONS, build, lazy, cache_key_fn, stage_version

STAGE = "tokens"
MODULE = "lmcore.data.pretokenize"


def inputs(p: dict[str, Any]) -> dict[str, Any]:
    return {"shards": p["shards"]["key"], "file": p["shard_file"], "tokenizer": p["tokenizer"]["key"]}


def key_config(p: dict[str, Any]) -> dict[str, Any]:
    return {"tokenizer": p["config"]["tokenizer"],
            "use_conversation_format": p["config"]["data"]["use_conversation_format"]}


def key(p: dict[str, Any]) -> str:
    return stage_key(STAGE, inputs(p), key_config(p), stage_version(MODULE))


def figure(summary: dict[str, Any]) -> str:
    tokens = summary.get("tokens")
    return f"{tokens:,} tokens" if isinstance(tokens, int) else ""


@task(name="pretokenize", cache_key_fn=cache_key_fn(key, STAGE), **TASK_OPTIONS)
def pretokenize_task(shard_file: str, shards: dict[str, Any], tokenizer: dict[str, Any], config: dict[str, Any],
                     store: str, refresh: bool = False, verify: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from lmcore.config import PipelineConfig
    run_pretokenize_shard = lazy("lmcore.data.pretokenize", "run_pretokenize_shard")

    params = {"shard_file": shard_file, "shards": shards, "tokenizer": tokenizer, "config": config}
    cfg = PipelineConfig(**config)
    return build(STAGE, store, key(params),
                 lambda out: run_pretokenize_shard(Path(shards["dir"]) / shard_file, Path(tokenizer["dir"]),
                                                   cfg, out),
                 inputs=inputs(params), config=key_config(params), code_version=stage_version(MODULE),
                 refresh=refresh, verify=verify, figure=figure)
