"""Prefect task: register the trained model (``models/<id>/`` + an MLflow model version).

Key: every upstream key (the lineage) + the ``tracking`` section + the models
folder + ``lmcore.registry.STAGE_VERSION``; so a rerun with nothing changed
registers nothing new. The store directory holds ``model.json`` (model id, MLflow version).

Registration completes, whatever was killed where: the model folder and the MLflow
version are found by the train key before new ones are made (one of each per trained
model), and a registration MLflow could not take (server down, refused) is *pending*:
the stored entry says so, it is never taken from Prefect's cache, and the next run
with tracking reachable registers the same folder.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import get_run_logger, task

from lmcore.store import Store, stage_key
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
    if summary.get("pending"):
        version = " (MLflow registration pending: the next run registers it)"
    return f"{summary.get('model_id', '?')}{version}"


def pending(summary: dict[str, Any], config: dict[str, Any]) -> bool:
    """Tracking is on and MLflow holds no version for this model yet."""
    return bool(config["tracking"]["enabled"]) and not (summary.get("mlflow") or {}).get("version")


def needs_work(p: dict[str, Any], store: str) -> bool:
    """No stored registration, or one whose MLflow part is still pending."""
    out = Store(store).get(STAGE, key(p))
    return out is None or pending(out.summary, p["config"])


def _cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The store key, except while a stored registration is pending (then no cache: retry it)."""
    out = Store(parameters["store"]).get(STAGE, key(parameters))
    if out is not None and pending(out.summary, parameters["config"]):
        return None
    return cache_key_fn(key, STAGE)(context, parameters)


@task(name="register", cache_key_fn=_cache_key, **TASK_OPTIONS)
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

        manager = ModelManager(models_dir)
        model_id = manager.find_by_lineage("train", lineage["train"])  # registered before: the same folder
        if model_id is None:
            metadata = {"name": cfg.tracking.registered_model_name, "lineage": lineage, "eval_metrics": metrics,
                        "train_summary": train["summary"], "config": config, "mlflow_run_id": run_id}
            model_id = manager.import_checkpoint(Path(train["dir"]) / FINAL, Path(tokenizer["dir"]), metadata)
        with PipelineTracker(cfg).resume(run_id) as run:
            registered = run.register(Path(models_dir) / model_id, lineage, metrics) if run_id else None
        summary = {"model_id": model_id, "model_dir": str(Path(models_dir) / model_id), "mlflow": registered}
        summary["pending"] = pending(summary, config)
        if summary["pending"]:
            get_run_logger().warning("register: %s is saved, but MLflow did not take it (%s); the next run with "
                                     "tracking reachable registers it", model_id,
                                     (registered or {}).get("error") or "tracking unreachable")
        (out / "model.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        return summary

    existing = Store(store).get(STAGE, key(params))
    retry = existing is not None and pending(existing.summary, config)
    return build(STAGE, store, key(params), compute, inputs=lineage, config=key_config(params),
                 code_version=stage_version(MODULE), refresh=refresh or retry, verify=verify, figure=figure)
