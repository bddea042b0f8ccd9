"""Stage ``register``: the trained model into the models folder and the MLflow registry, once.

``run_register(...)`` copies the final checkpoint and the tokenizer into ``models/<id>/``
(:class:`~lmcore.models_dir.ModelManager`), registers that folder as a version of
``tracking.registered_model_name`` through the pipeline's MLflow run, and writes ``model.json``
(the summary) into ``out_dir``.

Registration completes, whatever was killed where: the model folder and the MLflow version are
found by the train key before new ones are made (one of each per trained model). When MLflow
cannot take the model (server down, refused) the summary says ``pending``; the register task
then retries on the next run with the same folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from lmcore.models_dir import ModelManager

log = logging.getLogger(__name__)

STAGE_VERSION = "1"  # the register stage's output layout (models/<id>/ + model.json)
MODEL_FILE = "model.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def _save_merged(manager: ModelManager, checkpoint_dir: Path, tokenizer_dir: Path, metadata: dict[str, Any],
                 lora: dict[str, Any]) -> str:
    """A LoRA run's model: the adapters merged into the weights (a plain model every loader takes), and
    the adapter on its own beside it (``adapter.safetensors`` + ``adapter_config.json``)."""
    from safetensors.torch import load_file, save_file

    from lmcore.data.tokenizer import LmcoreTokenizer
    from lmcore.model.lora import adapter_state_dict
    from lmcore.train.checkpoint import WEIGHTS, load_model

    model, _, _ = load_model(checkpoint_dir)  # merges
    adapter = {k: v.contiguous() for k, v in adapter_state_dict(load_file(str(Path(checkpoint_dir) / WEIGHTS))).items()}
    adapter_config = {**lora, "base": metadata.get("base"), "scale": lora["alpha"] / lora["rank"],
                      "format": "lmcore-lora-1: W' = W + scale * lora_B @ lora_A, names of model.state_dict()"}
    extra = {ADAPTER_WEIGHTS: lambda path: save_file(adapter, str(path)),
             ADAPTER_CONFIG: lambda path: path.write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")}
    return manager.save_model(model, LmcoreTokenizer.load(tokenizer_dir), metadata, extra_files=extra)


def pending(summary: dict[str, Any], tracking_enabled: bool) -> bool:
    """Tracking is on and MLflow holds no version for this model yet."""
    return bool(tracking_enabled) and not (summary.get("mlflow") or {}).get("version")


def run_register(checkpoint_dir: Path, tokenizer_dir: Path, lineage: dict[str, Any], metrics: dict[str, Any],
                 train_summary: dict[str, Any], cfg, models_dir: str | Path, out_dir: Path,
                 run: Optional[Any] = None) -> dict[str, Any]:
    """Register the checkpoint; ``run`` is the pipeline's open MLflow run (a ``TrackedRun``), or None
    when there is none (tracking off or unreachable). Returns ``{model_id, model_dir, mlflow, pending}``."""
    manager = ModelManager(models_dir)
    model_id = manager.find_by_lineage("train", lineage["train"])  # registered before: the same folder
    if model_id is None:
        metadata = {"name": cfg.tracking.registered_model_name, "lineage": lineage, "eval_metrics": metrics,
                    "train_summary": train_summary, "config": cfg.model_dump(mode="json"),
                    "mlflow_run_id": getattr(run, "run_id", None)}
        if cfg.tracking.enabled:  # where this model's versions and aliases live, for `lmcore models list`
            metadata["registry"] = {"tracking_uri": cfg.tracking_uri(), "name": cfg.tracking.registered_model_name}
        if train_summary.get("base"):
            metadata["base"] = train_summary["base"]
        lora = json.loads((Path(checkpoint_dir) / "metadata.json").read_text(encoding="utf-8")).get("lora")
        if lora:
            model_id = _save_merged(manager, checkpoint_dir, tokenizer_dir, {**metadata, "lora": lora}, lora)
        else:
            model_id = manager.import_checkpoint(checkpoint_dir, tokenizer_dir, metadata)
    model_dir = Path(models_dir) / model_id
    registered = run.register(model_dir, lineage, metrics) if getattr(run, "run_id", None) else None
    summary = {"model_id": model_id, "model_dir": str(model_dir), "mlflow": registered}
    summary["pending"] = pending(summary, cfg.tracking.enabled)
    if summary["pending"]:
        log.warning("register: %s is saved, but MLflow did not take it (%s); the next run with tracking reachable "
                    "registers it", model_id, (registered or {}).get("error") or "tracking unreachable")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / MODEL_FILE).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary
