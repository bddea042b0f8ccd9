"""Throughput and memory of the data stages: validate, shard, train_tokenizer, pretokenize, loader.

Why: pre-tokenisation must keep up with the tokenizer itself (target: >= 0.8x the
throughput of raw ``Tokenizer.encode_batch`` on the same texts, end to end:
read Parquet, encode, write token shards), scale with worker processes, and run
in bounded memory.  This script measures exactly that, on

- the Shakespeare corpus (``/work/shared/data/shakespeare.jsonl`` or ``--data``), and
- a larger corpus generated from it (``--big-mb``, default 50 MB) in ``--work`` (/tmp),
  about 5% of its records conversations, so the chat (loss-mask) path is exercised too.

Each stage runs in a fresh spawned process so its peak RSS (``VmHWM``) is its own;
the RSS after imports is reported beside it.  The ratio to raw ``encode_batch`` is
measured in one process, interleaved slice by slice (see :func:`ratio_to_raw`), in wall
time and in CPU time (the CPU-time ratio is the one to trust on a shared, loaded machine).

Run: ``.venv/bin/python benchmarks/bench_data.py [--big-mb 50] [--vocab 8192]``
(``TOKENIZERS_PARALLELISM`` is set to false unless ``--parallel``, so the 1 vs 2 worker
comparison measures processes, not the tokenizer's own threads).

Measured (Nov 2026, 2 cores shared with other engineers' jobs, load average 6-13, so wall
times are pessimistic; ranges over two full runs; vocab 8192, TOKENIZERS_PARALLELISM=false):

    corpus                 shakespeare (4.6 MB, 1.29 M tokens)   generated 50 MB (14.1 M tokens, 5% chats)
    validate               38-62 MB/s, peak RSS 53 MB            32-65 MB/s, peak RSS 55 MB
    shard                  21-28 MB/s, peak RSS 123-131 MB       22 MB/s, peak RSS 165 MB
    train_tokenizer        4.1 MB sample in 1.5-1.7 cpu-s        45.9 MB sample in 12.5-14.5 cpu-s (41 s wall)
                           peak RSS 153-167 MB                   peak RSS 190-237 MB
    pretokenize / raw encode_batch (CPU time, interleaved)
                           1.02-1.05x (0.90-0.91x vs _fast)      0.93x (0.81-0.84x vs _fast)   target >= 0.8x
    pretokenize 1 vs 2 workers (wall)
                           3 shards: 12.8-13.7 s vs 10.9-12.2 s  4 shards: 55-82 s vs 44-59 s (1.25-1.38x)
    pretokenize, one shard in a cold process
                           466 k tokens 3.6-4.6 s, 167 MB        3.7 M tokens 10 s, peak RSS 168 MB
    PackedLoader seq 512 x 16                                    10.7-12.2 M tokens/s, open 3 ms, 324 MB (torch)

A CPU profile of one 12 MB shard of the generated corpus: ``encode_batch_fast`` is 89% of
the stage (ids to numpy 3%, conversations 3% before their Jinja-free path); on Shakespeare 96%.  The 1 vs 2 worker gain is
capped by the neighbours' load on 2 cores.  Negative result: pyarrow's ``to_numpy``, scalar
conversion and ``fill_null(col, "")`` import pandas on first use (+0.5 s, ~40 MB per worker:
peak RSS of a cold shard went 207 -> 168 MB once byte lengths came from the Arrow buffers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MB = 1024 * 1024


def rss_mb() -> float:
    """Peak RSS of this process so far.  VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec,
    so a spawned child would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Wall and CPU seconds of a block (CPU = this process, all threads: robust on a shared, loaded machine)."""

    def __enter__(self) -> "Clock":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


# ---------------------------------------------------------------------- corpus


def make_big_corpus(src: Path, dest: Path, target_mb: float, seed: int = 0) -> Path:
    """Documents of random runs of lines from the source plays; 5% conversations made of dialogue lines."""
    if dest.is_file() and dest.stat().st_size >= target_mb * MB * 0.98:
        return dest
    lines = []
    with open(src, encoding="utf-8") as f:
        for raw in f:
            lines.extend(ln for ln in json.loads(raw)["text"].split("\n") if ln.strip())
    rng = random.Random(seed)
    written = 0
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        i = 0
        while written < target_mb * MB:
            if i % 20 == 7:
                turns = []
                for t in range(rng.randint(1, 3)):
                    turns.append({"role": "user", "content": lines[rng.randrange(len(lines))]})
                    start = rng.randrange(len(lines) - 8)
                    turns.append({"role": "assistant", "content": "\n".join(lines[start:start + rng.randint(1, 8)])})
                row = {"messages": turns}
            else:
                start = rng.randrange(len(lines) - 200)
                row = {"text": f"[{i}] " + "\n".join(lines[start:start + rng.randint(20, 200)])}
            s = json.dumps(row, ensure_ascii=False) + "\n"
            out.write(s)
            written += len(s.encode("utf-8"))
            i += 1
    tmp.rename(dest)
    return dest


# ---------------------------------------------------------------------- stages (each in a spawned process)


def _stage_validate(path: str, out: str) -> dict:
    base = rss_mb()
    from lmcore.config import DataConfig
    from lmcore.data.validate import run_validate

    cfg = DataConfig(training_data_path=[path])
    imported = rss_mb()
    with Clock() as clk:
        summary = run_validate([path], cfg, out)
    return {"seconds": clk.wall, "cpu_seconds": clk.cpu, "rss_imports_mb": imported, "rss_peak_mb": rss_mb(),
            "rss_start_mb": base, "lines": summary.get("totals", {}).get("lines"),
            "valid": summary.get("totals", {}).get("valid")}


def _stage_shard(path: str, out: str, shard_max_bytes: int) -> dict:
    from lmcore.config import DataConfig
    from lmcore.data.shard import run_shard

    cfg = DataConfig(training_data_path=[path], shard_max_bytes=shard_max_bytes)
    imported = rss_mb()
    with Clock() as clk:
        summary = run_shard([path], cfg, out)
    return {"seconds": clk.wall, "cpu_seconds": clk.cpu, "rss_imports_mb": imported, "rss_peak_mb": rss_mb(),
            "files": len(summary["files"]), "splits": summary["splits"]}


def _stage_tokenizer(shard_dir: str, out: str, vocab: int) -> dict:
    from lmcore.config import DataConfig, TokenizerConfig
    from lmcore.data.tokenizer import run_train_tokenizer

    imported = rss_mb()
    with Clock() as clk:
        summary = run_train_tokenizer(shard_dir, TokenizerConfig(), DataConfig(), vocab, out)
    return {"seconds": clk.wall, "cpu_seconds": clk.cpu, "rss_imports_mb": imported, "rss_peak_mb": rss_mb(),
            "vocab_size": summary["vocab_size"], "sample_records": summary["sample_records"],
            "sample_mb": summary["sample_utf8_bytes"] / MB}


def _pretokenize_one(shard_file: str, tok_dir: str, out: str) -> dict:
    """One shard; in a fresh process ``seconds`` includes the one-time lazy imports (a cold worker)."""
    from lmcore.config import PipelineConfig
    from lmcore.data.pretokenize import run_pretokenize_shard

    imported = rss_mb()
    with Clock() as clk:
        meta = run_pretokenize_shard(shard_file, tok_dir, PipelineConfig(), out)
    return {"seconds": clk.wall, "cpu_seconds": clk.cpu, "tokens": meta["tokens"], "utf8_bytes": meta["utf8_bytes"],
            "rss_imports_mb": imported, "rss_peak_mb": rss_mb()}


def _loader_epoch(token_dir: str, seq_length: int, batch_size: int, max_batches: int) -> dict:
    from lmcore.data.loader import PackedLoader

    imported = rss_mb()
    t = time.perf_counter()
    loader = PackedLoader([token_dir], "train", seq_length, batch_size, seed=0)
    opened = time.perf_counter() - t
    t = time.perf_counter()
    n = tokens = 0
    for batch in loader:
        tokens += batch.input_ids.numel()
        n += 1
        if n >= max_batches:
            break
    return {"seconds": time.perf_counter() - t, "open_seconds": opened, "batches": n, "tokens": tokens,
            "rss_imports_mb": imported, "rss_peak_mb": rss_mb()}


def in_fresh_process(fn, *args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def pretokenize_pool(shards: list[str], tok_dir: str, out: str, workers: int) -> dict:
    t = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        # warm the workers (interpreter + imports) so the timing is the work, not the start-up
        list(pool.map(_warm, range(workers)))
        t = time.perf_counter()
        results = list(pool.map(_pretokenize_one, shards, [tok_dir] * len(shards), [out] * len(shards)))
    wall = time.perf_counter() - t
    return {"workers": workers, "wall_seconds": wall, "tokens": sum(r["tokens"] for r in results),
            "cpu_seconds": sum(r["cpu_seconds"] for r in results),
            "utf8_bytes": sum(r["utf8_bytes"] for r in results),
            "rss_peak_mb": max(r["rss_peak_mb"] for r in results)}


def _warm(_: int) -> int:
    """Pay a worker's one-time costs: imports, and pyarrow's lazy import of pandas (~1 s) on first use."""
    import pyarrow as pa

    import lmcore.config  # noqa: F401
    import lmcore.data.pretokenize  # noqa: F401

    pa.array(["x", None]).to_numpy(zero_copy_only=False)
    time.sleep(0.2)
    return os.getpid()


# ---------------------------------------------------------------------- ratio to raw encode_batch


def ratio_to_raw(shards: list[Path], tok_dir: Path, work: Path, repeats: int) -> dict:
    """Raw ``Tokenizer.encode_batch`` vs the whole pretokenize stage, interleaved slice by slice.

    For every slice the stage encodes (at most ``BATCH_BYTES`` of text), three timings are taken in
    rotating order: ``encode_batch`` and ``encode_batch_fast`` on the slice's texts (already in memory,
    chat records rendered), and the stage's own work on it (read the record batch, render/encode, ids,
    bos/eos, masks, append to the files).  Interleaving at this grain cancels the drift of a shared
    machine's load.  Each side has its own tokenizer instance (its own BPE cache), so neither profits
    from the other's warm cache.  ``repeats`` passes; the totals of the fastest pass are kept.
    """
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from lmcore.data import pretokenize as P
    from lmcore.data.token_shards import TokenShardWriter
    from lmcore.data.tokenizer import LmcoreTokenizer, record_text

    passes = []
    for rep in range(repeats):
        raw_tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        fast_tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        lm_tok = LmcoreTokenizer.load(tok_dir)
        totals = {k: [0.0, 0.0] for k in ("raw", "fast", "stage")}
        tokens = nbytes = slices = 0

        def add(key: str, clk: Clock) -> None:
            totals[key][0] += clk.wall
            totals[key][1] += clk.cpu

        for shard in shards:
            name, split = P.shard_name(shard)
            writer = TokenShardWriter(work / f"ratio-{rep}", name, lm_tok.vocab_size, split)
            batches = pq.ParquetFile(shard).iter_batches(batch_size=P.BATCH_ROWS, columns=P._COLUMNS)
            while True:
                with Clock() as read_clk:
                    record_batch = next(batches, None)
                    parts = P.byte_bounded(record_batch, P.BATCH_BYTES) if record_batch is not None else []
                add("stage", read_clk)
                if record_batch is None:
                    break
                for part in parts:
                    rows = part.to_pylist()
                    texts = [record_text(r["kind"], r["text"], r["messages"], None) for r in rows]
                    nbytes += sum(len(t.encode("utf-8")) for t in texts)
                    order = [("raw", lambda: raw_tok.encode_batch(texts, add_special_tokens=False)),
                             ("fast", lambda: fast_tok.encode_batch_fast(texts, add_special_tokens=False)),
                             ("stage", lambda: P._append_batch(writer, lm_tok, part, True, True))]
                    k = slices % 3
                    for key, fn in order[k:] + order[:k]:
                        with Clock() as clk:
                            out = fn()
                        add(key, clk)
                        if key == "raw":
                            tokens += sum(len(e) for e in out)
                    slices += 1
            with Clock() as clk:
                writer.close()
            add("stage", clk)
        passes.append((totals, tokens, nbytes, slices))
    totals, tokens, nbytes, slices = min(passes, key=lambda p: p[0]["stage"][1])
    (raw, raw_cpu), (fast, fast_cpu), (stage, stage_cpu) = totals["raw"], totals["fast"], totals["stage"]
    return {"slices": slices, "mb": nbytes / MB, "tokens": tokens,
            "raw_encode_batch_s": raw, "raw_encode_batch_fast_s": fast, "pretokenize_s": stage,
            "raw_encode_batch_cpu_s": raw_cpu, "raw_encode_batch_fast_cpu_s": fast_cpu, "pretokenize_cpu_s": stage_cpu,
            "raw_tokens_per_s": tokens / raw, "pretokenize_tokens_per_s": tokens / stage,
            "ratio_vs_encode_batch": raw / stage, "ratio_vs_encode_batch_fast": fast / stage,
            "cpu_ratio_vs_encode_batch": raw_cpu / stage_cpu, "cpu_ratio_vs_encode_batch_fast": fast_cpu / stage_cpu}


# ---------------------------------------------------------------------- driver


def bench_corpus(name: str, path: Path, work: Path, vocab: int, repeats: int, shard_mb: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size
    result: dict = {"corpus": name, "mb": size / MB}
    shard_dir = work / "shards"
    v = in_fresh_process(_stage_validate, str(path), str(work / "validate"))
    v["mb_per_s"] = size / MB / v["seconds"]
    result["validate"] = v
    import shutil

    shutil.rmtree(shard_dir, ignore_errors=True)
    s = in_fresh_process(_stage_shard, str(path), str(shard_dir), int(shard_mb * MB))
    s["mb_per_s"] = size / MB / s["seconds"]
    result["shard"] = s
    shards = sorted(str(p) for p in shard_dir.glob("train-*.parquet"))

    tok_dir = work / "tokenizer"
    t = in_fresh_process(_stage_tokenizer, str(shard_dir), str(tok_dir), vocab)
    t["sample_mb_per_s"] = t["sample_mb"] / t["seconds"]
    result["tokenizer"] = t

    result["ratio"] = ratio_to_raw([Path(s) for s in shards], tok_dir, work, repeats)

    scaling = []
    for workers in (1, 2):
        out = work / f"tokens-w{workers}"
        r = pretokenize_pool(shards, str(tok_dir), str(out), workers)
        r["shards"] = len(shards)
        r["mb_per_s"] = r["utf8_bytes"] / MB / r["wall_seconds"]
        r["tokens_per_s"] = r["tokens"] / r["wall_seconds"]
        scaling.append(r)
    result["pretokenize_scaling"] = scaling
    one = in_fresh_process(_pretokenize_one, shards[0], str(tok_dir), str(work / "tokens-rss"))
    result["pretokenize_one_shard_rss"] = one

    lo = in_fresh_process(_loader_epoch, str(work / "tokens-w1"), 512, 16, 2000)
    lo["tokens_per_s"] = lo["tokens"] / lo["seconds"]
    result["loader"] = lo
    result["loadavg"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return result


def print_table(res: dict) -> None:
    print(f"\n== {res['corpus']} ({res['mb']:.1f} MB)  load average at the end: {res['loadavg']}")
    if "validate" in res:
        v, s = res["validate"], res["shard"]
        print(f"validate      {v['seconds']:7.2f} s (cpu {v['cpu_seconds']:.2f})  {v['mb_per_s']:7.1f} MB/s  peak RSS {v['rss_peak_mb']:.0f} MB "
              f"(after imports {v['rss_imports_mb']:.0f})  lines {v['lines']} valid {v['valid']}")
        print(f"shard         {s['seconds']:7.2f} s (cpu {s['cpu_seconds']:.2f})  {s['mb_per_s']:7.1f} MB/s  peak RSS {s['rss_peak_mb']:.0f} MB "
              f"(after imports {s['rss_imports_mb']:.0f})  files {s['files']} {s['splits']}")
    t = res["tokenizer"]
    print(f"tokenizer     {t['seconds']:7.2f} s (cpu {t['cpu_seconds']:.2f})  {t['sample_mb_per_s']:7.1f} MB/s of sample ({t['sample_records']} "
          f"records, {t['sample_mb']:.1f} MB)  vocab {t['vocab_size']}  peak RSS {t['rss_peak_mb']:.0f} MB")
    r = res["ratio"]
    print(f"raw encode_batch      {r['raw_encode_batch_s']:6.2f} s  {r['raw_tokens_per_s'] / 1e6:5.2f} M tok/s "
          f"({r['tokens']:,} tokens, {r['mb']:.1f} MB); encode_batch_fast {r['raw_encode_batch_fast_s']:.2f} s")
    print(f"pretokenize stage     {r['pretokenize_s']:6.2f} s  {r['pretokenize_tokens_per_s'] / 1e6:5.2f} M tok/s  "
          f"ratio {r['ratio_vs_encode_batch']:.2f}x encode_batch, {r['ratio_vs_encode_batch_fast']:.2f}x encode_batch_fast")
    print(f"  by CPU time: encode_batch {r['raw_encode_batch_cpu_s']:.2f} s, encode_batch_fast "
          f"{r['raw_encode_batch_fast_cpu_s']:.2f} s, pretokenize {r['pretokenize_cpu_s']:.2f} s -> ratio "
          f"{r['cpu_ratio_vs_encode_batch']:.2f}x encode_batch, {r['cpu_ratio_vs_encode_batch_fast']:.2f}x fast")
    for sc in res["pretokenize_scaling"]:
        print(f"pretokenize {sc['workers']} worker(s) over {sc['shards']} shards: {sc['wall_seconds']:6.2f} s "
              f"(cpu {sc['cpu_seconds']:.2f})  "
              f"{sc['mb_per_s']:6.1f} MB/s  {sc['tokens_per_s'] / 1e6:5.2f} M tok/s  peak RSS/worker "
              f"{sc['rss_peak_mb']:.0f} MB")
    one = res["pretokenize_one_shard_rss"]
    print(f"pretokenize one shard, cold process: {one['seconds']:.2f} s for {one['tokens']:,} tokens  "
          f"peak RSS {one['rss_peak_mb']:.0f} MB (after imports {one['rss_imports_mb']:.0f})")
    lo = res["loader"]
    print(f"loader (seq 512 x 16) {lo['batches']} batches {lo['seconds']:.2f} s  {lo['tokens_per_s'] / 1e6:.1f} M tok/s"
          f"  open {lo['open_seconds'] * 1000:.0f} ms  peak RSS {lo['rss_peak_mb']:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/shared/data/shakespeare.jsonl", help="source JSONL corpus")
    ap.add_argument("--work", default="/tmp/lmcore-bench-data", help="scratch folder (generated corpus, outputs)")
    ap.add_argument("--big-mb", type=float, default=50.0, help="size of the generated corpus; 0 skips it")
    ap.add_argument("--vocab", type=int, default=8192, help="tokenizer vocabulary size")
    ap.add_argument("--repeats", type=int, default=2, help="passes of the raw vs pretokenize comparison")
    ap.add_argument("--big-repeats", type=int, default=1, help="the same, on the generated corpus")
    ap.add_argument("--parallel", action="store_true", help="let tokenizers use its own threads")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if args.parallel else "false"
    work = Path(args.work)
    src = Path(args.data)
    results = [bench_corpus("shakespeare", src, work / "shakespeare", args.vocab, args.repeats, shard_mb=1.5)]
    print_table(results[-1])
    if args.big_mb > 0:
        big = make_big_corpus(src, work / f"generated-{args.big_mb:g}mb.jsonl", args.big_mb)
        results.append(bench_corpus(f"generated {args.big_mb:g} MB", big, work / "big", args.vocab, args.big_repeats,
                                    shard_mb=12))
        print_table(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
