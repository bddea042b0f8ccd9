"""Helpers for the durability tests: a workspace, ``lmcore`` as a real subprocess, what the store holds.

The subprocess is ``tests/flows/lmcore_under_test.py`` (``lmcore`` plus test-only fault injection).
Every workspace of a test module shares one warm ``PREFECT_HOME`` so that Prefect's database is
migrated once, not once per run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tests.flows.pipeline_fixtures import tiny_config, write_corpus

ROOT = Path(__file__).resolve().parents[2]
UNDER_TEST = Path(__file__).with_name("lmcore_under_test.py")
MAX_STEPS = 120


@dataclass
class Workspace:
    root: Path
    config: Path
    prefect_home: Path

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LMCORE_TEST_")}
        env.update(PREFECT_HOME=str(self.prefect_home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
                   PREFECT_LOGGING_LEVEL="WARNING")
        env.pop("PREFECT_API_URL", None)
        env.update(extra)
        return env

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        """``lmcore run CONFIG --no-sample ARGS`` in the background; stdout/stderr captured as text."""
        return subprocess.Popen([sys.executable, str(UNDER_TEST), "run", str(self.config), "--no-sample", *args],
                                cwd=self.root, env=self.env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def run(self, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
        proc = self.start(*args, **env)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def work_dirs(self, stage: str = "train") -> list[Path]:
        d = self.store / stage
        return sorted(p for p in d.iterdir() if p.name.startswith(".work-") and p.is_dir()) if d.is_dir() else []

    def outputs(self, stage: str) -> list[Path]:
        d = self.store / stage
        return sorted(p for p in d.iterdir() if (p / "manifest.json").is_file()) if d.is_dir() else []

    def train_summary(self) -> dict:
        [out] = self.outputs("train")
        return json.loads((out / "manifest.json").read_text())["summary"]


def make_workspace(root: Path, prefect_home: Path, corpus: Optional[Path] = None, tracking: bool = True,
                   **sections) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    corpus = corpus or write_corpus(root / "corpus.jsonl", seed=7)
    training = {"max_steps": MAX_STEPS, "checkpoint_every": 20, "keep_last_checkpoints": 2, "log_every": 10,
                "eval_every": 1000, **sections.pop("training", {})}
    tracking_cfg = {"enabled": tracking, "registered_model_name": "durable", "request_timeout": 2,
                    "request_retries": 0, **sections.pop("tracking", {})}
    cfg = tiny_config(corpus, root / "store", root / "models", training=training, tracking=tracking_cfg,
                      **sections)
    cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"mlflow": str(root / "mlflow")})})
    config = root / "config.yaml"
    config.write_text(cfg.to_yaml())
    return Workspace(root, config, prefect_home)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended ({proc.returncode}) before {what}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def checkpoint_steps(work: Path) -> list[int]:
    """Steps of the complete step checkpoints in a training work directory."""
    ckpts = work / "checkpoints"
    if not ckpts.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in ckpts.glob("step-*") if (p / "metadata.json").is_file())


def stopped_step(stderr: str) -> int:
    found = re.search(r"after step (\d+)", stderr)
    assert found, stderr
    return int(found.group(1))


def servers_tied_to(pid: int) -> list[int]:
    """Pids of lmcore API servers started for ``pid`` (``--exit-with PID``) that are still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"flows.api_server" in args and b"--exit-with" in args and str(pid).encode() in args:
            try:
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if state != "Z":
                found.append(int(entry.name))
    return found


def no_server_outlives(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while servers_tied_to(pid):
        if time.monotonic() > deadline:
            for orphan in servers_tied_to(pid):
                os.kill(orphan, signal.SIGKILL)
            return False
        time.sleep(0.1)
    return True


def registry(ws: Workspace):
    """``(version numbers of 'durable', {alias: version}, runs of the experiment)`` from the workspace's MLflow."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=ws.mlflow_uri, registry_uri=ws.mlflow_uri)
    versions = [str(v.version) for v in client.search_model_versions("name = 'durable'")]
    aliases = {a: str(v) for a, v in client.get_registered_model("durable").aliases.items()} if versions else {}
    experiment = client.get_experiment_by_name("lmcore")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return versions, aliases, runs
