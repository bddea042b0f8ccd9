"""PipelineTracker against a real MLflow store (SQLite in tmp_path)."""

from __future__ import annotations

import json
import time
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lmcore.config import PipelineConfig
from lmcore.tracking.run import NullRun, PipelineTracker, dataset_digest
from lmcore.tracking.buffer import MetricBuffer
from tests.servers import free_port, start_mlflow_server, stop


def make_cfg(tmp_path: Path, **tracking) -> PipelineConfig:
    return PipelineConfig.from_dict({
        "paths": {"store": str(tmp_path / "store"), "models": str(tmp_path / "models"),
                  "mlflow": str(tmp_path / "mlflow")},
        "tracking": {"experiment_name": "test-exp", "flush_every_seconds": 0.2, **tracking},
    })


def client_for(cfg: PipelineConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=cfg.tracking_uri())


def test_run_uses_sqlite_under_paths_mlflow_and_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(tmp_path)
    with PipelineTracker(cfg).run("flow-123") as run:
        run_id = run.run_id
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    got = client_for(cfg).get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.tags["lmcore.flow_run_id"] == "flow-123"
    exp = client_for(cfg).get_experiment(got.info.experiment_id)
    assert exp.artifact_location == (tmp_path / "mlflow" / "mlartifacts").resolve().as_uri()


