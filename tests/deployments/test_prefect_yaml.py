"""deployments/prefect.yaml points at real flows with parameters those flows accept."""

from __future__ import annotations

from pathlib import Path

import yaml

from lmcore.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_names_an_importable_flow_and_a_valid_config(monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(ROOT)  # the pull step runs flows from the repository root
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    deployments = spec["deployments"]
    assert {d["entrypoint"] for d in deployments} >= {"flows/pipeline.py:pipeline", "flows/stages.py:train_flow"}
    flow_names = set()
    for dep in deployments:
        flow = load_flow_from_entrypoint(dep["entrypoint"])
        flow_names.add(flow.name)
        assert set(dep["parameters"]) <= set(flow.parameters.properties)
        cfg = PipelineConfig.from_dict(dep["parameters"]["config"])
        assert all(Path(p).is_file() for p in cfg.data.training_data_path)
        assert dep["work_pool"]["name"] == "lmcore-process"
    assert len(flow_names) == len(deployments)  # one deployment per flow: `prefect deployment run FLOW/demo`
    assert "lmcore-pipeline" in flow_names
