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


def inputs(p: dict[str, Any]) -> dict[str, Any]:
    """The shards it trains on, or (fine-tuning) the identity of the base model's tokenizer files."""
    base = p.get("base")
    return {"base_tokenizer": base["tokenizer_sha256"]} if base else {"shards": p["shards"]["key"]}


def key_config(p: dict[str, Any]) -> dict[str, Any]:
    if p.get("base"):
        return {"chat_template": p["config"]["tokenizer"]["chat_template"], "vocab_size": p["vocab_size"]}
    data = p["config"]["data"]
    return {"tokenizer": p["config"]["tokenizer"], "vocab_size": p["vocab_size"],
            "data": {k: data[k] for k in ("tokenizer_train_size", "seed", "use_conversation_format")}}


def key(p: dict[str, Any]) -> str:
    return stage_key(STAGE, inputs(p), key_config(p), stage_version(MODULE))


def figure(summary: dict[str, Any]) -> str:
    vocab = summary.get("vocab_size")
    if not isinstance(vocab, int):
        return ""
    return f"vocab {vocab:,}" + (" (the base model's)" if summary.get("source") else "")


@task(name="train_tokenizer", cache_key_fn=cache_key_fn(key, STAGE), **TASK_OPTIONS)
def tokenizer_task(shards: dict[str, Any], vocab_size: int, config: dict[str, Any], store: str,
                   base: dict[str, Any] | None = None, refresh: bool = False, verify: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from lmcore.config import DataConfig, TokenizerConfig

    params = {"shards": shards, "vocab_size": vocab_size, "config": config, "base": base}
    tok_cfg, data_cfg = TokenizerConfig(**config["tokenizer"]), DataConfig(**config["data"])
    if base:  # fine-tuning: the base model's tokenizer, trained on nothing
        run = lazy("lmcore.data.tokenizer", "run_copy_tokenizer")
        compute = lambda out: run(Path(base["dir"]), tok_cfg, vocab_size, out)  # noqa: E731
    else:
        run = lazy("lmcore.data.tokenizer", "run_train_tokenizer")
        compute = lambda out: run(Path(shards["dir"]), tok_cfg, data_cfg, vocab_size, out)  # noqa: E731
    return build(STAGE, store, key(params), compute, inputs=inputs(params), config=key_config(params),
                 code_version=stage_version(MODULE), refresh=refresh, verify=verify, figure=figure)
