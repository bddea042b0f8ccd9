"""Pipeline benchmark: `lmcore run` cold, fully cached, and orchestration overhead per stage.

Measures, each as a fresh `lmcore run` subprocess (interpreter start included):

* cold: empty store, empty Prefect home (includes Prefect's first-run migrations);
* cached: the same command again, median of 3, each starting a temporary Prefect API (target < 15 s);
* cached with ``lmcore server start`` up: median of 3 (target < 5 s);
* cached, Prefect home wiped: only the store remembers (every stage "cached (store)");
* overhead per stage of the cold run: wall time the flow saw for the task minus the
  time spent in the lmcore function (target < 1 s).

Usage: .venv/bin/python benchmarks/bench_pipeline.py [--config examples/demo.yaml]
       [--set training.max_steps=30 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LMCORE = [sys.executable, "-m", "flows.cli"]


def _env(workdir: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(workdir / ".prefect-home")}
    for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(name, None)
    return env


def lmcore(workdir: Path, *args: str) -> None:
    proc = subprocess.run(LMCORE + list(args), cwd=workdir, env=_env(workdir), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"lmcore {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def run_once(config: Path, sets: list[str], workdir: Path, report: Path) -> float:
    cmd = LMCORE + ["run", str(config), "--no-sample", "--report", str(report)]
    for item in sets:
        cmd += ["--set", item]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=_env(workdir), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"lmcore run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return wall


def stage_table(report: Path) -> list[dict]:
    records = json.loads(report.read_text())
    return [{"stage": s, "status": r["status"], "wall_s": r["seconds"],
             "compute_s": r["compute_seconds"] if r["status"] == "ran" else 0.0,
             "overhead_s": round(r["seconds"] - (r["compute_seconds"] if r["status"] == "ran" else 0.0), 3)}
            for s, r in records.items() if not s.startswith("_")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "demo.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lmcore-bench-pipeline-"))
    try:
        config = args.config.resolve()
        cold = run_once(config, args.sets, workdir, workdir / "cold.json")
        cached = statistics.median(run_once(config, args.sets, workdir, workdir / "cached.json") for _ in range(3))
        lmcore(workdir, "server", "start")
        try:
            served = statistics.median(run_once(config, args.sets, workdir, workdir / "served.json")
                                       for _ in range(3))
        finally:
            lmcore(workdir, "server", "stop")
        shutil.rmtree(workdir / ".prefect-home")
        wiped = run_once(config, args.sets, workdir, workdir / "wiped.json")
        stages = stage_table(workdir / "cold.json")
        result = {"cold_s": round(cold, 2), "cached_s": round(cached, 2), "cached_server_s": round(served, 2),
                  "cached_prefect_wiped_s": round(wiped, 2),
                  "cached_statuses": sorted({r["status"] for r in stage_table(workdir / "cached.json")}),
                  "served_statuses": sorted({r["status"] for r in stage_table(workdir / "served.json")}),
                  "wiped_statuses": sorted({r["status"] for r in stage_table(workdir / "wiped.json")}),
                  "stages_cold": stages, "max_overhead_s": max(s["overhead_s"] for s in stages)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"cold run            {result['cold_s']:8.2f} s")
    print(f"cached rerun        {result['cached_s']:8.2f} s   (target < 15 s, median of 3)  "
          f"statuses {result['cached_statuses']}")
    print(f"cached, server up   {result['cached_server_s']:8.2f} s   (target < 5 s, median of 3)  "
          f"statuses {result['served_statuses']}")
    print(f"Prefect home wiped  {result['cached_prefect_wiped_s']:8.2f} s   statuses {result['wiped_statuses']}")
    print(f"{'stage':<12} {'status':<15} {'wall s':>8} {'lmcore s':>9} {'overhead s':>11}")
    for s in stages:
        print(f"{s['stage']:<12} {s['status']:<15} {s['wall_s']:8.2f} {s['compute_s']:9.2f} {s['overhead_s']:11.3f}")
    print(f"max orchestration overhead per stage: {result['max_overhead_s']:.3f} s (target < 1 s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
