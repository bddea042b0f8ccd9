"""MLflow model registry: one version per pipeline run, aliases for the best.

Why aliases and a metric rule: every pipeline run registers a new version of
``tracking.registered_model_name`` (nothing is lost), but consumers load
``models:/NAME@champion``. The ``champion`` alias moves to a new version only
when its validation bits per byte (tokenizer-independent, lower is better)
beat the current champion's, read from the champion version's
``lmcore.bits_per_byte`` tag; otherwise the new version is the
``challenger``. Each version is tagged with its lineage (data digest, store
keys, tokenizer key, git commit) so a version can be followed back to the
raw files.

Registration is idempotent per trained model: a version is found by its
``lmcore.train`` tag before one is created, so a run killed after registering
(or retried because MLflow was down) never adds a second version, and a version
left without an alias gets one on the next run.

Two pipelines registering at the same moment may both read the old champion
before either moves the alias; the later one wins. The registry has no
compare-and-set, so that race is accepted and documented.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcore.tracking.client import make_client, scoped_tracking_uri

if TYPE_CHECKING:
    from lmcore.config import PipelineConfig

log = logging.getLogger("lmcore.tracking")

BPB_TAG = "lmcore.bits_per_byte"
BPB_METRIC = "bits_per_byte"  # the evaluate stage's name (lmcore.evaluate); an MLflow run logs it as eval_<name>


def read_bits_per_byte(metrics: dict[str, Any]) -> float | None:
    """``metrics["bits_per_byte"]`` when it is a finite number, else None (the evaluate stage computes it)."""
    value = metrics.get(BPB_METRIC)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def register_model(run, model_dir: Path, lineage: dict[str, Any],
                   metrics: dict[str, Any], log_hf_export: bool = True) -> dict[str, Any]:
    """Log ``model_dir`` as a pyfunc in ``run``, register a version, move ``champion`` if it wins.

    Returns ``{name, version, alias, model_uri, bits_per_byte, previous_champion}``.
    """
    # log_model and the registry's resolution of "models:/<id>" sources read MLflow's global URI
    with scoped_tracking_uri(run.cfg.tracking_uri()):
        return _register(run, model_dir, lineage, metrics, log_hf_export)


def _register(run, model_dir: Path, lineage: dict[str, Any],
              metrics: dict[str, Any], log_hf_export: bool) -> dict[str, Any]:
    cfg, client = run.cfg, run.client
    name = cfg.tracking.registered_model_name
    bpb = read_bits_per_byte(metrics)
    version = _version_of(client, name, lineage.get("train"))
    if version is None:
        version = _create_version(run, model_dir, lineage, bpb, log_hf_export)
    else:  # registered before (a killed or retried run): one version per trained model
        log.info("%s version %s already holds train %s; not registering it again", name, version.version,
                 lineage.get("train"))
    held = sorted(a for a, v in (client.get_registered_model(name).aliases or {}).items() if str(v) == str(version.version))
    champion = _current_champion(client, name, cfg.tracking.champion_alias)
    champion_bpb = _version_bpb(client, champion) if champion is not None else None
    if held:
        alias = cfg.tracking.champion_alias if cfg.tracking.champion_alias in held else held[0]
    else:
        wins = champion is None or (bpb is not None and (champion_bpb is None or bpb < champion_bpb))
        alias = cfg.tracking.champion_alias if wins else cfg.tracking.challenger_alias
        client.set_registered_model_alias(name, alias, version.version)
    run.set_tags({"lmcore.registered_model": name, "lmcore.registered_version": version.version,
                  "lmcore.registered_alias": alias})
    previous = champion if champion is not None and str(champion.version) != str(version.version) else None
    log.info("registered %s version %s as @%s (bits/byte %s; previous champion %s at %s)", name,
             version.version, alias, bpb, previous.version if previous else None, champion_bpb)
    return {"name": name, "version": str(version.version), "alias": alias,
            "model_uri": f"models:/{name}@{alias}", "bits_per_byte": bpb,
            "previous_champion": str(previous.version) if previous else None}


def _version_of(client, name: str, train_key: str | None):
    """The version already registered for this train key (the version tag ``lmcore.train``), or None."""
    if not train_key:
        return None
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`lmcore.train` = '{train_key}'")
    except Exception:  # noqa: BLE001 - the registered model does not exist yet
        return None
    return min(found, key=lambda v: int(v.version)) if found else None


def _create_version(run, model_dir: Path, lineage: dict[str, Any], bpb: float | None,
                    log_hf_export: bool):
    """Log ``model_dir`` as a pyfunc into the run and register it as a new version tagged with its lineage."""
    from mlflow.entities import LoggedModelOutput

    from lmcore.tracking.pyfunc import log_text_generator

    cfg, client = run.cfg, run.client
    name = cfg.tracking.registered_model_name
    experiment_id = client.get_run(run.run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name="model", source_run_id=run.run_id)
    log_text_generator(model_dir, name="model", model_id=logged.model_id)
    client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])
    if log_hf_export:
        _log_hf_export(run, model_dir)
    tags = {f"lmcore.{k}": str(v) for k, v in lineage.items() if v is not None}
    run_tags = client.get_run(run.run_id).data.tags  # lineage the run already knows
    for run_tag, version_tag in (("lmcore.data.digest", "lmcore.data_digest"),
                                 ("mlflow.source.git.commit", "lmcore.git_commit"),
                                 ("lmcore.flow_run_id", "lmcore.flow_run_id")):
        if run_tags.get(run_tag) and version_tag not in tags:
            tags[version_tag] = run_tags[run_tag]
    tags["lmcore.model_dir"] = str(Path(model_dir).resolve())
    base = json.loads((Path(model_dir) / "metadata.json").read_text(encoding="utf-8")).get("base") \
        if (Path(model_dir) / "metadata.json").is_file() else None
    for field, value in (base or {}).items():  # fine-tuned: where it started (source, version, sha256)
        tags[f"lmcore.base_{field}"] = json.dumps(value) if isinstance(value, dict) else str(value)
    if bpb is not None:
        tags[BPB_TAG] = repr(bpb)
    # other eval figures stay on the run (metrics): the registry page lists every version tag
    _ensure_registered_model(client, name)
    return client.create_model_version(name, source=f"models:/{logged.model_id}", run_id=run.run_id,
                                       tags={k: v[:5000] for k, v in tags.items()}, model_id=logged.model_id,
                                       description=f"lmcore model {Path(model_dir).name}")


def list_registry_versions(cfg: "PipelineConfig") -> list[dict[str, Any]]:
    """Every version of ``tracking.registered_model_name``, oldest first, with aliases and lineage.

    Each dict: ``name, version, aliases (list), created (ISO), run_id, model_id (lmcore id),
    bits_per_byte, data_digest, status``. An unreachable store gives a warning and ``[]``.
    """
    name = cfg.tracking.registered_model_name
    try:
        client = make_client(cfg)
        versions = client.search_model_versions(f"name = '{name}'")
        aliases: dict[str, list[str]] = {}
        if versions:
            for alias, version in (client.get_registered_model(name).aliases or {}).items():
                aliases.setdefault(str(version), []).append(alias)
    except Exception as exc:  # noqa: BLE001
        if "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return []
        log.warning("tracking: cannot list registry versions at %s (%s: %s)", cfg.tracking_uri(),
                    type(exc).__name__, str(exc)[:200])
        return []
    rows = []
    for v in versions:
        tags = v.tags or {}
        bpb = tags.get(BPB_TAG)
        rows.append({
            "name": v.name, "version": str(v.version), "aliases": sorted(aliases.get(str(v.version), [])),
            "created": datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds"),
            "run_id": v.run_id, "model_id": Path(tags.get("lmcore.model_dir", "")).name or None,
            "bits_per_byte": float(bpb) if bpb else None, "data_digest": tags.get("lmcore.data_digest"),
            "status": v.status,
        })
    return sorted(rows, key=lambda r: int(r["version"]))


# --------------------------------------------------------------------------- helpers


def _ensure_registered_model(client, name: str) -> None:
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - does not exist yet
        try:
            client.create_registered_model(name, description="LLaMA-style language model trained by lmcore; "
                                                             "load models:/NAME@champion")
        except Exception:  # noqa: BLE001 - created concurrently
            client.get_registered_model(name)


def _current_champion(client, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001 - no such alias yet
        return None


def _version_bpb(client, version) -> float | None:
    value = (version.tags or {}).get(BPB_TAG)
    if value:
        return float(value)
    if version.run_id:  # an older version registered without the tag: use its run's metric
        metrics = client.get_run(version.run_id).data.metrics
        return read_bits_per_byte({k.removeprefix("eval_"): v for k, v in metrics.items()})
    return None


def _log_hf_export(run, model_dir: Path) -> None:
    """The transformers folder (``lmcore export-hf``) as run artifact ``hf_model/``; warns if not exportable."""
    from lmcore.hf.export import export_for_hf

    try:
        with tempfile.TemporaryDirectory(prefix="lmcore-hf-") as tmp:
            export_for_hf(model_dir, Path(tmp) / "hf_model")
            run.client.log_artifacts(run.run_id, str(Path(tmp) / "hf_model"), "hf_model")
    except Exception as exc:  # noqa: BLE001 - e.g. a GeGLU model has no LlamaForCausalLM layout
        log.warning("tracking: no Hugging Face export logged for %s (%s)", model_dir, exc)
