"""Prefect task: train the model on the token shards (checkpoints + final/).

Key: the token shard keys + the tokenizer key + the resolved architecture
(``ModelConfig``, after ``auto`` was resolved) + the ``training`` and
``precision`` sections (less the keys that cannot change the weights:
``NOT_IN_KEY``) + ``lmcore.train.stage.STAGE_VERSION``. The MLflow run id is
not part of the key: it only says where to log. Editing a sample prompt or the
log interval therefore reruns evaluate, not hours of training.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from lmcore.store import stage_key
from tasks._common import TASK_OPTIONS, build, lazy, cache_key_fn, stage_version

STAGE = "train"
MODULE = "lmcore.train.stage"


def inputs(p: dict[str, Any]) -> dict[str, Any]:
    found = {"tokens": [t["key"] for t in p["tokens"]], "tokenizer": p["tokenizer"]["key"]}
    if p.get("base"):  # fine-tuning: the base's weights are an input (a new champion reruns)
        found["base"] = p["base"]["sha256"]
    return found


# Training keys that only say what to print or what evaluate samples: same weights either way.
NOT_IN_KEY = ("log_every", "sample_prompts", "sample_max_new_tokens", "rdzv_endpoint")
# Keys added after the first release enter the key only when set, so existing keys stay the same.
IN_KEY_WHEN_SET = {"lora": None, "seq_length_warmup": None, "cpu_offload": False, "nnodes": 1,
                   "loss_chunk_rows": 1024}


def key_config(p: dict[str, Any]) -> dict[str, Any]:
    training = {k: v for k, v in p["config"]["training"].items()
                if k not in NOT_IN_KEY and not (k in IN_KEY_WHEN_SET and v == IN_KEY_WHEN_SET[k])}
    return {"model": p["model_config"], "training": training, "precision": p["config"]["precision"],
            "document_masking": p["config"]["model"]["document_masking"]}


def key(p: dict[str, Any]) -> str:
    return stage_key(STAGE, inputs(p), key_config(p), stage_version(MODULE))


def figure(summary: dict[str, Any]) -> str:
    parts = []
    if isinstance(summary.get("steps"), int):
        parts.append(f"{summary['steps']:,} steps" + (f" ({summary['stopped_by']})" if summary.get("stopped_by") else ""))
    if isinstance(summary.get("final_loss"), (int, float)):
        parts.append(f"loss {summary['final_loss']:.3f}")
    if isinstance(summary.get("tokens_per_sec"), (int, float)):
        parts.append(f"{summary['tokens_per_sec']:,.0f} tok/s")
    if summary.get("resumed_from"):
        parts.append(f"resumed at step {summary.get('start_step', '?')}")
    return ", ".join(parts)


COMPILE_CACHE = ".compile-cache"  # under the store root; not a stage (store listings skip dot folders)


@task(name="train", cache_key_fn=cache_key_fn(key, STAGE), **TASK_OPTIONS)
def train_task(tokens: list[dict[str, Any]], tokenizer: dict[str, Any], model_config: dict[str, Any],
               config: dict[str, Any], store: str, run_id: str | None = None, base: dict[str, Any] | None = None,
               refresh: bool = False, verify: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from lmcore.config import ModelConfig, PipelineConfig
    run_train = lazy("lmcore.train.stage", "run_train")
    from tasks.hooks import TRAIN_CALLBACKS

    params = {"tokens": tokens, "tokenizer": tokenizer, "model_config": model_config, "config": config, "base": base}
    cfg, model_cfg = PipelineConfig(**config), ModelConfig(**model_config)

    def compute(out: Path) -> dict[str, Any]:
        from lmcore.tracking.run import PipelineTracker

        from lmcore.train.callbacks import LoggingCallback

        with PipelineTracker(cfg).resume(run_id) as run:
            # LoggingCallback: one line per logged step in the task's log (Prefect UI, log file)
            callbacks = [LoggingCallback(), *([run.train_callback()] if run_id else []), *TRAIN_CALLBACKS]
            from lmcore.base_model import BaseModel

            from lmcore.train.compile import compile_cache

            # compiled graphs cached beside the store: the next run of this shape starts in seconds
            with compile_cache(Path(store) / COMPILE_CACHE):
                return run_train(cfg, model_cfg, [Path(t["dir"]) for t in tokens], Path(tokenizer["dir"]), out,
                                 callbacks, base=BaseModel(**base) if base else None)

    # Resumable: the work directory (checkpoints) outlives a kill, Ctrl-C or a divergence, and the
    # same command continues from its newest good checkpoint; --refresh train starts afresh.
    return build(STAGE, store, key(params), compute, inputs=inputs(params), config=key_config(params),
                 code_version=stage_version(MODULE), refresh=refresh, verify=verify, figure=figure, resumable=True)
