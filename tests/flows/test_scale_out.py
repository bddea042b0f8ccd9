"""The data stages on other task runners (``orchestration``): a real Dask cluster reached by its address.

Whatever runs the parts (one thread, or two Dask worker processes), the store gets the same keys and
the same bytes; the cluster's scheduler really ran the tasks; a worker that cannot see the store fails
the run with an error that says so (a worker in its own mount namespace, where the store's folder
is an empty tmpfs, as on a host that does not mount the shared filesystem).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.stages import STAGE_FLOWS
from tests.flows.pipeline_fixtures import tiny_config, write_corpus

distributed = pytest.importorskip("distributed")  # the dev extra installs it; `pip install -e .[dask]` too
pytestmark = pytest.mark.slow

PART_BYTES = 8192  # several byte ranges per file: the division differs from one file per task


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = [write_corpus(root / f"corpus-{i}.jsonl", records=40, seed=i) for i in range(3)]
    copies = root / "corpus-3.jsonl"  # the fourth file repeats records of the first: cross-file duplicates
    copies.write_text("".join(files[0].read_text().splitlines(keepends=True)[10:30]) * 2)
    return root, [str(p) for p in files + [copies]]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


def config(root: Path, files: list[str], name: str, **orchestration):
    cfg = tiny_config(Path(files[0]), root / name / "store", root / name / "models",
                      data={"max_invalid_fraction": 0.2},
                      orchestration={"part_bytes": PART_BYTES, **orchestration})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"training_data_path": files})})


def outputs(store: Path) -> dict[str, bytes]:
    """Every file the data stages stored, by stage/key/name (manifests hold timings: left out)."""
    return {str(p.relative_to(store)): p.read_bytes() for stage in ("validate", "shards", "tokens")
            for p in sorted((store / stage).rglob("*")) if p.is_file() and p.name != "manifest.json"}


@pytest.fixture(scope="module")
def threads_run(corpus):
    root, files = corpus
    cfg = config(root, files, "threads", task_runner="threads", max_workers=1)
    return STAGE_FLOWS["pretokenize"](config=cfg), cfg


def test_a_dask_cluster_by_address_runs_the_parts_and_stores_the_same_bytes(corpus, cluster, threads_run):
    root, files = corpus
    reference, reference_cfg = threads_run
    cfg = config(root, files, "dask", task_runner="dask", dask_address=cluster.scheduler_address)
    records = STAGE_FLOWS["pretokenize"](config=cfg)
    assert {s: r["key"] for s, r in records.items() if not s.startswith("_")} == \
        {s: r["key"] for s, r in reference.items() if not s.startswith("_")}
    # one worker thread against two Dask worker processes, parts in 8 KiB byte ranges of 4 files
    ours, theirs = outputs(Path(cfg.paths.store)), outputs(Path(reference_cfg.paths.store))
    assert ours == theirs and any(name.startswith("tokens/") for name in ours)
    report = json.loads(next(v for n, v in ours.items() if n.endswith("report.json")))
    assert report["reasons"]["duplicate"] >= 20 and len(report["files"]) == 4  # decided across files
    plan_parts = len(list((root / "dask").rglob("part-*.arrow")))  # parts are removed once reduced
    assert plan_parts == 0
    seen = cluster.scheduler.task_prefixes  # what the scheduler ran, by task-name prefix
    assert any(name.startswith("parse") for name in seen) and any("pretokenize" in name for name in seen), seen
    workers = {w for ts in cluster.scheduler.tasks.values() for w in ([ts.processing_on] if ts.processing_on else [])}
    assert len(cluster.scheduler.workers) == 2 and workers <= set(cluster.scheduler.workers)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare(1) with mount namespaces to hide the store")
def test_a_worker_that_cannot_see_the_store_fails_the_run_saying_so(corpus, tmp_path):
    from lmcore.errors import StoreError

    root, files = corpus
    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as blind:
        hidden = tmp_path  # the store lives here; the worker sees an empty tmpfs at this path
        worker = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs none {hidden} && exec {sys.executable} -m distributed.cli.dask_worker "
             f"{blind.scheduler_address} --nworkers 1 --nthreads 1 --no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            from distributed import Client

            with Client(blind.scheduler_address) as client:
                client.wait_for_workers(1, timeout=60)
            cfg = config(tmp_path, files, "blind", task_runner="dask", dask_address=blind.scheduler_address)
            with pytest.raises(StoreError, match=r"cannot see the store: .*plan\.json.*every worker mounts"):
                STAGE_FLOWS["validate"](config=cfg)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert not list((tmp_path / "blind" / "store" / "validate").glob(".parts-*"))  # nothing left behind
