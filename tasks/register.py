"""Prefect task: register the trained model (``models/<id>/`` + an MLflow model version).

Key: every upstream key (the lineage) + the ``tracking`` section + the models
folder + ``lmcore.register.STAGE_VERSION``; so a rerun with nothing changed
registers nothing new. The store directory holds ``model.json`` (model id, MLflow version).

A registration MLflow could not take (server down, refused) is *pending*
(``lmcore.register``): the stored entry says so, it is never taken from Prefect's
cache, and the next run with tracking reachable registers the same folder.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from lmcore.register import pending, run_register
from lmcore.store import Store, stage_key
from tasks._common import TASK_OPTIONS, build, cache_key_fn, stage_version

STAGE = "register"
MODULE = "lmcore.register"
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


def _pending(out: Any, config: dict[str, Any]) -> bool:
    return out is not None and pending(out.summary, config["tracking"]["enabled"])


def needs_work(p: dict[str, Any], store: str) -> bool:
    """No stored registration, or one whose MLflow part is still pending."""
    out = Store(store).get(STAGE, key(p))
    return out is None or _pending(out, p["config"])


def _cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The store key, except while a stored registration is pending (then no cache: retry it)."""
    if _pending(Store(parameters["store"]).get(STAGE, key(parameters)), parameters["config"]):
        return None
    return cache_key_fn(key, STAGE)(context, parameters)


@task(name="register", cache_key_fn=_cache_key, **TASK_OPTIONS)
def register_task(train: dict[str, Any], evaluate: dict[str, Any], tokenizer: dict[str, Any],
                  lineage: dict[str, Any], models_dir: str, config: dict[str, Any], store: str,
                  run_id: str | None = None, refresh: bool = False, verify: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from lmcore.config import PipelineConfig

    params = {"lineage": lineage, "models_dir": models_dir, "config": config}
    cfg = PipelineConfig(**config)
    metrics = {k: v for k, v in evaluate["summary"].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def compute(out: Path) -> dict[str, Any]:
        from lmcore.tracking.run import PipelineTracker

        with PipelineTracker(cfg).resume(run_id) as run:
            return run_register(Path(train["dir"]) / FINAL, Path(tokenizer["dir"]), lineage, metrics,
                                train["summary"], cfg, models_dir, out, run)

    retry = _pending(Store(store).get(STAGE, key(params)), config)  # MLflow still owes this model a version
    return build(STAGE, store, key(params), compute, inputs=lineage, config=key_config(params),
                 code_version=stage_version(MODULE), refresh=refresh or retry, verify=verify, figure=figure)
