"""Prefect task: register the trained model (``models/<id>/`` + an MLflow model version).

Key: every upstream key (the lineage) + the ``tracking`` section + the models
folder + ``lmcore.registry.STAGE_VERSION``; so a rerun with nothing changed
registers nothing new. The store directory holds ``model.json`` (model id, MLflow version).
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task

from lmcore.store import stage_key
from tasks._common import TASK_OPTIONS, build, cache_key_fn, stage_version

STAGE = "register"
MODULE = "lmcore.registry"
FINAL = "final"


def key_config(p: dict[str, Any]) -> dict[str, Any]:
    tracking = p["config"]["tracking"]
    return {"tracking": {k: tracking.get(k) for k in ("enabled", "uri", "experiment_name", "registered_model_name")},
            "models": p["models_dir"]}


def key(p: dict[str, Any]) -> str:
    return stage_key(STAGE, p["lineage"], key_config(p), stage_version(MODULE))


def figure(summary: dict[str, Any]) -> str:
    mlflow = summary.get("mlflow") or {}
    version = f" (MLflow {mlflow.get('name')} v{mlflow.get('version')})" if mlflow.get("version") else ""
    return f"{summary.get('model_id', '?')}{version}"


@task(name="register", cache_key_fn=cache_key_fn(key, STAGE), **TASK_OPTIONS)
def register_task(train: dict[str, Any], evaluate: dict[str, Any], tokenizer: dict[str, Any],
                  lineage: dict[str, Any], models_dir: str, config: dict[str, Any], store: str,
                  run_id: str | None = None, refresh: bool = False, verify: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from lmcore.config import PipelineConfig
    from lmcore.registry import ModelManager

    params = {"lineage": lineage, "models_dir": models_dir, "config": config}
    cfg = PipelineConfig(**config)
    metrics = {k: v for k, v in evaluate["summary"].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def compute(out: Path) -> dict[str, Any]:
        from lmcore.tracking import PipelineTracker

        metadata = {"name": cfg.tracking.registered_model_name, "lineage": lineage, "eval_metrics": metrics,
                    "train_summary": train["summary"], "config": config, "mlflow_run_id": run_id}
        model_id = ModelManager(models_dir).import_checkpoint(Path(train["dir"]) / FINAL, Path(tokenizer["dir"]),
                                                              metadata)
        with PipelineTracker(cfg).resume(run_id) as run:
            registered = run.register(Path(models_dir) / model_id, lineage, metrics) if run_id else None
        summary = {"model_id": model_id, "model_dir": str(Path(models_dir) / model_id), "mlflow": registered}
        (out / "model.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        return summary

    return build(STAGE, store, key(params), compute, inputs=lineage, config=key_config(params),
                 code_version=stage_version(MODULE), refresh=refresh, verify=verify, figure=figure)
