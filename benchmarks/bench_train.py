"""Training throughput: the lmcore trainer vs a plain loop over transformers' LlamaForCausalLM.

Same shapes for both (vocab 8192, hidden 256, intermediate 688, 4 layers, 8 heads, 2 KV
heads, seq 256, batch 8, tied embeddings), same precision (fp32 or bf16 autocast), AdamW,
gradient clipping at 1.0.  lmcore runs its real path: token shards on disk ->
``PackedLoader`` -> ``fit`` (document masking on, as by default); the baseline gets
pre-built tensors in memory (no data loading at all).  Reports tokens/s of each (median
of per-step rates after warm-up), their ratio, and the fraction of lmcore's step time
spent waiting for data.

    .venv/bin/python benchmarks/bench_train.py [--dtype fp32|bf16] [--steps 20] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmcore.config import ModelConfig, PipelineConfig
from lmcore.data.loader import PackedLoader
from lmcore.data.token_shards import TokenShardWriter
from lmcore.model import Transformer
from lmcore.train.engine import Trainer
from lmcore.train.trainer import fit

VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV, SEQ, BATCH = 8192, 256, 688, 4, 8, 2, 256, 8


def write_tokens(out_dir: Path, n_tokens: int, doc_len: int = 1500, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = TokenShardWriter(out_dir, "train-00000", VOCAB, "train")
    ids = rng.integers(0, VOCAB, n_tokens, dtype=np.int64).astype(np.uint16)
    docs = np.full(n_tokens // doc_len, doc_len, dtype=np.int64)
    docs[-1] += n_tokens - docs.sum()
    writer.append(ids, np.ones(n_tokens, dtype=np.uint8), docs, utf8_bytes=4 * n_tokens)
    writer.close()


class StepRates:
    def __init__(self):
        self.rates, self.wait = [], []

    def on_log(self, step, metrics):
        self.rates.append(metrics["tokens_per_sec"])
        self.wait.append(metrics["data_wait_fraction"])


def bench_lmcore(token_dir: Path, steps: int, warmup: int, dtype: str, compile_: bool, out: Path) -> dict:
    cfg = PipelineConfig.from_dict({
        "training": {"batch_size": BATCH, "max_steps": steps, "learning_rate": 3e-4, "log_every": 1,
                     "checkpoint_every": 10_000, "warmup_steps": 2},
        "precision": {"dtype": dtype, "use_compile": compile_}})
    model_cfg = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_layers=LAYERS,
                            num_heads=HEADS, num_kv_heads=KV, seq_length=SEQ)
    torch.manual_seed(0)
    trainer = Trainer(Transformer(model_cfg), cfg)
    loader = PackedLoader([token_dir], "train", SEQ, BATCH, seed=0)
    rates = StepRates()
    summary = fit(trainer, model_cfg, loader, None, out, [rates])
    return {"tokens_per_sec": statistics.median(rates.rates[warmup:]),
            "data_wait_fraction": statistics.mean(rates.wait[warmup:]),
            "params": model_cfg.num_parameters(), "final_loss": summary["final_loss"]}


def bench_hf(steps: int, warmup: int, dtype: str, compile_: bool) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=KV, max_position_embeddings=SEQ,
                         tie_word_embeddings=True, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(hf_cfg)
    model.train()
    fwd = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g) for _ in range(steps)]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    rates = []
    for batch in batches:
        start = time.perf_counter()
        with autocast:
            out = fwd(input_ids=batch[:, :-1], labels=batch[:, :-1])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        rates.append(BATCH * SEQ / (time.perf_counter() - start))
    return {"tokens_per_sec": statistics.median(rates[warmup:]), "params": model.num_parameters()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="precision of both loops")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per contender")
    ap.add_argument("--warmup", type=int, default=4, help="first steps left out of the median")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        token_dir = Path(tmp) / "tokens"
        write_tokens(token_dir, (args.steps + 2) * BATCH * SEQ + 1)
        hf = bench_hf(args.steps, args.warmup, args.dtype, args.compile)
        lm = bench_lmcore(token_dir, args.steps, args.warmup, args.dtype, args.compile, Path(tmp) / "run")
    print(f"threads={torch.get_num_threads()} dtype={args.dtype} compile={args.compile} steps={args.steps}")
    print(f"params lmcore={lm['params']:,} transformers={hf['params']:,}")
    print(f"transformers LlamaForCausalLM: {hf['tokens_per_sec']:8.0f} tokens/s")
    print(f"lmcore trainer:                {lm['tokens_per_sec']:8.0f} tokens/s  (ratio {lm['tokens_per_sec'] / hf['tokens_per_sec']:.2f}x)")
    print(f"lmcore data wait: {100 * lm['data_wait_fraction']:.3f}% of step time")


if __name__ == "__main__":
    main()
