"""The registered pyfunc model and the champion/challenger rule, against a real SQLite MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from lmcore.tracking.pyfunc import pip_requirements, prompts_from
from lmcore.models_dir import ModelManager
from lmcore.tracking.run import PipelineTracker
from lmcore.tracking.client import scoped_tracking_uri
from lmcore.tracking.registry import list_registry_versions
from tests.lmcore.model_folder_fixture import make_model_folder
from tests.lmcore.test_tracking import make_cfg


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    cfg = make_cfg(tmp)
    folders = [make_model_folder(tmp / "models", seed=s, name=f"m{s}") for s in range(3)]
    results = []
    for folder, bpb in zip(folders, (2.0, 2.5, 1.5)):
        with PipelineTracker(cfg).run(f"flow-{folder.name}") as run:
            lineage = {"data_digest": f"digest-{bpb}", "train_key": "t" * 20, "tokenizer_key": "k" * 20}
            results.append(run.register(folder, lineage, {"bits_per_byte": bpb, "loss": 3.0}))
    return cfg, folders, results


def test_champion_moves_only_to_a_version_with_lower_bits_per_byte(store):
    cfg, _, results = store
    assert [(r["version"], r["alias"]) for r in results] == [("1", "champion"), ("2", "challenger"),
                                                             ("3", "champion")]
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    assert client.get_model_version_by_alias(cfg.tracking.registered_model_name, "champion").version in (3, "3")
    assert results[2]["previous_champion"] == "1"
    # registering leaves no MLFLOW_TRACKING_URI behind (it would override every later config's URI)
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_versions_carry_lineage_tags_and_list_with_aliases(store):
    cfg, folders, _ = store
    rows = list_registry_versions(cfg)
    assert [r["version"] for r in rows] == ["1", "2", "3"]
    assert [r["aliases"] for r in rows] == [[], ["challenger"], ["champion"]]
    assert [r["bits_per_byte"] for r in rows] == [2.0, 2.5, 1.5]
    assert [r["model_id"] for r in rows] == [f.name for f in folders]
    assert rows[0]["data_digest"] == "digest-2.0"
    tags = MlflowClient(tracking_uri=cfg.tracking_uri()).get_model_version(rows[0]["name"], "1").tags
    assert tags["lmcore.train_key"] == "t" * 20 and tags["lmcore.tokenizer_key"] == "k" * 20


def test_champion_pyfunc_generates_the_same_text_as_lmcore(store):
    from flows.commands._textgen import complete

    cfg, folders, _ = store
    with scoped_tracking_uri(cfg.tracking_uri()):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.registered_model_name}@champion")
    prompts = ["ROMEO:", "To be, or not"]
    got = pyfunc.predict(prompts, params={"temperature": 0.0, "max_new_tokens": 6})
    model, tok, *_ = ModelManager(folders[2].parent).load_model(folders[2].name)
    want = [complete(model, tok, p, max_new_tokens=6, temperature=0.0) for p in prompts]
    assert got == want and all(isinstance(t, str) and t for t in got)
    schema = pyfunc.metadata.get_input_schema()
    assert schema.input_types()[0].name == "string"
    assert {p.name for p in pyfunc.metadata.get_params_schema().params} >= {"max_new_tokens", "temperature"}


def test_logged_model_ships_pinned_requirements_weights_and_hf_export_without_optimizer(store):
    cfg, _, results = store
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    version = client.get_model_version(results[0]["name"], "1")
    with scoped_tracking_uri(cfg.tracking_uri()):  # models:/ URIs resolve through the global registry URI
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{results[0]['name']}/1"))
    reqs = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in reqs) and any(r.startswith("mlflow==") for r in reqs)
    shipped = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "metadata.json"} <= shipped
    assert "optimizer.pt" not in shipped
    hf_files = {f.path for f in client.list_artifacts(version.run_id, "hf_model")}
    assert "hf_model/generation_config.json" in hf_files and "hf_model/model.safetensors" in hf_files


def test_prompts_accept_strings_lists_and_dataframes():
    import pandas as pd

    assert prompts_from("a") == ["a"]
    assert prompts_from(["a", "b"]) == ["a", "b"]
    assert prompts_from(pd.DataFrame({0: ["x", "y"]})) == ["x", "y"]
    assert prompts_from([{"prompt": "p"}]) == ["p"]
    assert all("==" in r for r in pip_requirements() if r.split("==")[0] in ("torch", "mlflow"))
