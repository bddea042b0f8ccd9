"""``lmcore`` as users run it in CI, a log file or a deployment: a real subprocess, stdout piped.

One module-wide workspace: ``lmcore server start`` (Prefect's own server, recorded under the
workspace's PREFECT_HOME), one tracked run of a tiny model over a corpus shorter than
``training.max_steps`` (MLflow on SQLite, W&B offline), then the commands a user types after it,
then ``lmcore server stop``. What is checked is what the issue asked for: per-step lines off a
terminal and in Prefect's task log, no traceback without ``--debug``, a set ``max_steps`` that wins
over epochs, whole model ids and their aliases in ``models list``, one MLflow name per figure, the
same params and metrics in W&B, and ``--version``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.wandb_offline import read_run
from tests.flows.pipeline_fixtures import tiny_config, write_corpus

ROOT = Path(__file__).resolve().parents[2]
LMCORE = Path(sys.executable).parent / "lmcore"
MAX_STEPS = 40
LOG_EVERY = 5
STEP_LINE = re.compile(r"^train\s+step (\d+)/(\d+)\s+loss \d+\.\d+\s+lr \S+\s+[\d,]+ tok/s(\s+ETA \d+:\d\d)?$")

pytestmark = pytest.mark.slow


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "MLFLOW_TRACKING"))}
        self.env.update(PREFECT_HOME=str(root / ".prefect-home"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
                        COLUMNS="80", PREFECT_LOGGING_LEVEL="INFO")

    def lmcore(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(LMCORE), *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("piped")
    corpus = write_corpus(root / "corpus.jsonl", records=24, seed=3)  # about 20 training steps per epoch
    cfg = tiny_config(corpus, root / "store", root / "models",
                      data={"max_invalid_fraction": 0.2, "eval_split": 0.2},  # two planted bad lines in 26
                      training={"max_steps": MAX_STEPS, "log_every": LOG_EVERY, "eval_every": 20},
                      tracking={"enabled": True, "experiment_name": "piped", "registered_model_name": "piped-model",
                                "wandb": {"project": "lmcore-tests", "mode": "offline"}})
    (root / "config.yaml").write_text(cfg.to_yaml())
    w = Workspace(root)
    started = w.lmcore("server", "start", timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        w.run = w.lmcore("run", "config.yaml", "--no-sample")
        yield w
    finally:
        w.lmcore("server", "stop")


def _store_summary(ws: Workspace, stage: str) -> dict:
    [out] = [p for p in (ws.root / "store" / stage).iterdir() if (p / "manifest.json").is_file()]
    return json.loads((out / "manifest.json").read_text())["summary"] | {"dir": str(out)}


def test_piped_output_has_a_status_line_first_and_one_line_per_logged_step(ws):
    out = ws.run.stdout + ws.run.stderr
    assert ws.run.returncode == 0, out
    lines = ws.run.stdout.splitlines()
    assert lines[0].startswith("Prefect API http://127.0.0.1:") and "(lmcore server)" in lines[0]
    steps = [int(m.group(1)) for line in lines if (m := STEP_LINE.match(line))]
    assert steps == list(range(LOG_EVERY, MAX_STEPS + 1, LOG_EVERY)), out
    assert "Traceback" not in out


def test_a_set_max_steps_wins_over_epochs_and_the_summary_says_so(ws):
    train = _store_summary(ws, "train")
    assert train["steps"] == MAX_STEPS and train["stopped_by"] == "max_steps"
    assert train["epochs"] >= 2  # the corpus ran out and repeated: the test is about that case
    assert f"{MAX_STEPS} steps" in ws.run.stdout and "(max_steps)" in ws.run.stdout


def test_prefect_task_log_holds_the_per_step_lines(ws):
    db = ws.root / ".prefect-home" / "prefect.db"
    with sqlite3.connect(db) as con:
        messages = [m for (m,) in con.execute("select message from log")]
    steps = sorted(int(m.group(1)) for msg in messages if (m := re.match(r"step (\d+)/\d+\s+loss", msg)))
    assert steps == list(range(LOG_EVERY, MAX_STEPS + 1, LOG_EVERY))


def test_models_list_shows_whole_ids_and_aliases_without_a_config(ws):
    [model_id] = [p.name for p in (ws.root / "models").iterdir() if (p / "metadata.json").is_file()]
    listed = ws.lmcore("models", "list", "--models-dir", "models")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if model_id in line]  # the whole id, on one line
    assert "piped-model v1 champion" in row


def test_mlflow_has_one_name_per_figure(ws):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{ws.root / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("piped").experiment_id])
    names = set(run.data.metrics)
    assert {"train/loss", "train/lr", "val/loss", "eval/loss", "eval/bits_per_byte", "train/steps"} <= names
    assert all(re.match(r"(train|val|eval|validate|shard|tokenizer|pretokenize|register)/\w+$", n) for n in names)
    bare = [n.split("/", 1)[1] for n in names if n.startswith(("eval/", "val/"))]
    assert "eval_loss" not in bare and not any(n.startswith("train_final") for n in names)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(LOG_EVERY, MAX_STEPS + 1, LOG_EVERY))
    best = Path(run.data.tags["lmcore.train.best_checkpoint"])
    assert best.is_dir() and ".tmp" not in str(best) and best.is_relative_to(ws.root / "store")
    ws.mlflow_run = run


def test_wandb_offline_run_has_the_same_params_and_metrics(ws):
    if not hasattr(ws, "mlflow_run"):
        test_mlflow_has_one_name_per_figure(ws)
    run = ws.mlflow_run
    files = list((ws.root / "mlflow" / "wandb").glob(f"offline-run-*-{run.info.run_id}/run-*.wandb"))
    assert len(files) == 1, files
    wb = read_run(files[0])
    assert wb["run_id"] == run.info.run_id and wb["project"] == "lmcore-tests"
    params = {k: v for k, v in wb["config"].items() if not k.startswith("_")}
    assert params == run.data.params
    history = [(row["_step"], row["train/loss"]) for row in wb["history"] if "train/loss" in row]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{ws.root / 'mlflow' / 'mlflow.db'}")
    assert history == [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")]
    logged_once = {n: v for n, v in run.data.metrics.items() if not n.startswith(("train/l", "train/g", "val/"))}
    assert {n: wb["summary"].get(n) for n in logged_once} == pytest.approx(logged_once)


def test_a_failing_run_prints_one_line_and_the_log_file_holds_the_traceback(ws):
    bad = ws.root / "bad.jsonl"
    bad.write_text("{not json\n" * 5)
    config = ws.root / "bad.yaml"
    config.write_text(tiny_config(bad, ws.root / "bad-store", ws.root / "bad-models").to_yaml())
    failed = ws.lmcore("run", str(config), "--no-sample")
    assert failed.returncode == 1
    out = failed.stdout + failed.stderr
    assert "Traceback" not in out and "stage 'validate' failed" in out
    [error] = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert "bad.jsonl" in error
    log_file = Path(re.search(r"full log: (\S+)", out).group(1))
    assert "Traceback" in log_file.read_text()
    debug = ws.lmcore("run", str(config), "--no-sample", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_version_and_server_status(ws):
    import lmcore

    version = ws.lmcore("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"lmcore {lmcore.__version__}")
    status = ws.lmcore("server", "status")
    assert status.returncode == 0 and "http://127.0.0.1:" in status.stdout
