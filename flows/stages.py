"""One Prefect flow per stage, for single-stage reruns (``lmcore stage STAGE CONFIG``).

Why separate flows: a deployment or a person can run "just the tokenizer" and
see it as its own flow in the Prefect UI. Each one runs the stages above it
too, and those come from the cache (or are computed when missing): a stage
never runs on inputs that do not exist. ``refresh=True`` recomputes the named
stage and the ones below it that this flow runs.
"""

from __future__ import annotations

from flows.runtime import configure

configure()

from typing import Any, Callable, Optional  # noqa: E402

from prefect import flow  # noqa: E402

from flows.pipeline import run_stages  # noqa: E402
from flows.stage_names import STAGES  # noqa: E402
from lmcore.config import PipelineConfig  # noqa: E402


def _stage_flow(stage: str) -> Callable[..., dict[str, Any]]:
    @flow(name=f"lmcore-stage-{stage}", log_prints=False)
    def stage_flow(config: PipelineConfig, refresh: bool = False, verify: bool = False,
                   overrides: Optional[list[str]] = None) -> dict[str, Any]:
        return run_stages(config.with_overrides(overrides), until=stage, refresh=stage if refresh else None,
                          verify=verify)

    stage_flow.__doc__ = f"Run the pipeline down to '{stage}' (upstream stages from cache)."
    return stage_flow


STAGE_FLOWS: dict[str, Callable[..., dict[str, Any]]] = {stage: _stage_flow(stage) for stage in STAGES}
validate_flow = STAGE_FLOWS["validate"]
shard_flow = STAGE_FLOWS["shard"]
tokenizer_flow = STAGE_FLOWS["tokenizer"]
pretokenize_flow = STAGE_FLOWS["pretokenize"]
train_flow = STAGE_FLOWS["train"]
evaluate_flow = STAGE_FLOWS["evaluate"]
register_flow = STAGE_FLOWS["register"]
