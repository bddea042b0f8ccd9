"""The whole pipeline in process with a real Prefect: tiny model, tiny corpus, 3 training steps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flows.pipeline import STAGES, pipeline
from lmcore.models_dir import ModelManager
from lmcore.store import Store
from tests.flows.pipeline_fixtures import statuses, tiny_config, write_corpus

ABOVE_TRAIN = ("validate", "shard", "tokenizer", "pretokenize")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    return {"corpus": write_corpus(root / "corpus.jsonl", seed=1), "store": root / "store", "models": root / "models",
            "root": root}


def cfg_for(workdir, **sections):
    return tiny_config(workdir["corpus"], workdir["store"], workdir["models"], **sections)


class CompileCacheSeen:
    """A train callback noting where inductor's cache pointed while training ran."""

    seen: list = []

    def on_train_start(self, info):
        self.seen.append(os.environ.get("TORCHINDUCTOR_CACHE_DIR"))


@pytest.fixture(scope="module")
def first_run(workdir):
    from tasks.hooks import TRAIN_CALLBACKS

    users_cache = os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    TRAIN_CALLBACKS.append(CompileCacheSeen())
    try:
        return pipeline(cfg_for(workdir))
    finally:
        TRAIN_CALLBACKS.clear()
        CompileCacheSeen.after = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        if users_cache is not None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = users_cache


def test_full_run_registers_a_loadable_model_with_lineage_to_every_stage(first_run, workdir):
    assert statuses(first_run) == {s: "ran" for s in STAGES}
    model_id = first_run["register"]["summary"]["model_id"]
    model, tok, meta, _, _ = ModelManager(workdir["models"]).load_model(model_id)
    assert model.config.hidden_size == 32 and tok.vocab_size <= 300
    assert meta["lineage"]["train"] == first_run["train"]["key"]
    assert meta["lineage"]["eval"] == first_run["evaluate"]["key"]
    assert meta["eval_metrics"]["eval_loss"] == pytest.approx(first_run["evaluate"]["summary"]["eval_loss"])
    train_manifest = Store(workdir["store"]).get("train", first_run["train"]["key"]).manifest
    assert train_manifest["inputs"]["tokenizer"] == first_run["tokenizer"]["key"]
    assert any(f["name"] == "final/model.safetensors" for f in train_manifest["files"])


def test_training_keeps_compiled_graphs_in_the_store_and_gc_leaves_them(first_run, workdir):
    cache = Path(workdir["store"]) / ".compile-cache"
    assert CompileCacheSeen.seen == [str(cache)]          # inductor's cache pointed there during training
    assert CompileCacheSeen.after is None                 # and only then
    (cache / ".tmp-inductor-writes").mkdir(parents=True)  # what inductor's atomic writes might leave there
    assert all(".compile-cache" not in str(entry.path) for entry in Store(workdir["store"]).abandoned())


def test_second_run_with_nothing_changed_is_all_cached_and_registers_nothing_new(first_run, workdir):
    again = pipeline(cfg_for(workdir))
    assert statuses(again) == {s: "cached" for s in STAGES}
    assert again["register"]["summary"]["model_id"] == first_run["register"]["summary"]["model_id"]
    assert len(ModelManager(workdir["models"]).list_models()) == 1


def test_changing_only_a_training_setting_reruns_train_evaluate_register_only(first_run, workdir):
    records = pipeline(cfg_for(workdir, training={"learning_rate": 1e-3}))
    assert statuses(records) == {**{s: "cached" for s in ABOVE_TRAIN},
                                 "train": "ran", "evaluate": "ran", "register": "ran"}
    assert records["train"]["key"] != first_run["train"]["key"]


def test_failing_stage_fails_the_flow_with_its_own_message_and_keeps_finished_outputs(first_run, workdir):
    blocker = workdir["root"] / "not-a-folder"
    blocker.write_text("a file where the models folder should be")
    cfg = tiny_config(workdir["corpus"], workdir["store"], blocker, training={"learning_rate": 2e-3})
    trained_before = set((workdir["store"] / "train").iterdir())
    with pytest.raises(OSError, match="not-a-folder"):
        pipeline(cfg)
    store = Store(workdir["store"])
    [new] = set((workdir["store"] / "train").iterdir()) - trained_before  # this config's training, finished
    assert store.exists("train", new.name)
    fixed = pipeline(cfg_for(workdir, training={"learning_rate": 2e-3}))
    assert statuses(fixed)["train"] == "cached" and statuses(fixed)["evaluate"] == "cached"
    assert statuses(fixed)["register"] == "ran"


def test_deleted_store_directory_is_recomputed_although_prefect_remembers_it(first_run, workdir):
    import shutil

    shutil.rmtree(first_run["evaluate"]["dir"])
    shutil.rmtree(first_run["pretokenize"]["dir"][0])  # one of the mapped shard outputs
    records = pipeline(cfg_for(workdir))
    assert statuses(records)["pretokenize"] == "ran" and Path(first_run["pretokenize"]["dir"][0]).is_dir()
    assert statuses(records)["evaluate"] == "ran" and statuses(records)["train"] == "cached"
    assert json.loads((Path(records["evaluate"]["dir"]) / "metrics.json").read_text())["eval_loss"] > 0


def test_with_tracking_the_run_carries_stage_keys_registers_a_version_and_cached_reruns_log_nothing(first_run, workdir):
    from mlflow import MlflowClient

    cfg = cfg_for(workdir, tracking={"enabled": True, "registered_model_name": "tiny-test"})
    records = pipeline(cfg)
    assert statuses(records)["train"] == "cached" and statuses(records)["register"] == "ran"
    client = MlflowClient(cfg.tracking_uri())
    run = client.get_run(records["_run"]["mlflow_run_id"])
    assert run.data.tags["lmcore.train.key"] == records["train"]["key"]
    assert run.data.tags["lmcore.tokenizer.key"] == records["tokenizer"]["key"]
    registered = records["register"]["summary"]["mlflow"]
    assert registered["name"] == "tiny-test" and str(registered["version"]) == "1"
    version = client.get_model_version("tiny-test", "1")
    assert version.run_id == run.info.run_id
    again = pipeline(cfg)
    assert set(statuses(again).values()) == {"cached"} and again["_run"]["mlflow_run_id"] is None
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    assert len(client.search_runs([experiment.experiment_id])) == 1  # a fully cached rerun opens no MLflow run


def test_models_list_shows_registry_versions_and_aliases_beside_local_models(first_run, workdir, capsys):
    import yaml

    from flows import cli

    cfg = cfg_for(workdir, tracking={"enabled": True, "registered_model_name": "tiny-test"})
    pipeline(cfg)  # registered by the tracking test above, or now when run alone
    config_file = workdir["root"] / "tracked.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    capsys.readouterr()
    assert cli.main(["models", "list", "--models-dir", str(workdir["models"]), "--config", str(config_file),
                     "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    registry = listing["registry"]
    assert registry and registry[0]["name"] == "tiny-test" and registry[0]["version"] == "1"
    assert "champion" in registry[0]["aliases"]
    assert registry[0]["model_id"] in {m["id"] for m in listing["models"]}
