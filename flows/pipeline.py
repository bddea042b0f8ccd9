"""The end-to-end Prefect flow: validate -> shard -> train_tokenizer -> pretokenize (mapped) -> train -> evaluate -> register.

Why this shape: the flow is wiring only. Each stage is a task whose Prefect
cache key is its store key, so a rerun with nothing changed reports every task
Cached and recomputes nothing, and changing one section reruns that stage and
the ones below it. ``run_stages(cfg, until=...)`` is shared with the one-stage
flows in ``flows/stages.py``.

``refresh=STAGE`` recomputes that stage and everything below it: those tasks
get ``refresh_cache=True`` and bypass the store shortcut (a same-key output is
written anew and swapped in). If Prefect remembers a result whose store
directory was deleted, the task is rerun (the store is the truth).

Observers (the CLI's per-stage lines) subscribe with ``STAGE_LISTENERS``:
each is called ``listener(event, record)`` with event ``"start"`` or ``"done"``.
"""

from __future__ import annotations

from flows.runtime import configure

configure()

import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

from prefect import flow, unmapped  # noqa: E402

from flows.stage_names import STAGES  # noqa: E402
from lmcore.config import PipelineConfig  # noqa: E402
from lmcore.data.inputs import input_paths  # noqa: E402
from lmcore.errors import ConfigError  # noqa: E402
from lmcore.store import MANIFEST, Store  # noqa: E402
from tasks import evaluate, pretokenize, register, shard, tokenizer, train, validate  # noqa: E402

STAGE_LISTENERS: list[Callable[[str, dict[str, Any]], None]] = []
_FIGURES = {"validate": validate.figure, "shard": shard.figure, "tokenizer": tokenizer.figure,
            "pretokenize": pretokenize.figure, "train": train.figure, "evaluate": evaluate.figure,
            "register": register.figure}


def _emit(event: str, record: dict[str, Any]) -> None:
    for listener in list(STAGE_LISTENERS):
        listener(event, record)


def _stage_record(stage: str, state: Any, result: dict[str, Any], wall: float) -> dict[str, Any]:
    status = "cached" if state.name == "Cached" else ("cached (store)" if result.get("store_hit") else "ran")
    return {"stage": stage, "status": status, "seconds": round(wall, 3), "compute_seconds": result.get("seconds", 0.0),
            "key": result["key"], "dir": result["dir"], "summary": result.get("summary", {}),
            "figure": _FIGURES[stage](result.get("summary", {}))}


def _intact(result: dict[str, Any], deep: bool) -> bool:
    """The store still holds this task result's output, unmodified (a Prefect cache hit skips the task
    body, so the flow checks here: the store, not Prefect's memory, is the truth)."""
    directory = Path(result["dir"])
    if not (directory / MANIFEST).is_file():
        return False
    return not Store(directory.parent.parent).check(directory.parent.name, directory.name, deep=deep)


def _call(stage: str, task: Any, refresh: bool, records: dict[str, Any], verify: bool = False,
          **params: Any) -> dict[str, Any]:
    """Run one task; its own exception propagates, so the flow fails with the stage's message."""
    _emit("start", {"stage": stage})
    started = time.perf_counter()
    runner = task.with_options(refresh_cache=True) if refresh else task
    state = runner(**params, refresh=refresh, verify=verify, return_state=True)
    result = state.result()
    if state.name == "Cached" and not _intact(result, verify):  # Prefect remembers it; the store lost or changed it
        state = task.with_options(refresh_cache=True)(**params, refresh=False, verify=verify, return_state=True)
        result = state.result()
    records[stage] = _stage_record(stage, state, result, time.perf_counter() - started)
    _emit("done", records[stage])
    return result


def _pretokenize(shards: dict[str, Any], tok: dict[str, Any], config: dict[str, Any], store: str,
                 refresh: bool, records: dict[str, Any], verify: bool = False,
                 heal: bool = False) -> list[dict[str, Any]]:
    """One task per Parquet shard, run in parallel by the flow's task runner."""
    _emit("start", {"stage": "pretokenize"})
    started = time.perf_counter()
    files = sorted(p.name for p in Path(shards["dir"]).glob("*.parquet"))
    task = pretokenize.pretokenize_task
    runner = task.with_options(refresh_cache=True) if refresh or heal else task
    futures = runner.map(shard_file=files, shards=unmapped(shards), tokenizer=unmapped(tok),
                         config=unmapped(config), store=unmapped(store), refresh=unmapped(refresh),
                         verify=unmapped(verify))
    futures.wait()
    results, states = [f.result() for f in futures], [f.state for f in futures]
    if not heal and any(s.name == "Cached" and not _intact(r, verify) for s, r in zip(states, results)):
        return _pretokenize(shards, tok, config, store, refresh, records, verify, heal=True)  # the store lost some
    statuses = {_stage_record("pretokenize", s, r, 0.0)["status"] for s, r in zip(states, results)}
    status = "ran" if "ran" in statuses else ("cached" if statuses == {"cached"} else "cached (store)")
    tokens = sum(int(r["summary"].get("tokens", 0) or 0) for r in results)
    records["pretokenize"] = {
        "stage": "pretokenize", "status": status, "seconds": round(time.perf_counter() - started, 3),
        "compute_seconds": round(sum(r.get("seconds", 0.0) for r in results), 4),
        "key": ",".join(r["key"] for r in results), "dir": [r["dir"] for r in results],
        "summary": {"shards": len(results), "tokens": tokens},
        "figure": f"{len(results)} shards, {tokens:,} tokens"}
    _emit("done", records["pretokenize"])
    return results


