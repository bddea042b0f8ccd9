"""Cold start with torch.compile: time to the end of the first training step, eager vs compiled with
an empty inductor cache vs compiled again with that cache warm (what a second run of the same shape
sees, since the train stage keeps inductor's cache in ``<store>/.compile-cache``).

Each case is a fresh Python process (imports included) training the bench shape (vocab 8192, hidden
256, 4 layers, batch 8x256, two packed documents per row) with lmcore's default path: bf16 autocast
where it pays, the chunked head + loss, fused AdamW. Steady tokens/s is the median of steps 5-12.

    .venv/bin/python benchmarks/bench_compile_start.py [--small]   # --small: the Shakespeare recipe's shape, fp32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
import torch
from lmcore.config import ModelConfig, PipelineConfig
from lmcore.model import Transformer
from lmcore.train.trainer import Trainer
from lmcore.data.loader import Batch

small, compile_ = sys.argv[1] == "small", sys.argv[2] == "compile"
if small:
    cfg = ModelConfig(vocab_size=2048, hidden_size=128, intermediate_size=384, num_layers=3, num_heads=4,
                      num_kv_heads=2, seq_length=128, tie_embeddings=True)
    batch, dtype = 16, "fp32"
else:
    cfg = ModelConfig(vocab_size=8192, hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8,
                      num_kv_heads=2, seq_length=256)
    batch, dtype = 8, "auto"
pipeline = PipelineConfig.from_dict({"training": {"batch_size": batch},
                                     "precision": {"dtype": dtype, "use_compile": compile_}})
torch.manual_seed(0)
trainer = Trainer(Transformer(cfg), pipeline)

g = torch.Generator().manual_seed(0)
docs = torch.zeros(batch, cfg.seq_length, dtype=torch.int32)
docs[:, cfg.seq_length // 2:] = 1
times = []
for i in range(12):
    start = time.perf_counter()
    ids = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_length + 1), generator=g)
    trainer.train_step([Batch(ids[:, :-1], ids[:, 1:], docs, batch * cfg.seq_length)], 3e-4)
    times.append(time.perf_counter() - start)
    if i == 0:
        first_done = time.time()
print(json.dumps({"first_step_done": first_done, "first_step_s": times[0], "precision": trainer.precision.name,
                  "steady_tok_s": batch * cfg.seq_length / statistics.median(times[4:])}))
"""


def run_case(shape: str, compile_: bool, cache: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    start = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, shape, "compile" if compile_ else "eager"], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["to_first_step_s"] = result.pop("first_step_done") - start
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the Shakespeare recipe's shape (fp32) instead")
    args = ap.parse_args()
    shape = "small" if args.small else "bench"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "inductor"
        cases = [("eager", run_case(shape, False, cache)),
                 ("compiled, cold cache", run_case(shape, True, cache)),
                 ("compiled, warm cache", run_case(shape, True, cache))]
    for name, r in cases:
        print(f"{name:22s} process start -> first step done {r['to_first_step_s']:5.1f} s "
              f"(first step {r['first_step_s']:5.1f} s), steady {r['steady_tok_s']:7.0f} tok/s, {r['precision']}")
    eager, warm = cases[0][1], cases[2][1]
    print(f"warm compiled run starts training {warm['to_first_step_s'] - eager['to_first_step_s']:.1f} s after "
          f"an eager one; steady-state {warm['steady_tok_s'] / eager['steady_tok_s']:.2f}x")


if __name__ == "__main__":
    main()
