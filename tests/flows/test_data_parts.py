"""The fan-out step of the data stages (``flows.data_parts``) inside a real Prefect flow: a run that was
killed while parsing keeps its finished parts, and the rerun parses only the missing ones."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.data_parts import parsed_parts
from flows.task_runners import LazyTaskRunner
from lmcore.config import DataConfig, OrchestrationConfig
from lmcore.data.parts import parse_part, parse_settings, plan_parts, write_plan
from lmcore.data.verdicts import stage_inputs
from lmcore.store import Store
from tests.flows.pipeline_fixtures import tiny_config, write_corpus


@flow
def parse_in_flow(files: list[str], config: dict, store: str, key: str) -> dict[str, int]:
    """What the pipeline does before the validate task: the parts' mtimes as the reduce would see them."""
    with LazyTaskRunner(OrchestrationConfig(**config["orchestration"])) as runner:
        with parsed_parts("validate", "validate", key, files, [], config, store, runner) as parts_dir:
            return {p.name: p.stat().st_mtime_ns for p in sorted(Path(parts_dir).glob("part-*.arrow"))}


def test_a_rerun_parses_only_the_parts_a_killed_run_did_not_finish(tmp_path):
    files = [str(write_corpus(tmp_path / f"c{i}.jsonl", records=30, seed=i)) for i in range(3)]
    cfg = tiny_config(Path(files[0]), tmp_path / "store", tmp_path / "models", orchestration={"part_bytes": 4096})
    config = cfg.model_dump(mode="json")
    config["data"]["training_data_path"] = files
    # the killed run: the plan was written and two parts finished before the kill
    data_cfg = DataConfig(**config["data"])
    parts = plan_parts(stage_inputs(files, data_cfg), 4096)
    assert len(parts) > 3
    parts_dir = Store(tmp_path / "store").parts_path("validate", "kk")
    write_plan(parts_dir, parts, parse_settings(data_cfg))
    finished = {f"part-{i:05d}.arrow": parse_part(parts_dir, i) and (parts_dir / f"part-{i:05d}.arrow").stat().st_mtime_ns
                for i in (0, 2)}
    seen = parse_in_flow(files, config, str(tmp_path / "store"), "kk")
    assert len(seen) == len(parts)
    assert {name: seen[name] for name in finished} == finished  # kept, not parsed again
    assert not parts_dir.exists()  # reduced and published: the folder is gone
