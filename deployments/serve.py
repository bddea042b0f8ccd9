"""Serve lmcore's flows from one long-running process (``flow.serve``): no work pool needed.

    python deployments/serve.py                       # the demo config, all flows
    python deployments/serve.py --config my.yaml --name nightly
    prefect deployment run lmcore-pipeline/local      # from another shell

Why a script as well as ``prefect.yaml``: serving is the shortest path from a
checkout to "runs triggered from the Prefect UI or API", with nothing to
install on a worker; ``prefect.yaml`` is for process work pools. The
deployments are the end-to-end pipeline (``lmcore-pipeline/<name>``) and one
per stage (``lmcore-stage-<stage>/<name>``), each with the config given here
as its default ``config`` parameter; a run changes single keys with ``overrides``
(``["training.max_steps=300"]``, the ``--set`` syntax). Relative
store/models/mlflow paths are relative to the directory this process runs in.
Needs ``PREFECT_API_URL`` pointing at a Prefect server (``prefect server start``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "demo.yaml"


def build_deployments(config_path: str | Path, name: str = "local", stages: bool = True) -> list:
    """``RunnerDeployment`` objects for the pipeline flow (and the stage flows) with the config as default."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from flows.pipeline import pipeline
    from flows.stages import STAGE_FLOWS
    from lmcore.config import PipelineConfig

    cfg = PipelineConfig.from_yaml(config_path)
    params = {"config": cfg.model_dump(mode="json"), "overrides": []}
    tags = ["lmcore", f"config:{Path(config_path).stem}"]
    deployments = [pipeline.to_deployment(name=name, parameters=params, tags=tags,
                                          description=f"lmcore pipeline with {config_path}")]
    if stages:
        for stage, stage_flow in STAGE_FLOWS.items():
            deployments.append(stage_flow.to_deployment(name=name, parameters=params, tags=tags,
                                                        description=f"lmcore down to '{stage}' with {config_path}"))
    return deployments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve lmcore's Prefect flows from this process.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline YAML used as the default parameter")
    parser.add_argument("--name", default="local", help="deployment name (flow-name/NAME)")
    parser.add_argument("--pipeline-only", action="store_true", help="serve only the end-to-end pipeline flow")
    parser.add_argument("--limit", type=int, default=1, help="flow runs executed at the same time")
    args = parser.parse_args(argv)

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from flows.runtime import configure

    configure()
    from prefect import serve

    serve(*build_deployments(args.config, args.name, stages=not args.pipeline_only), limit=args.limit)


if __name__ == "__main__":
    main()
