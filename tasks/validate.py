"""Prefect task: validate the raw JSONL files (report + quarantine).

Key: the files' content fingerprints + the ``data`` section (minus the file
paths: content, not names, decides) + ``lmcore.data.validate.STAGE_VERSION``.
Publishes the validation report as a Prefect markdown artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from lmcore.store import stage_key
from tasks._common import TASK_OPTIONS, build, lazy, cache_key_fn, fingerprint, stage_version

STAGE = "validate"
MODULE = "lmcore.data.validate"


def data_key_config(config: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` section without file paths (their content is in the inputs)."""
    return {k: v for k, v in config["data"].items() if k not in ("training_data_path", "eval_data_path")}


def raw_inputs(files: list[str], eval_files: list[str]) -> dict[str, list[str]]:
    return {"train": [fingerprint(f) for f in files], "eval": [fingerprint(f) for f in eval_files]}


def key(p: dict[str, Any]) -> str:
    return stage_key(STAGE, raw_inputs(p["files"], p["eval_files"]), data_key_config(p["config"]),
                     stage_version(MODULE))


def figure(summary: dict[str, Any]) -> str:
    totals = summary.get("totals", {})
    valid, rejected = totals.get("valid"), totals.get("rejected")
    return f"{valid:,} valid / {rejected:,} quarantined" if isinstance(valid, int) else ""


@task(name="validate", cache_key_fn=cache_key_fn(key, STAGE), **TASK_OPTIONS)
def validate_task(files: list[str], eval_files: list[str], config: dict[str, Any], store: str,
                  refresh: bool = False, verify: bool = False, parts_dir: str | None = None) -> dict[str, Any]:
    from lmcore.config import DataConfig
    from tasks.hooks import progress_for

    run_validate = lazy("lmcore.data.validate", "run_validate")

    data_cfg = DataConfig(**{**config["data"], "training_data_path": files, "eval_data_path": eval_files})
    params = {"files": files, "eval_files": eval_files, "config": config}
    stage_key_ = key(params)
    failed_report = f"{store}/{STAGE}/{stage_key_}.failed-report.json"  # kept when the data is rejected
    manifest = build(STAGE, store, stage_key_,
                     lambda out: run_validate(files, data_cfg, out, progress=progress_for(STAGE),
                                              failure_report_path=failed_report, parts_dir=parts_dir),
                     inputs=raw_inputs(files, eval_files), config=data_key_config(config),
                     code_version=stage_version(MODULE), refresh=refresh, verify=verify, figure=figure)
    _publish_report(manifest)
    return manifest


def _publish_report(manifest: dict[str, Any]) -> None:
    import json
    from pathlib import Path

    from prefect.artifacts import create_markdown_artifact

    try:
        from lmcore.data.report import report_markdown

        report = Path(manifest["dir"]) / "report.json"
        if report.is_file():
            create_markdown_artifact(markdown=report_markdown(json.loads(report.read_text())), key="validation-report",
                                     description="lmcore validation report")
    except Exception as exc:  # an artifact is a nicety; never fail the stage for it
        from prefect import get_run_logger

        get_run_logger().warning("validation report artifact skipped: %s", exc)
