"""Training throughput: the lmcore trainer vs a plain loop over transformers' LlamaForCausalLM.

Same shapes for both (vocab 8192, hidden 256, intermediate 688, 4 layers, 8 heads, 2 KV
heads, seq 256, batch 8, tied embeddings), same precision (fp32 or bf16 autocast), AdamW,
gradient clipping at 1.0.  lmcore runs its real path: token shards on disk ->
``PackedLoader`` -> ``Trainer.train_step`` (document masking on, as by default, fused
AdamW, token-normalised loss); the baseline gets pre-built tensors in memory (no data
loading at all).  The two take steps in turn, so load changes on a shared machine hit both
alike.  Reports tokens/s of each (median step time after warm-up), their ratio, and the
fraction of lmcore's step time spent waiting for data.

    .venv/bin/python benchmarks/bench_train.py [--dtype fp32|bf16] [--steps 20] [--compile]
    .venv/bin/python benchmarks/bench_train.py --out-of-box     # lmcore's defaults vs transformers eager fp32

``--out-of-box``: lmcore with the config a user gets without touching ``precision`` (``dtype: auto``,
the default compile setting, the default loss path) against transformers eager in fp32, the way
a plain loop runs it.
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
from lmcore.train.trainer import Trainer

VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV, SEQ, BATCH = 8192, 256, 688, 4, 8, 2, 256, 8


def write_tokens(out_dir: Path, n_tokens: int, doc_len: int = 1500, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = TokenShardWriter(out_dir, "train-00000", VOCAB, "train")
    ids = rng.integers(0, VOCAB, n_tokens, dtype=np.int64).astype(np.uint16)
    docs = np.full(n_tokens // doc_len, doc_len, dtype=np.int64)
    docs[-1] += n_tokens - docs.sum()
    writer.append(ids, np.ones(n_tokens, dtype=np.uint8), docs, utf8_bytes=4 * n_tokens)
    writer.close()


def build_lmcore(token_dir: Path, dtype: str, compile_: bool, doc_mask: bool = True, defaults: bool = False):
    precision = {} if defaults else {"dtype": dtype, "use_compile": compile_}
    cfg = PipelineConfig.from_dict({"training": {"batch_size": BATCH, "learning_rate": 3e-4}, "precision": precision})
    model_cfg = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_layers=LAYERS,
                            num_heads=HEADS, num_kv_heads=KV, seq_length=SEQ, document_masking=doc_mask)
    torch.manual_seed(0)
    trainer = Trainer(Transformer(model_cfg), cfg)
    state_note = f"precision {trainer.precision.name}, compile {cfg.precision.use_compile}"
    batches = iter(PackedLoader([token_dir], "train", SEQ, BATCH, seed=0))
    state = {"wait": 0.0, "note": state_note}

    def step() -> None:
        start = time.perf_counter()
        batch = next(batches)
        state["wait"] += time.perf_counter() - start
        trainer.train_step([batch], lr=3e-4)

    return step, state, model_cfg.num_parameters()


def build_hf(steps: int, dtype: str, compile_: bool):
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
    batches = iter([torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g) for _ in range(steps)])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        batch = next(batches)
        with autocast:
            out = fwd(input_ids=batch[:, :-1], labels=batch[:, :-1])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model.num_parameters()


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="precision of both loops")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per contender")
    ap.add_argument("--warmup", type=int, default=4, help="first steps left out of the median")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--no-doc-mask", action="store_true", help="lmcore without document masking (plain causal)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--out-of-box", action="store_true", help="lmcore's default precision and compile settings "
                    "against transformers eager fp32")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        token_dir = Path(tmp) / "tokens"
        write_tokens(token_dir, (args.steps + 2) * BATCH * SEQ + 1)
        if args.out_of_box:
            hf_step, hf_params = build_hf(args.steps, "fp32", False)
        else:
            hf_step, hf_params = build_hf(args.steps, args.dtype, args.compile)
        lm_step, lm_state, lm_params = build_lmcore(token_dir, args.dtype, args.compile, not args.no_doc_mask,
                                                    defaults=args.out_of_box)
        hf_times, lm_times = [], []
        for i in range(args.steps):  # interleaved, so load changes on a shared machine hit both alike
            hf_times.append(timed(hf_step))
            lm_times.append(timed(lm_step))
            if i == args.warmup - 1:
                lm_state["wait"] = 0.0
    hf_tps = BATCH * SEQ / statistics.median(hf_times[args.warmup:])
    lm_tps = BATCH * SEQ / statistics.median(lm_times[args.warmup:])
    wait = lm_state["wait"] / sum(lm_times[args.warmup:])
    mode = "out of the box (lmcore defaults vs transformers eager fp32)" if args.out_of_box else \
        f"dtype={args.dtype} compile={args.compile}"
    print(f"threads={torch.get_num_threads()} {mode} steps={args.steps} lmcore document masking={not args.no_doc_mask}"
          f"; lmcore: {lm_state['note']}")
    print(f"params lmcore={lm_params:,} transformers={hf_params:,}")
    print(f"transformers LlamaForCausalLM: {hf_tps:8.0f} tokens/s")
    print(f"lmcore trainer:                {lm_tps:8.0f} tokens/s  (ratio {lm_tps / hf_tps:.2f}x)")
    print(f"lmcore data wait: {100 * wait:.3f}% of step time")

if __name__ == "__main__":
    main()
