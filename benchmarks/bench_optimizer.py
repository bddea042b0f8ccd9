"""What Muon costs per update: ``Trainer.train_step`` with AdamW vs Muon+AdamW, same model and batches.

Muon's Newton-Schulz iteration costs about ``5 * 3 * 2 * m^2 * n`` FLOPs per ``m x n`` hidden
matrix (m <= n) on every update, independent of the batch, while forward + backward cost
``6 * params * tokens``: the smaller the batch per update, the larger Muon's share.  This
measures it at a config's shape (default: ``examples/shakespeare-cpu.yaml``), the two
optimizers taking steps in turn so that load on a shared machine hits both alike.  Reports
median ms per update and tokens/s of each, and Muon's overhead.

    .venv/bin/python benchmarks/bench_optimizer.py [--config YAML] [--steps 30] [--threads 2] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from lmcore.config import PipelineConfig
from lmcore.data.loader import Batch
from lmcore.model import Transformer
from lmcore.train.trainer import Trainer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shakespeare-cpu.yaml"


def random_batch(vocab: int, batch: int, seq: int, generator: torch.Generator) -> Batch:
    """A loader-shaped batch of random ids, one document per row (the common case in the recipe)."""
    ids = torch.randint(0, vocab, (batch, seq + 1), generator=generator)
    return Batch(ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), torch.zeros(batch, seq, dtype=torch.int32),
                 batch * seq)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the comparison; returns median ms per update by optimizer name."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=EXAMPLE)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value override")
    ap.add_argument("--steps", type=int, default=30, help="timed updates per optimizer (after 5 warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PipelineConfig.from_yaml(args.config, overrides=args.overrides)
    model_cfg = cfg.model.resolve()
    batch, seq = cfg.training.batch_size, model_cfg.seq_length
    g = torch.Generator().manual_seed(0)
    batches = [random_batch(model_cfg.vocab_size, batch, seq, g) for _ in range(8)]

    trainers = {}
    for name in ("adamw", "muon"):
        torch.manual_seed(0)
        run_cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"optimizer": name})})
        trainers[name] = Trainer(Transformer(model_cfg), run_cfg)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for i in range(5 + args.steps):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step([batches[i % len(batches)]], lr=cfg.training.learning_rate)
            if i >= 5:
                times[name].append(time.perf_counter() - start)

    tokens = batch * seq
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"model {model_cfg.num_parameters() / 1e6:.2f}M params, batch {batch} x {seq} = {tokens} tokens per update, "
          f"{torch.get_num_threads()} threads")
    for name in trainers:
        print(f"{name:6s} {ms[name]:7.1f} ms/update  {tokens / ms[name] * 1e3:9,.0f} tokens/s")
    print(f"muon overhead: {ms['muon'] / ms['adamw'] - 1:+.1%} per update")
    return ms


if __name__ == "__main__":
    main()
