"""Registration completes: pending when MLflow is down, done by the next run, refused names caught early."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import cli
from flows.pipeline import pipeline
from lmcore.models_dir import ModelManager
from tests.flows.pipeline_fixtures import statuses, tiny_config, write_corpus


def _cfg(tmp_path, **sections):
    tracking = {"enabled": True, "registered_model_name": "pending-test", "request_timeout": 1,
                "request_retries": 0, **sections.pop("tracking", {})}
    return tiny_config(write_corpus(tmp_path / "corpus.jsonl", seed=5), tmp_path / "store", tmp_path / "models",
                       tracking=tracking, **sections)


def test_a_registration_mlflow_could_not_take_is_done_by_the_next_run(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: tracking is down
    down = pipeline(cfg)
    assert statuses(down)["register"] == "ran"
    summary = down["register"]["summary"]
    assert summary["pending"] and "pending" in down["register"]["figure"]
    model_id = summary["model_id"]
    assert ModelManager(cfg.paths.models).load_for_inference(model_id)  # the model itself is saved

    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # tracking is back (the embedded SQLite store)
    up = pipeline(cfg)
    assert statuses(up)["train"] == "cached" and statuses(up)["register"] == "ran"  # not "cached": it was owed
    registered = up["register"]["summary"]
    assert not registered["pending"] and registered["model_id"] == model_id  # the same folder, not a new one
    assert registered["mlflow"]["version"] == "1" and registered["mlflow"]["alias"] == "champion"
    assert [m["id"] for m in ModelManager(cfg.paths.models).list_models()] == [model_id]

    done = pipeline(cfg)
    assert statuses(done)["register"] == "cached"
    client = MlflowClient(cfg.tracking_uri())
    assert [str(v.version) for v in client.search_model_versions("name = 'pending-test'")] == ["1"]


@pytest.mark.parametrize("override", ["tracking.registered_model_name=team/model", "tracking.registered_model_name=",
                                      "tracking.run_name=" + "r" * 300, "tracking.champion_alias=latest"])
def test_a_name_mlflow_refuses_is_a_config_error_before_any_work(tmp_path, override, capsys):
    cfg = _cfg(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(cfg.to_yaml())
    assert cli.main(["run", str(config), "--set", override]) == 2
    err = capsys.readouterr().err
    assert override.split("=")[0] in err and "Traceback" not in err
    assert not Path(cfg.paths.store).exists() and not Path(cfg.paths.mlflow).exists()


def test_a_diverged_run_names_a_checkpoint_that_is_still_there(tmp_path, monkeypatch):
    from lmcore.errors import TrainingDivergedError
    from lmcore.train import trainer

    real = trainer.batch_loss_sum
    calls = []

    def nan_after_a_while(*args):  # the loss turns NaN after the first checkpoint (step 4)
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) > 5 else loss

    monkeypatch.setattr(trainer, "batch_loss_sum", nan_after_a_while)
    cfg = _cfg(tmp_path, tracking={"enabled": False},
               training={"max_steps": 30, "checkpoint_every": 4, "max_nonfinite_steps": 3})
    with pytest.raises(TrainingDivergedError) as caught:
        pipeline(cfg)
    named = Path(caught.value.checkpoint)
    assert named.name == "step-00000004" and (named / "model.safetensors").is_file()
    assert str(named) in str(caught.value)