def test_run_is_marked_failed_when_the_block_raises(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(RuntimeError):
        with PipelineTracker(cfg).run(None) as run:
            run_id = run.run_id
            raise RuntimeError("stage broke")
    assert client_for(cfg).get_run(run_id).info.status == "FAILED"


def test_log_config_records_every_flat_key_as_a_param_and_the_yaml(tmp_path, monkeypatch):
    monkeypatch.setattr("lmcore.tracking.run.MAX_PARAMS_PER_BATCH", 30)  # several batches, like a >100-key config
    cfg = make_cfg(tmp_path)
    cfg.training.sample_prompts = ["x" * 7000]  # longer than MLflow's 6000-char limit
    with PipelineTracker(cfg).run() as run:
        n = run.log_config()
        run_id = run.run_id
    params = client_for(cfg).get_run(run_id).data.params
    assert n == len(cfg.flat()) > 60
    assert set(params) == set(cfg.flat())
    assert params["training.learning_rate"] == str(cfg.training.learning_rate)
    assert len(params["training.sample_prompts"]) == 6000
    local = client_for(cfg).download_artifacts(run_id, "config/config.yaml", str(tmp_path / "dl"))
    assert PipelineConfig.from_yaml(local).training.learning_rate == cfg.training.learning_rate


def test_resume_writes_into_the_same_run_from_another_tracker(tmp_path):
    cfg = make_cfg(tmp_path)
    with PipelineTracker(cfg).run() as run:
        run_id = run.run_id
        with PipelineTracker(cfg).resume(run_id) as again:
            again.log_stage("shard", "abc123", {"train_rows": 90, "eval_rows": 10, "note": "ok", "files": [1]})
    data = client_for(cfg).get_run(run_id).data
    assert data.tags["lmcore.shard.key"] == "abc123"
    assert data.tags["lmcore.shard.note"] == "ok"
    assert data.metrics == {"shard/train_rows": 90.0, "shard/eval_rows": 10.0}


def test_log_dataset_records_a_dataset_input_with_the_shard_digest(tmp_path):
    cfg = make_cfg(tmp_path)
    manifest = {"stage": "shard", "key": "k" * 20,
                "files": [{"name": "train-00000.parquet", "bytes": 10, "sha256": "a" * 64},
                          {"name": "eval-00000.parquet", "bytes": 5, "sha256": "b" * 64}]}
    with PipelineTracker(cfg).run() as run:
        digest = run.log_dataset(manifest)
        run_id = run.run_id
    got = client_for(cfg).get_run(run_id)
    (inp,) = got.inputs.dataset_inputs
    assert inp.dataset.digest == digest == dataset_digest(manifest)
    assert inp.dataset.name.startswith("lmcore-shards-kkkk")
    assert "store/shards/" + "k" * 20 in inp.dataset.source
    assert got.data.tags["lmcore.data.digest"] == digest
    other = dict(manifest, files=[dict(manifest["files"][0], sha256="c" * 64), manifest["files"][1]])
    assert dataset_digest(other) != digest


def test_artifacts_land_in_the_run(tmp_path):
    cfg = make_cfg(tmp_path)
    report = tmp_path / "validate" / "report.json"
    report.parent.mkdir()
    report.write_text(json.dumps({"valid": 3}))
    (report.parent / "quarantine.jsonl").write_text("{}\n")
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    with PipelineTracker(cfg).run() as run:
        run.log_validation_report(report)
        run.log_tokenizer(tok)
        run_id = run.run_id
    client = client_for(cfg)
    names = {f.path for f in client.list_artifacts(run_id, "validation")}
    assert names == {"validation/report.json", "validation/quarantine.jsonl"}
    assert [f.path for f in client.list_artifacts(run_id, "tokenizer")] == ["tokenizer/tokenizer.json"]


def test_train_callback_sends_metrics_in_batches_and_logs_a_loss_curve(tmp_path):
    cfg = make_cfg(tmp_path, flush_every_seconds=60)
    with PipelineTracker(cfg).run() as run:
        cb = run.train_callback()
        cb.on_train_start({"parameters": 1234})
        for step in range(1, 201):
            cb.on_log(step, {"loss": 5.0 - step / 100, "lr": 1e-3, "grad_norm": 0.5, "step": step})
            if step % 50 == 0:
                cb.on_eval(step, {"eval_loss": 5.1 - step / 100, "eval_perplexity": 100.0, "is_best": True})
        cb.on_train_end({"steps": 200, "tokens": 51200})
        run_id = run.run_id
    client = client_for(cfg)
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, 201))
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [50, 100, 150, 200]
    logged = client.get_run(run_id).data.metrics
    assert logged["val/perplexity"] == 100.0
    assert cb.val_loss[0] == (50, 4.6)
    # one name per figure: train/ and val/ only (the summary's totals come with the stage, once)
    assert set(logged) == {"train/loss", "train/lr", "train/grad_norm", "val/loss", "val/perplexity"}
    assert client.get_run(run_id).data.tags["lmcore.train.parameters"] == "1234"
    # 608 values: one flush at close, one log_batch call per 1000 metrics
    assert cb.buffer.sent == 608 and cb.buffer.batches_sent == 1
    assert [f.path for f in client.list_artifacts(run_id, "plots")] == ["plots/loss_curve.png"]
    png = client.download_artifacts(run_id, "plots/loss_curve.png", str(tmp_path / "dl"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_disabled_tracking_and_other_ranks_log_nothing(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, enabled=False)
    with PipelineTracker(cfg).run() as run:
        assert isinstance(run, NullRun) and run.run_id is None
        run.log_config()
        run.train_callback().on_log(1, {"loss": 1.0})
    monkeypatch.setenv("RANK", "1")
    with PipelineTracker(make_cfg(tmp_path)).run() as run:
        assert isinstance(run, NullRun)
    assert not (tmp_path / "mlflow").exists()


def test_unreachable_tracking_server_gives_a_warning_not_a_failure(tmp_path, caplog):
    cfg = make_cfg(tmp_path, uri=f"http://127.0.0.1:{free_port()}", request_retries=0, request_timeout=2)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="lmcore.tracking"):
        with PipelineTracker(cfg).run("flow") as run:
            run.log_config()
            cb = run.train_callback()
            cb.on_log(1, {"loss": 1.0})
            cb.on_train_end({})
    assert isinstance(run, NullRun)
    assert time.monotonic() - start < 15
    assert sum("cannot start an MLflow run" in r.message for r in caplog.records) == 1


def test_metric_buffer_keeps_metrics_while_sending_fails_and_warns_once(caplog):
    sent: list = []
    state = {"down": True}

    def send(batch):
        if state["down"]:
            raise ConnectionError("server down")
        sent.extend(batch)

    buf = MetricBuffer(send, flush_every=0.05, backoff_start=0.05, backoff_max=0.2, max_pending=1000)
    with caplog.at_level("WARNING", logger="lmcore.tracking"):
        for step in range(300):
            buf.add("loss", 1.0, step)
            time.sleep(0.001)
        time.sleep(0.3)
        assert buf.failures >= 2 and sent == []
        state["down"] = False
        assert buf.close(timeout=5) == 0
    assert [m.step for m in sent] == list(range(300))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "retrying with backoff" in warnings[0].message


def test_metric_buffer_is_bounded_and_reports_what_was_lost(caplog):
    def send(batch):
        raise ConnectionError("down")

    buf = MetricBuffer(send, background=False, max_pending=100)
    for step in range(250):
        buf.add("loss", 1.0, step)
    assert buf.pending == 100 and buf.dropped == 150
    with caplog.at_level("WARNING", logger="lmcore.tracking"):
        assert buf.close(timeout=0.2) == 250
    assert any("could not be sent" in r.message for r in caplog.records)


def test_metrics_logged_while_the_server_is_down_arrive_once_it_is_up(tmp_path, caplog):
    """A real ``mlflow server`` that is not up yet: training goes on, metrics arrive when it starts.

    The run is created in the SQLite store the server will serve (one server start instead of a
    stop and a restart keeps this test within its time budget); the callback talks HTTP only.
    """
    local = make_cfg(tmp_path)
    with PipelineTracker(local).run("flow-x") as run:
        run_id = run.run_id
    port = free_port()
    cfg = make_cfg(tmp_path, uri=f"http://127.0.0.1:{port}", request_retries=0, request_timeout=15,
                   flush_every_seconds=0.2, final_flush_timeout=30)
    server = None
    try:
        with caplog.at_level("WARNING", logger="lmcore.tracking"):
            with PipelineTracker(cfg).resume(run_id) as run:
                cb = run.train_callback()
                t0 = time.monotonic()
                for step in range(1, 21):  # the server is down: training is not held up
                    cb.on_log(step, {"loss": 3.0 - step / 10})
                    time.sleep(0.05)
                assert time.monotonic() - t0 < 5.0
                assert cb.buffer.pending == 20 and cb.buffer.failures >= 1
                server = start_mlflow_server(port, tmp_path / "mlflow" / "mlflow.db", tmp_path / "server.log",
                                             ["--artifacts-destination", str(tmp_path / "server-artifacts")],
                                             timeout=60, cwd=tmp_path)
                for step in range(21, 31):
                    cb.on_log(step, {"loss": 3.0 - step / 10})
                cb.on_train_end({"steps": 30})
        history = MlflowClient(tracking_uri=cfg.tracking_uri()).get_metric_history(run_id, "train/loss")
        assert [m.step for m in history] == list(range(1, 31))
        assert cb.unsent == 0
        assert sum("retrying with backoff" in r.message for r in caplog.records) == 1
    finally:
        if server is not None:
            stop(server)


def test_stage_summaries_get_one_name_per_figure(tmp_path):
    """The train totals that restate a history point are not logged again; the evaluate stage's figures
    are its eval/ metrics only, without the copies of the train figures it carries."""
    cfg = make_cfg(tmp_path)
    train = {"steps": 30, "tokens": 960, "final_loss": 4.2, "final_eval_loss": 4.4, "best_eval_loss": 4.3,
             "tokens_per_sec": 800.0, "mfu": None, "stopped_by": "max_steps", "best_checkpoint": "final"}
    evaluation = {"eval_loss": 4.1, "perplexity": 60.3, "bits_per_byte": 2.5, "eval_tokens_per_sec": 900.0,
                  "train_tokens_per_sec": 800.0, "step": 30, "checkpoint": "/x/final"}
    with PipelineTracker(cfg).run() as run:
        run.log_stage("train", "k1", train)
        run.log_stage("evaluate", "k2", evaluation)
        run.log_eval(evaluation)
        run_id = run.run_id
    data = client_for(cfg).get_run(run_id).data
    assert data.metrics == {"train/steps": 30, "train/tokens": 960, "val/best_loss": 4.3,
                            "train/mean_tokens_per_sec": 800.0, "eval/loss": 4.1, "eval/perplexity": 60.3,
                            "eval/bits_per_byte": 2.5, "eval/tokens_per_sec": 900.0}
    assert data.tags["lmcore.train.stopped_by"] == "max_steps" and data.tags["lmcore.evaluate.key"] == "k2"


def test_wandb_needs_mlflow_tracking_on_and_the_package_installed(monkeypatch):
    from lmcore.errors import ConfigError
    from lmcore.tracking.wandb_mirror import check_installed

    with pytest.raises(ConfigError, match="tracking.wandb mirrors the MLflow run"):
        PipelineConfig.from_dict({"tracking": {"enabled": False, "wandb": {"project": "p"}}})
    cfg = PipelineConfig.from_dict({"tracking": {"wandb": {"project": "p", "mode": "offline"}}})
    check_installed(cfg)  # installed here (the dev extra)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as on a machine without the wandb extra
    with pytest.raises(ConfigError, match=r"pip install 'lmcore\[wandb\]'") as err:
        check_installed(cfg)
    assert err.value.key == "tracking.wandb"
