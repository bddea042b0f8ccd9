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

import json  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator, Optional  # noqa: E402

from prefect import flow  # noqa: E402

from flows.data_parts import parsed_parts  # noqa: E402
from flows.stage_names import STAGES  # noqa: E402
from flows.task_runners import PARALLEL_RUNNERS, LazyTaskRunner  # noqa: E402
from lmcore.base_model import BaseModel, resolve_base  # noqa: E402
from lmcore.config import PipelineConfig  # noqa: E402
from lmcore.data.inputs import input_paths  # noqa: E402
from lmcore.errors import ConfigError  # noqa: E402
from lmcore.store import MANIFEST, Store  # noqa: E402
from lmcore.tracking.wandb_mirror import check_installed  # noqa: E402
from tasks import evaluate, pretokenize, register, shard, tokenizer, train, validate  # noqa: E402
from tasks.hooks import progress_for  # noqa: E402

STAGE_LISTENERS: list[Callable[[str, dict[str, Any]], None]] = []


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
          fan_out: Optional[Callable[[dict[str, Any]], Any]] = None, **params: Any) -> dict[str, Any]:
    """Run one task; its own exception propagates, so the flow fails with the stage's message.
    ``fan_out(params)``: a context manager that runs the stage's parallel part first (parsing the
    input in parts) and gives the extra parameters the task then needs."""
    _emit("start", {"stage": stage})
    started = time.perf_counter()
    with fan_out(params) if fan_out is not None else nullcontext({}) as extra:
        state = _run_task(task, refresh, verify, {**params, **extra})
    result = state.result()
    if state.name == "Cached" and not _intact(result, verify):  # Prefect remembers it; the store lost or changed it
        state = task.with_options(refresh_cache=True)(**params, refresh=False, verify=verify, return_state=True)
        result = state.result()
    records[stage] = _stage_record(stage, state, result, time.perf_counter() - started)
    _emit("done", records[stage])
    return result


def _run_task(task: Any, refresh: bool, verify: bool, params: dict[str, Any]) -> Any:
    runner = task.with_options(refresh_cache=True) if refresh else task
    return runner(**params, refresh=refresh, verify=verify, return_state=True)


def _pretokenize(shards: dict[str, Any], tok: dict[str, Any], config: dict[str, Any], store: str,
                 refresh: bool, records: dict[str, Any], runner: LazyTaskRunner, verify: bool = False,
                 heal: bool = False) -> list[dict[str, Any]]:
    """One task per Parquet shard, in parallel on the task runner ``orchestration`` names."""
    _emit("start", {"stage": "pretokenize"})
    started = time.perf_counter()
    files = sorted(p.name for p in Path(shards["dir"]).glob("*.parquet"))
    task = pretokenize.pretokenize_task
    task = task.with_options(refresh_cache=True) if refresh or heal else task
    futures = runner.submit_all(task, [dict(shard_file=name, shards=shards, tokenizer=tok, config=config, store=store,
                                            refresh=refresh, verify=verify) for name in files])
    results, states = [f.result() for f in futures], [f.state for f in futures]
    if not heal and any(s.name == "Cached" and not _intact(r, verify) for s, r in zip(states, results)):
        return _pretokenize(shards, tok, config, store, refresh, records, runner, verify, heal=True)  # store lost some
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


@dataclass
class RunState:
    """What the stages of one run share: the config, the store, the input files, finished results."""

    cfg: PipelineConfig
    store: str
    files: list[str]
    eval_files: list[str]
    config: dict[str, Any] = field(default_factory=dict)  # cfg as the JSON the tasks take
    results: dict[str, Any] = field(default_factory=dict)
    _architecture: Optional[tuple[str, Any]] = None
    _base: Any = False  # False: not looked up yet

    def base(self) -> Optional[BaseModel]:
        """The model ``model.init_from`` names (resolved once), or None when training from scratch."""
        if self._base is False:
            init_from = self.cfg.model.init_from
            self._base = resolve_base(init_from, self.cfg.paths.models, self.store, self.cfg) if init_from else None
        return self._base

    def base_params(self) -> dict[str, Any]:
        base = self.base()
        return {"base": asdict(base)} if base is not None else {}

    def architecture(self) -> tuple[str, Any]:
        """``(preset, ModelConfig)``, resolved once: the base's (fine-tuning), or the preset's (``auto``
        looks at the hardware, so torch loads here)."""
        if self._architecture is None:
            base = self.base()
            if base is not None:
                from lmcore.base_model import architecture

                self._architecture = ("init_from", architecture(base, self.cfg))
            else:
                from lmcore.hardware.presets import resolve_architecture

                self._architecture = resolve_architecture(self.cfg)
        return self._architecture

    def lineage(self) -> dict[str, Any]:
        r = self.results
        lineage = {"validate": r["validate"]["key"], "shards": r["shard"]["key"], "tokenizer": r["tokenizer"]["key"],
                   "tokens": [t["key"] for t in r["pretokenize"]], "train": r["train"]["key"],
                   "eval": r["evaluate"]["key"]}
        if self.base() is not None:
            lineage["base"] = self.base().sha256
        return lineage


