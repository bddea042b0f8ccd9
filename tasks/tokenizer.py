"""Prefect task: train the byte-level BPE tokenizer on the text shards.

Key: the shards key + the ``tokenizer`` section + the vocabulary size + the
data settings that pick the training sample + ``lmcore.data.tokenizer.STAGE_VERSION``.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from lmcore.store import stage_key
from tasks._common import TASK_OPTIONS, build, lazy, cache_key_fn, stage_version

STAGE = "tokenizer"
MODULE = "lmcore.data.tokenizer"


def key_config(p: dict[str, Any]) -> dict[str, Any]:
    data = p["config"]["data"]
    return {"tokenizer": p["config"]["tokenizer"], "vocab_size": p["vocab_size"],
            "data": {k: data[k] for k in ("tokenizer_train_size", "seed", "use_conversation_format")}}


def key(p: dict[str, Any]) -> str:
    return stage_key(STAGE, {"shards": p["shards"]["key"]}, key_config(p), stage_version(MODULE))


def figure(summary: dict[str, Any]) -> str:
    vocab = summary.get("vocab_size")
    return f"vocab {vocab:,}" if isinstance(vocab, int) else ""


@task(name="train_tokenizer", cache_key_fn=cache_key_fn(key, STAGE), **TASK_OPTIONS)
def tokenizer_task(shards: dict[str, Any], vocab_size: int, config: dict[str, Any], store: str,
                   refresh: bool = False, verify: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from lmcore.config import DataConfig, TokenizerConfig
    run_train_tokenizer = lazy("lmcore.data.tokenizer", "run_train_tokenizer")

    params = {"shards": shards, "vocab_size": vocab_size, "config": config}
    tok_cfg, data_cfg = TokenizerConfig(**config["tokenizer"]), DataConfig(**config["data"])
    return build(STAGE, store, key(params),
                 lambda out: run_train_tokenizer(Path(shards["dir"]), tok_cfg, data_cfg, vocab_size, out),
                 inputs={"shards": shards["key"]}, config=key_config(params), code_version=stage_version(MODULE),
                 refresh=refresh, verify=verify, figure=figure)
