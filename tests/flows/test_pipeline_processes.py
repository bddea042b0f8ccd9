"""Two `lmcore run` processes on one store at once, then a run that only the store remembers.

Each process gets its own fresh PREFECT_HOME (no Prefect cache to lean on), so
both compute every stage and race to publish the same keys in the same store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from flows.pipeline import STAGES, pipeline
from lmcore.store import MANIFEST, Store
from tests.flows.pipeline_fixtures import statuses, tiny_config, write_corpus

ROOT = Path(__file__).resolve().parents[2]


def _launch(config: Path, home: Path, report: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config), "--no-sample",
                             "--report", str(report)], cwd=config.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_concurrent_runs_leave_the_store_intact_and_a_fresh_prefect_still_hits_the_store(tmp_path):
    cfg = tiny_config(write_corpus(tmp_path / "corpus.jsonl", seed=2), tmp_path / "store", tmp_path / "models")
    config = tmp_path / "config.yaml"
    config.write_text(cfg.to_yaml())
    procs = [_launch(config, tmp_path / f"home-{i}", tmp_path / f"report-{i}.json") for i in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all("validate" in out and "register" in out for out in outputs)

    reports = [json.loads((tmp_path / f"report-{i}.json").read_text()) for i in range(2)]
    for stage in ("validate", "shard", "tokenizer", "train", "evaluate"):
        assert reports[0][stage]["key"] == reports[1][stage]["key"]
    store = Store(tmp_path / "store")
    for stage_dir in (tmp_path / "store").iterdir():
        leftovers = [p.name for p in stage_dir.iterdir() if p.name.startswith(".")]
        assert leftovers == [], f"{stage_dir.name}: {leftovers}"
        for out in stage_dir.iterdir():
            assert (out / MANIFEST).is_file() and store.verify(stage_dir.name, out.name) == []

    # This process's Prefect has never seen this store: only the store can say the work is done.
    records = pipeline(tiny_config(tmp_path / "corpus.jsonl", tmp_path / "store", tmp_path / "models"))
    assert set(statuses(records).values()) == {"cached (store)"}
    assert records["register"]["summary"]["model_id"] in {r["register"]["summary"]["model_id"] for r in reports}
    assert yaml.safe_load(config.read_text())["tokenizer"]["vocab_size"] == 300
    assert set(statuses(records)) == set(STAGES)