@dataclass(frozen=True)
class Stage:
    """One row of the pipeline: its task module, its inputs, and what it adds to the MLflow run."""

    name: str
    module: Any                                          # tasks.<stage>: STAGE, key(), figure()
    task: Any                                            # its Prefect task
    inputs: Callable[[RunState], dict[str, Any]]         # the task's parameters, from earlier results
    logs_into_run: bool = False                          # computes inside the MLflow run (needs its id)
    record: Callable[[Any, RunState, dict[str, Any]], None] = lambda run, state, result: None
    mapped: bool = False                                 # one task per Parquet shard
    fans_out: bool = False                               # parses its input in parts on the task runner first


def _files(state: RunState) -> dict[str, Any]:
    return {"files": state.files, "eval_files": state.eval_files}


def _train_tags(state: RunState, result: dict[str, Any]) -> dict[str, Any]:
    """The preset, the published checkpoints' full paths (the summary holds them relative to the
    stage folder) and, for fine-tuning, the base model (source, registered version, sha256) as run tags."""
    tags = {"lmcore.train.preset": state.architecture()[0]}
    summary = result.get("summary") or {}
    for name in ("checkpoint", "best_checkpoint"):
        if summary.get(name):
            tags[f"lmcore.train.{name}"] = str(Path(result["dir"]) / summary[name])
    base = state.base()
    if base is not None:
        tags.update({f"lmcore.base.{k}": (json.dumps(v) if isinstance(v, dict) else v)
                     for k, v in base.lineage.items()})
    return tags


PIPELINE: tuple[Stage, ...] = (
    Stage("validate", validate, validate.validate_task, lambda s: _files(s), fans_out=True,
          record=lambda run, s, r: run.log_validation_report(Path(r["dir"]) / "report.json")),
    Stage("shard", shard, shard.shard_task, lambda s: {**_files(s), "validate": s.results["validate"]}, fans_out=True,
          record=lambda run, s, r: run.log_dataset({"key": r["key"], "dir": r["dir"]})),
    Stage("tokenizer", tokenizer, tokenizer.tokenizer_task,
          lambda s: {"shards": s.results["shard"], "vocab_size": s.architecture()[1].vocab_size, **s.base_params()},
          record=lambda run, s, r: run.log_tokenizer(r["dir"])),
    Stage("pretokenize", pretokenize, pretokenize.pretokenize_task,
          lambda s: {"shards": s.results["shard"], "tokenizer": s.results["tokenizer"]}, mapped=True),
    Stage("train", train, train.train_task,
          lambda s: {"tokens": s.results["pretokenize"], "tokenizer": s.results["tokenizer"],
                     "model_config": s.architecture()[1].model_dump(mode="json"), **s.base_params()},
          logs_into_run=True, record=lambda run, s, r: run.set_tags(_train_tags(s, r))),
    Stage("evaluate", evaluate, evaluate.evaluate_task,
          lambda s: {"train": s.results["train"], "tokens": s.results["pretokenize"], "tokenizer": s.results["tokenizer"]},
          record=lambda run, s, r: run.log_eval(r["summary"])),
    Stage("register", register, register.register_task,
          lambda s: {"train": s.results["train"], "evaluate": s.results["evaluate"], "tokenizer": s.results["tokenizer"],
                     "lineage": s.lineage(), "models_dir": str(Path(s.cfg.paths.models).resolve())},
          logs_into_run=True),
)
assert tuple(stage.name for stage in PIPELINE) == STAGES
_FIGURES = {stage.name: stage.module.figure for stage in PIPELINE}


