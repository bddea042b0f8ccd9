"""Speed and memory of data stages 1-2 (validate, shard) on real and generated corpora.

Why subprocesses: peak RSS (``ru_maxrss``) only grows within a process, so each
(stage, corpus) pair runs in a fresh interpreter; the parent collects MB/s and
peak RSS. The memory claim under test: streaming + 8-byte dedupe digests keep
peak RSS on a 500 MB corpus within 1.5x of the peak on a 50 MB corpus.

Generated corpora (written once to ``--workdir``, default /tmp/lmcore-bench-ingest)
are Shakespeare passages of 200-1,500 characters with a unique tag, plus about
3% faults (malformed JSON, wrong types, short texts), 2% exact duplicates and
5% ShareGPT chats: realistic work for every branch of the verdict code.

    .venv/bin/python benchmarks/bench_data_ingest.py                 # shakespeare, 50 MB, 500 MB
    .venv/bin/python benchmarks/bench_data_ingest.py --sizes 50      # quicker
    .venv/bin/python benchmarks/bench_data_ingest.py --json          # machine-readable

Measured (Nov 2026, 2 cores shared with other jobs, load average 10-12, so wall-clock
MB/s is pessimistic; MB/cpu-s is the single-core rate; ranges are over 3 runs):

    stage     corpus        MB/s    MB/cpu-s  peak RSS MB
    validate  shakespeare   50-94   175-212      52
    shard     shakespeare   8-35     52-78     132-142
    validate  50 MB         18-50    86-114      58
    shard     50 MB         7-25     36-55     157-161
    validate  500 MB        13-34    62-76       68
    shard     500 MB        11-14    37-45     177-181
    validate  50 MB .gz     16-20    57-60       60
    validate  50 MB .zst    21-27    65-86       62
    peak RSS 500 MB / 50 MB: validate 1.16-1.17, shard 1.11-1.14 (target <= 1.5)
    parse only: json 108-138 MB/s, orjson 320-410 MB/s (why orjson)
    CPU per 50 MB slice of the 500 MB validate stays flat (80-95 MB/cpu-s): no growth with size.

Negative result: ``pa.array(list_of_str)`` imports pandas on first use (+0.5 s,
+50 MB RSS per process); shard builds Arrow columns from buffers instead.

``run_validate`` and ``run_shard`` are the functions measured (``benchmarks/bench_data.py``
may import :func:`measure` and :func:`generate_corpus` from here).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHAKESPEARE = Path("/work/shared/data/shakespeare.jsonl")
ROOT = Path(__file__).resolve().parents[1]


def generate_corpus(path: Path, target_bytes: int, source: Path = SHAKESPEARE, seed: int = 0) -> Path:
    """Write a messy JSONL corpus of about ``target_bytes`` to ``path`` (reused if already that size)."""
    if path.is_file() and abs(path.stat().st_size - target_bytes) < target_bytes * 0.05:
        return path
    rng = random.Random(seed)
    texts = [json.loads(line)["text"] for line in source.open(encoding="utf-8")]
    written = 0
    recent: list[bytes] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb", buffering=1 << 20) as out:
        i = 0
        while written < target_bytes:
            i += 1
            roll = rng.random()
            text = rng.choice(texts)
            start = rng.randrange(max(1, len(text) - 200))
            passage = f"[{i}] " + text[start:start + rng.randint(200, 1500)]
            if roll < 0.01:
                line = b'{"text": "broken' + str(i).encode()
            elif roll < 0.02:
                line = json.dumps({"text": i}).encode()
            elif roll < 0.03:
                line = json.dumps({"text": "x"}).encode()
            elif roll < 0.05 and recent:
                line = rng.choice(recent)
            elif roll < 0.10:
                half = len(passage) // 2
                line = json.dumps({"conversations": [{"from": "human", "value": passage[:half]},
                                                     {"from": "gpt", "value": passage[half:]}]},
                                  ensure_ascii=False).encode()
            else:
                line = json.dumps({"text": passage}, ensure_ascii=False).encode()
            if roll >= 0.05 and len(recent) < 1000:
                recent.append(line)
            out.write(line + b"\n")
            written += len(line) + 1
    return path


def compressed_copy(path: Path, suffix: str) -> Path:
    """``path`` compressed as ``.gz`` or ``.zst`` next to it (reused if present)."""
    import gzip

    import zstandard

    target = path.with_name(path.name + suffix)
    if not target.is_file():
        with path.open("rb") as src, open(target, "wb") as dst:
            if suffix == ".gz":
                with gzip.GzipFile(fileobj=dst, mode="wb", compresslevel=6) as gz:
                    shutil.copyfileobj(src, gz, 1 << 20)
            else:
                zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
    return target


def _child(stage: str, corpus: str, out_dir: str) -> None:
    """Run one stage in this (fresh) process and print its timing and peak RSS as JSON."""
    sys.path.insert(0, str(ROOT))
    import importlib

    from lmcore.config import DataConfig

    run = getattr(importlib.import_module(f"lmcore.data.{stage}"), f"run_{stage}")  # import before the clock
    cfg = DataConfig(min_text_length=3, max_invalid_fraction=0.5)
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = before.ru_utime + before.ru_stime
    start = time.perf_counter()
    summary = run([corpus], cfg, out_dir)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_start
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": usage.ru_maxrss / 1024,
                      "valid": summary["totals"]["valid"]}))


def _baseline_rss() -> float:
    """Peak RSS of a process that only imports the stages (the floor under every measurement)."""
    code = ("import resource, lmcore.data.validate, lmcore.data.shard, lmcore.config; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout)


def measure(stage: str, corpus: Path, workdir: Path, raw_bytes: int | None = None) -> dict:
    """MB/s and peak RSS of ``stage`` ("validate" | "shard") on ``corpus``, in a fresh process.

    Rates are in uncompressed MB: ``raw_bytes`` is the JSONL size of a compressed ``corpus``.
    """
    out_dir = workdir / f"out-{stage}-{corpus.stem}"
    shutil.rmtree(out_dir, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--child", stage, str(corpus), str(out_dir)],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{stage} on {corpus} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    size_mb = (raw_bytes or corpus.stat().st_size) / 1e6
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"stage": stage, "corpus": corpus.name, "mb": round(size_mb, 1),
            "mb_per_s": round(size_mb / result["seconds"], 1), "seconds": round(result["seconds"], 2),
            "mb_per_cpu_s": round(size_mb / result["cpu_seconds"], 1),
            "peak_rss_mb": round(result["peak_rss_mb"], 1), "valid": result["valid"]}


def parse_speed(source: Path = SHAKESPEARE) -> dict:
    """json vs orjson parse throughput on real lines (why the stages use orjson)."""
    import orjson

    lines = source.read_bytes().splitlines()
    size_mb = sum(map(len, lines)) / 1e6
    out = {}
    for name, loads in (("json", json.loads), ("orjson", orjson.loads)):
        start = time.perf_counter()
        for _ in range(5):
            for line in lines:
                loads(line)
        out[name] = round(5 * size_mb / (time.perf_counter() - start), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[50, 500], help="generated corpus sizes in MB")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmcore-bench-ingest"))
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    corpora = [SHAKESPEARE] if SHAKESPEARE.is_file() else []
    for size in args.sizes:
        corpora.append(generate_corpus(args.workdir / f"corpus-{size}MB.jsonl", size * 1_000_000))
    rows = [measure(stage, corpus, args.workdir) for corpus in corpora for stage in ("validate", "shard")]
    if args.sizes:  # decompression cost: the smallest generated corpus as .gz and .zst
        smallest = args.workdir / f"corpus-{min(args.sizes)}MB.jsonl"
        rows += [measure("validate", compressed_copy(smallest, suffix), args.workdir, smallest.stat().st_size)
                 for suffix in (".gz", ".zst")]
    result = {"baseline_rss_mb": round(_baseline_rss(), 1), "parse_mb_per_s": parse_speed(), "runs": rows}
    sized = {(r["stage"], r["corpus"]): r["peak_rss_mb"] for r in rows}
    if len(args.sizes) >= 2:
        small, large = f"corpus-{min(args.sizes)}MB.jsonl", f"corpus-{max(args.sizes)}MB.jsonl"
        result["rss_ratio_large_over_small"] = {
            s: round(sized[(s, large)] / sized[(s, small)], 2) for s in ("validate", "shard")}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"baseline RSS (imports only): {result['baseline_rss_mb']} MB; "
          f"parse MB/s json {result['parse_mb_per_s']['json']}, orjson {result['parse_mb_per_s']['orjson']}")
    print(f"{'stage':9} {'corpus':22} {'raw MB':>7} {'MB/s':>7} {'MB/cpu-s':>9} {'s':>7} {'peak RSS MB':>12} "
          f"{'valid':>9}")
    for r in rows:
        print(f"{r['stage']:9} {r['corpus']:22} {r['mb']:7} {r['mb_per_s']:7} {r['mb_per_cpu_s']:9} {r['seconds']:7} "
              f"{r['peak_rss_mb']:12} {r['valid']:9}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (wall-clock MB/s is only fair when it is low; "
          f"MB/cpu-s is the single-core rate)")
    if "rss_ratio_large_over_small" in result:
        print("peak RSS ratio large/small:", result["rss_ratio_large_over_small"])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
