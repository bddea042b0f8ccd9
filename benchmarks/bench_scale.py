"""Scale-out benchmark: validate + shard + pretokenize on threads, processes and a local Dask cluster.

A generated messy corpus (``bench_data_ingest.generate_corpus``: Shakespeare passages with faults,
duplicates and chats) of about ``--mb`` MB in 8 files goes through ``lmcore stage pretokenize`` once
per runner: threads, processes, and Dask with 1 and 2 local workers (``orchestration.task_runner``,
``max_workers``). One ``lmcore server start`` serves every run, so the figures hold the stages, not
Prefect's start. Reported per runner:

* MB/s: input MB / (validate + shard + pretokenize seconds, as the flow saw them), and the speed-up
  over the threads runner;
* peak RSS: of the flow's process, and the largest any worker process reached (pool processes,
  Dask nannies and workers), sampled from /proc every 0.2 s;
* that the stored outputs are byte-identical to the threads run (same keys, same files).

``--mb 50 200`` runs both sizes: memory per worker should stay flat as the corpus grows.

    .venv/bin/python benchmarks/bench_scale.py                  # 200 MB
    .venv/bin/python benchmarks/bench_scale.py --mb 50 200 --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_data_ingest import generate_corpus  # noqa: E402  (one generator for the data benchmarks)

LMCORE = [sys.executable, "-m", "flows.cli"]
FILES = 8
SHARD_ROWS = 20_000
RUNNERS = {"threads": ["orchestration.task_runner=threads"],
           "processes": ["orchestration.task_runner=processes", "orchestration.max_workers=2"],
           "dask-1": ["orchestration.task_runner=dask", "orchestration.max_workers=1"],
           "dask-2": ["orchestration.task_runner=dask", "orchestration.max_workers=2"]}
STAGES = ("validate", "shard", "pretokenize")


def shakespeare_text(workdir: Path) -> Path:
    """The shipped corpus, decompressed once (the generator reads plain JSONL)."""
    plain = workdir / "shakespeare.jsonl"
    if not plain.is_file():
        with gzip.open(ROOT / "data" / "shakespeare" / "train.jsonl.gz", "rb") as src:
            plain.write_bytes(src.read())
    return plain


def corpus(workdir: Path, megabytes: int) -> list[Path]:
    source = shakespeare_text(workdir)
    per_file = megabytes * (1 << 20) // FILES
    return [generate_corpus(workdir / f"corpus-{megabytes}mb" / f"part-{i}.jsonl", per_file, source, seed=i)
            for i in range(FILES)]


class PeakRss:
    """Polls /proc for ``root`` and its descendants; the largest VmRSS any of them reached (MB)."""

    def __init__(self, root: int):
        self.root, self.peak, self._stop = root, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in self._family():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak[pid] = max(self.peak.get(pid, 0), int(line.split()[1]) / 1024)
                except OSError:
                    pass

    def _family(self) -> set[int]:
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        family, grew = {self.root}, True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in family} - family
            family |= more
            grew = bool(more)
        return family


def lmcore(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(workdir / ".prefect-home"),
           "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(LMCORE + list(args), cwd=workdir, env=env, capture_output=True, text=True)


def run(workdir: Path, files: list[Path], name: str, sets: list[str]) -> dict:
    store = workdir / "runs" / name / "store"
    config = workdir / "runs" / name / "config.yaml"
    shutil.rmtree(config.parent, ignore_errors=True)  # a fresh store: every stage computes
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({
        # shards of 20k records: pretokenize's unit of parallelism (one task per shard)
        "data": {"training_data_path": [str(f) for f in files], "eval_split": 0.01, "max_invalid_fraction": 0.2,
                 "shard_max_rows": SHARD_ROWS},
        "tokenizer": {"vocab_size": 4096}, "tracking": {"enabled": False},
        "paths": {"store": str(store), "models": str(store.parent / "models"), "mlflow": str(store.parent / "mlflow")},
    }))
    report = config.parent / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(workdir / ".prefect-home"), "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    cmd = LMCORE + ["stage", "pretokenize", str(config), "--report", str(report)] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRss(proc.pid) as rss:
        out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{out}\n{err}")
    records = json.loads(report.read_text())
    seconds = sum(records[s]["seconds"] for s in STAGES)
    workers = [mb for pid, mb in rss.peak.items() if pid != proc.pid]
    return {"runner": name, "seconds": round(seconds, 2),
            "stage_seconds": {s: records[s]["seconds"] for s in STAGES},
            "processes": len(rss.peak), "flow_rss_mb": round(rss.peak.get(proc.pid, 0.0), 1),
            "worker_rss_mb": round(max(workers), 1) if workers else None, "outputs": _digest(store)}


def _digest(store: Path) -> str:
    h = hashlib.sha256()
    for stage in ("validate", "shards", "tokens"):
        for path in sorted((store / stage).rglob("*")):
            if path.is_file() and path.name != "manifest.json":
                h.update(str(path.relative_to(store)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[200], help="corpus sizes in MB (8 files each)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lmcore-bench-scale")
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = lmcore(args.workdir, "server", "start")
    if started.returncode != 0:
        sys.exit(started.stdout + started.stderr)
    results = []
    try:
        for megabytes in args.mb:
            files = corpus(args.workdir, megabytes)
            size_mb = sum(f.stat().st_size for f in files) / (1 << 20)
            rows = []
            for name in args.runners:
                row = run(args.workdir, files, f"{megabytes}mb-{name}", RUNNERS[name])
                row["runner"] = name
                row.update(mb=round(size_mb, 1), mb_per_s=round(size_mb / row["seconds"], 2))
                rows.append(row)
                print(f"{megabytes:>4} MB  {name:<10} {row['seconds']:7.1f} s  {row['mb_per_s']:6.2f} MB/s  "
                      f"peak RSS flow {row['flow_rss_mb']:6.1f} MB, worker {row['worker_rss_mb']} MB "
                      f"({row['processes']} processes)  {row['stage_seconds']}", flush=True)
            base = rows[0]
            for row in rows:
                row["speedup"] = round(row["mb_per_s"] / base["mb_per_s"], 2)
                row["same_outputs"] = row["outputs"] == base["outputs"]
            results.extend(rows)
    finally:
        lmcore(args.workdir, "server", "stop")
    print(f"{'MB':>5} {'runner':<10} {'MB/s':>7} {'speed-up':>9} {'flow RSS MB':>12} {'worker RSS MB':>14} "
          f"{'same bytes':>11}")
    for row in results:
        print(f"{row['mb']:5.0f} {row['runner']:<10} {row['mb_per_s']:7.2f} {row['speedup']:8.2f}x "
              f"{row['flow_rss_mb']:12.1f} {str(row['worker_rss_mb']):>14} {str(row['same_outputs']):>11}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