def run_stages(cfg: PipelineConfig, until: str = "register", refresh: Optional[str] = None,
               verify: bool = False) -> dict[str, Any]:
    """Run the stages from ``validate`` down to ``until`` inside the current flow; returns per-stage records.

    ``verify`` checks the sha256 of every stored file before reuse (otherwise size and mtime).
    """
    if until not in STAGES or (refresh and refresh not in STAGES):
        bad = until if until not in STAGES else refresh
        raise ConfigError(f"unknown stage '{bad}'; stages are {', '.join(STAGES)}")
    stop = STAGES.index(until)
    fresh = {s for s in STAGES if refresh and STAGES.index(s) >= STAGES.index(refresh)}
    files, eval_files = input_paths(cfg)
    store = str(Path(cfg.paths.store).resolve())
    config = cfg.model_dump(mode="json")
    records: dict[str, Any] = {}

    from prefect.runtime import flow_run

    from flows.deferred_run import DeferredRun

    def opened_if_ran(stage: str) -> None:
        if records[stage]["status"] == "ran":
            run.open()

    def run_id_if_computing(stage: str, task_module: Any, **params: Any) -> Optional[str]:
        """Open the MLflow run before a stage that will compute (it logs into the run itself)."""
        needs_work = getattr(task_module, "needs_work", None)  # register: also when MLflow still owes a version
        if stage in fresh or (needs_work(params, store) if needs_work else
                              not Store(store).exists(task_module.STAGE, task_module.key(params))):
            return run.open()
        return run.run_id

    with DeferredRun(cfg, str(flow_run.id or "") or None) as run:
        run.log_config()
        v = _call("validate", validate.validate_task, "validate" in fresh, records, verify=verify,
                  files=files, eval_files=eval_files, config=config, store=store)
        opened_if_ran("validate")
        run.log_stage("validate", v["key"], v["summary"])
        run.log_validation_report(Path(v["dir"]) / "report.json")
        if stop >= 1:
            s = _call("shard", shard.shard_task, "shard" in fresh, records, verify=verify,
                      files=files, eval_files=eval_files, validate=v, config=config, store=store)
            opened_if_ran("shard")
            run.log_stage("shard", s["key"], s["summary"])
            run.log_dataset({"key": s["key"], "dir": s["dir"]})  # files + sha256 come from its manifest.json
        if stop >= 2:
            from lmcore.hardware.presets import resolve_architecture  # torch: only when the tokenizer stage is reached

            preset, model_cfg = resolve_architecture(cfg)
            t = _call("tokenizer", tokenizer.tokenizer_task, "tokenizer" in fresh, records, verify=verify,
                      shards=s, vocab_size=model_cfg.vocab_size, config=config, store=store)
            opened_if_ran("tokenizer")
            run.log_stage("tokenizer", t["key"], t["summary"])
            run.log_tokenizer(t["dir"])
        if stop >= 3:
            toks = _pretokenize(s, t, config, store, "pretokenize" in fresh, records, verify)
            opened_if_ran("pretokenize")
            run.log_stage("pretokenize", records["pretokenize"]["key"][:200], records["pretokenize"]["summary"])
        if stop >= 4:
            params = dict(tokens=toks, tokenizer=t, model_config=model_cfg.model_dump(mode="json"), config=config)
            m = _call("train", train.train_task, "train" in fresh, records, verify=verify, **params, store=store,
                      run_id=run_id_if_computing("train", train, **params))
            run.log_stage("train", m["key"], {**m["summary"], "preset": preset})
        if stop >= 5:
            e = _call("evaluate", evaluate.evaluate_task, "evaluate" in fresh, records, verify=verify,
                      train=m, tokens=toks, tokenizer=t, config=config, store=store)
            opened_if_ran("evaluate")
            run.log_stage("evaluate", e["key"], e["summary"])
            run.log_eval(e["summary"].get("metrics", e["summary"]))
        if stop >= 6:
            lineage = {"validate": v["key"], "shards": s["key"], "tokenizer": t["key"],
                       "tokens": [x["key"] for x in toks], "train": m["key"], "eval": e["key"]}
            params = dict(lineage=lineage, models_dir=str(Path(cfg.paths.models).resolve()), config=config)
            r = _call("register", register.register_task, "register" in fresh, records, verify=verify, train=m, evaluate=e,
                      tokenizer=t, **params, store=store, run_id=run_id_if_computing("register", register, **params))
            run.log_stage("register", r["key"], r["summary"])
        records["_run"] = {"mlflow_run_id": run.run_id, "tracking_uri": cfg.tracking_uri() if cfg.tracking.enabled
                           else None, "store": store, "flow_run_id": str(flow_run.id or "")}
    return records


@flow(name="lmcore-pipeline", log_prints=False)
def pipeline(config: PipelineConfig, refresh: Optional[str] = None, verify: bool = False) -> dict[str, Any]:
    """The whole pipeline; ``refresh`` names a stage to recompute with everything below it; ``verify``
    checks every stored file's sha256 before it is reused."""
    return run_stages(config, until="register", refresh=refresh, verify=verify)
