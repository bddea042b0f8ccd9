"""End to end through a real Prefect server: serve the flows, trigger a run over the API, get a model version.

Processes: ``prefect server start`` (own PREFECT_HOME in tmp), ``deployments/serve.py``
(PREFECT_API_URL at that server) and this test, which talks to the server's REST API
with urllib (no Prefect client state in the test process). The serving process is
stopped (SIGTERM) before the server, or it waits on "Pausing all deployments".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from lmcore.config import PipelineConfig
from lmcore.tracking.registry import list_registry_versions
from tests.flows.pipeline_fixtures import tiny_config, write_corpus
from tests.servers import BIN, free_port, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]


def api(base: str, path: str, body: dict | None = None, method: str | None = None) -> dict:
    """One REST call; 429/502/503 (a busy SQLite server) are retried like Prefect's own client does."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(6):
        req = urllib.request.Request(base + path, data=data, method=method or ("POST" if body is not None else "GET"),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 502, 503) or attempt == 5:
                raise
            time.sleep(0.5 * 2 ** attempt)


def tiny_yaml(tmp: Path) -> Path:
    corpus = write_corpus(tmp / "corpus.jsonl", records=60)
    cfg = tiny_config(corpus, tmp / "store", tmp / "models",
                      tracking={"enabled": True, "experiment_name": "e2e", "registered_model_name": "e2e-model",
                                "flush_every_seconds": 1.0})
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def test_served_pipeline_triggered_through_the_api_registers_a_model_version(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "MLFLOW_TRACKING_URI"))}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", MLFLOW_DISABLE_TELEMETRY="true",
               PREFECT_LOGGING_LEVEL="INFO")
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env={**env, "PREFECT_HOME": str(tmp_path / "server-home")}, cwd=tmp_path,
                              stdout=open(server_log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    serving = None
    t0 = time.monotonic()
    phases = {}
    try:
        config = tiny_yaml(tmp_path)
        wait_for("prefect server health", lambda: api(base, "/health") is True, 90, [server], [server_log])
        phases["server up"] = time.monotonic() - t0
        serving = subprocess.Popen(
            [sys.executable, str(ROOT / "deployments" / "serve.py"), "--config", str(config), "--name", "e2e"],
            env={**env, "PREFECT_API_URL": base, "PREFECT_HOME": str(tmp_path / "serve-home"),
                 "PYTHONPATH": str(ROOT)},
            cwd=tmp_path, stdout=open(serve_log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs, logs = [server, serving], [server_log, serve_log]

        def deployment(flow_name: str):
            try:
                return api(base, f"/deployments/name/{flow_name}/e2e")
            except urllib.error.HTTPError:
                return None

        dep = wait_for("the served deployment", lambda: deployment("lmcore-pipeline"), 90, procs, logs)
        assert dep["parameters"]["config"]["tracking"]["registered_model_name"] == "e2e-model"
        stage_dep = wait_for("a stage deployment", lambda: deployment("lmcore-stage-train"), 30, procs, logs)
        assert stage_dep["parameters"] == dep["parameters"] and dep["parameters"]["overrides"] == []
        phases["deployments served"] = time.monotonic() - t0

        # one key changed for this run only; the rest of the deployment's config stays as deployed
        run = api(base, f"/deployments/{dep['id']}/create_flow_run",
                  {"parameters": {"overrides": ["training.max_steps=2"]}})
        final = wait_for("the flow run to finish",
                         lambda: (r := api(base, f"/flow_runs/{run['id']}"))["state"]["type"]
                         in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and r, 150, procs, logs)
        assert final["state"]["type"] == "COMPLETED", serve_log.read_text()[-4000:]
        phases["flow run completed"] = time.monotonic() - t0
    finally:
        if serving is not None:
            stop(serving)
        stop(server)
        phases["stopped"] = time.monotonic() - t0
        print("e2e phases (s from start):", {k: round(v, 1) for k, v in phases.items()})

    cfg = PipelineConfig.from_yaml(config)
    versions = list_registry_versions(cfg)
    notes = [line for line in serve_log.read_text().splitlines() if "tracking" in line or "Error" in line]
    assert [v["version"] for v in versions] == ["1"], "\n".join(notes[-30:])
    assert versions[0]["aliases"] == ["champion"] and versions[0]["model_id"]
    assert (tmp_path / "models" / versions[0]["model_id"] / "model.safetensors").is_file()
    from mlflow import MlflowClient

    data = MlflowClient(tracking_uri=cfg.tracking_uri()).get_run(versions[0]["run_id"]).data
    assert data.tags["lmcore.flow_run_id"] == run["id"]
    assert cfg.training.max_steps == 3 and data.params["training.max_steps"] == "2"
    assert data.metrics["train/steps"] == 2 and data.params["training.batch_size"] == str(cfg.training.batch_size)
