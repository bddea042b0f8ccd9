"""Prefect task: evaluate the final checkpoint on the eval split (metrics.json).

Key: the train key + the token shard keys + the evaluation settings +
``lmcore.evaluate.STAGE_VERSION``.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from lmcore.store import stage_key
from tasks._common import TASK_OPTIONS, build, lazy, cache_key_fn, stage_version

STAGE = "eval"
MODULE = "lmcore.evaluate"
FINAL = "final"


def inputs(p: dict[str, Any]) -> dict[str, Any]:
    return {"train": p["train"]["key"], "tokens": [t["key"] for t in p["tokens"]],
            "tokenizer": p["tokenizer"]["key"]}


def key_config(p: dict[str, Any]) -> dict[str, Any]:
    training = p["config"]["training"]
    return {"training": {k: training[k] for k in ("eval_batches", "batch_size", "seed", "sample_prompts",
                                                  "sample_max_new_tokens")},
            "precision": p["config"]["precision"]}


def key(p: dict[str, Any]) -> str:
    return stage_key(STAGE, inputs(p), key_config(p), stage_version(MODULE))


def figure(summary: dict[str, Any]) -> str:
    loss, ppl, bpb = summary.get("eval_loss"), summary.get("perplexity"), summary.get("bits_per_byte")
    parts = [f"eval loss {loss:.3f}" if isinstance(loss, (int, float)) else "",
             f"ppl {ppl:,.1f}" if isinstance(ppl, (int, float)) else "",
             f"{bpb:.3f} bits/byte" if isinstance(bpb, (int, float)) else ""]
    return ", ".join(p for p in parts if p)


@task(name="evaluate", cache_key_fn=cache_key_fn(key, STAGE), **TASK_OPTIONS)
def evaluate_task(train: dict[str, Any], tokens: list[dict[str, Any]], tokenizer: dict[str, Any],
                  config: dict[str, Any], store: str, refresh: bool = False, verify: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from lmcore.config import PipelineConfig
    from tasks.hooks import progress_for

    run_evaluate = lazy("lmcore.evaluate", "run_evaluate")

    params = {"train": train, "tokens": tokens, "tokenizer": tokenizer, "config": config}
    cfg = PipelineConfig(**config)
    return build(STAGE, store, key(params),
                 lambda out: run_evaluate(Path(train["dir"]) / FINAL, [Path(t["dir"]) for t in tokens],
                                          Path(tokenizer["dir"]), cfg, out, progress=progress_for("evaluate")),
                 inputs=inputs(params), config=key_config(params), code_version=stage_version(MODULE),
                 refresh=refresh, verify=verify, figure=figure)
