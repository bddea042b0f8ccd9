"""Another `lmcore run` process on the same store at the same time as this one.

The subprocess gets a fresh PREFECT_HOME; this process's Prefect has never seen
the store either. This process starts once the other one is training, so it
finds the upstream stages only in the store ("cached (store)": Prefect's memory
is not needed) and trains the same key concurrently: both runs finish, one
publication wins, and the store is left intact (no temp dirs, every sha256 right).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from flows.pipeline import pipeline
from lmcore.store import MANIFEST, Store
from tests.flows.pipeline_fixtures import statuses, tiny_config, write_corpus

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the other run never started training"
        time.sleep(0.05)


def test_concurrent_run_in_another_process_leaves_the_store_intact(tmp_path):
    cfg = tiny_config(write_corpus(tmp_path / "corpus.jsonl", seed=2), tmp_path / "store", tmp_path / "models",
                      training={"max_steps": 6})
    config = tmp_path / "config.yaml"
    config.write_text(cfg.to_yaml())
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "other-home"), "PYTHONPATH": str(ROOT)}
    other = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config), "--no-sample",
                              "--report", str(tmp_path / "other.json")], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    train_dir = tmp_path / "store" / "train"
    _wait_for(lambda: train_dir.is_dir() and any(p.name.startswith(".work-") for p in train_dir.iterdir()), other)

    mine = pipeline(cfg)
    output = other.communicate(timeout=400)[0]
    assert other.returncode == 0, output
    theirs = json.loads((tmp_path / "other.json").read_text())

    assert {statuses(mine)[s] for s in ("validate", "shard", "tokenizer", "pretokenize")} == {"cached (store)"}
    assert statuses(mine)["train"] == "cached (store)" and statuses(theirs)["train"] == "ran"
    assert mine["train"]["key"] == theirs["train"]["key"] and mine["evaluate"]["key"] == theirs["evaluate"]["key"]
    store = Store(tmp_path / "store")
    for stage_dir in (tmp_path / "store").iterdir():
        leftovers = [p.name for p in stage_dir.iterdir() if p.name.startswith(".")]
        assert leftovers == [], f"{stage_dir.name}: {leftovers}"
        for out in stage_dir.iterdir():
            assert (out / MANIFEST).is_file() and store.verify(stage_dir.name, out.name) == []