def run_stages(cfg: PipelineConfig, until: str = "register", refresh: Optional[str] = None,
               verify: bool = False) -> dict[str, Any]:
    """Run the stages from ``validate`` down to ``until`` inside the current flow; returns per-stage records.

    ``verify`` checks the sha256 of every stored file before reuse (otherwise size and mtime).
    """
    if until not in STAGES or (refresh and refresh not in STAGES):
        bad = until if until not in STAGES else refresh
        raise ConfigError(f"unknown stage '{bad}'; stages are {', '.join(STAGES)}")
    fresh = set(STAGES[STAGES.index(refresh):]) if refresh else set()
    files, eval_files = input_paths(cfg)
    check_installed(cfg)  # tracking.wandb without the wandb package: said now, not after training
    state = RunState(cfg, str(Path(cfg.paths.store).resolve()), files, eval_files, cfg.model_dump(mode="json"))
    records: dict[str, Any] = {}

    from prefect.runtime import flow_run

    from flows.deferred_run import DeferredRun

    with DeferredRun(cfg, str(flow_run.id or "") or None) as run, LazyTaskRunner(cfg.orchestration) as runner:
        run.log_config()
        for stage in PIPELINE[: STAGES.index(until) + 1]:
            params = {**stage.inputs(state), "config": state.config}
            if stage.mapped:
                result = _pretokenize(params["shards"], params["tokenizer"], params["config"], state.store,
                                      stage.name in fresh, records, runner, verify)
            else:
                computes = _will_compute(stage, params, state.store, fresh)
                if stage.logs_into_run:  # open the MLflow run first when the stage will compute: it logs into it
                    params["run_id"] = run.open() if computes else run.run_id
                parallel = cfg.orchestration.task_runner in PARALLEL_RUNNERS
                fan_out = _fan_out(stage, state, runner) if stage.fans_out and computes and parallel else None
                result = _call(stage.name, stage.task, stage.name in fresh, records, verify=verify, fan_out=fan_out,
                               **params, store=state.store)
            state.results[stage.name] = result
            record = records[stage.name]
            if record["status"] == "ran":
                run.open()
            run.log_stage(stage.name, str(record["key"])[:200], record["summary"])
            stage.record(run, state, result)
        records["_run"] = {"mlflow_run_id": run.run_id, "tracking_uri": cfg.tracking_uri() if cfg.tracking.enabled
                           else None, "store": state.store, "flow_run_id": str(flow_run.id or "")}
    return records


def _fan_out(stage: Stage, state: RunState, runner: LazyTaskRunner) -> Callable[[dict[str, Any]], Any]:
    """The parse-in-parts step of a data stage (``flows.data_parts``), for :func:`_call`."""

    @contextmanager
    def parts(params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        key = stage.module.key(params)
        with parsed_parts(stage.name, stage.module.STAGE, key, state.files, state.eval_files, state.config,
                          state.store, runner, progress_for(stage.name)) as parts_dir:
            yield {"parts_dir": str(parts_dir)}

    return parts


def _will_compute(stage: Stage, params: dict[str, Any], store: str, fresh: set[str]) -> bool:
    """Whether ``stage`` will compute (refreshed, not in the store, or, for register, owed to MLflow)."""
    if stage.name in fresh:
        return True
    needs_work = getattr(stage.module, "needs_work", None)
    if needs_work is not None:
        return needs_work(params, store)
    return not Store(store).exists(stage.module.STAGE, stage.module.key(params))


@flow(name="lmcore-pipeline", log_prints=False)
def pipeline(config: PipelineConfig, refresh: Optional[str] = None, verify: bool = False,
             overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """The whole pipeline; ``refresh`` names a stage to recompute with everything below it; ``verify``
    checks every stored file's sha256 before it is reused; ``overrides`` are ``key.path=value`` items
    applied to ``config`` as ``--set`` does (a deployment run changes one key without restating the config)."""
    return run_stages(config.with_overrides(overrides), until="register", refresh=refresh, verify=verify)
