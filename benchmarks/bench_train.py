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

Two ratios: **matched** (the trainer and transformers at the same ``--dtype`` / ``--compile``) and
**out of the box** (lmcore with the config a user gets without touching ``precision``: ``dtype: auto``,
``use_compile: auto`` for a run of ``--planned-steps``, the default chunked loss) against
transformers eager in fp32, the way a plain loop runs it.
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


def build_lmcore(token_dir: Path, dtype: str, compile_: bool, doc_mask: bool = True, defaults: bool = False,
                 planned_steps: int = 0):
    """The trainer's real step; ``defaults``: the config a user gets without touching ``precision``, with
    ``use_compile: auto`` deciding for a run of ``planned_steps`` as ``fit`` does."""
    precision = {} if defaults else {"dtype": dtype, "use_compile": compile_}
    cfg = PipelineConfig.from_dict({"training": {"batch_size": BATCH, "learning_rate": 3e-4}, "precision": precision})
    model_cfg = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_layers=LAYERS,
                            num_heads=HEADS, num_kv_heads=KV, seq_length=SEQ, document_masking=doc_mask)
    torch.manual_seed(0)
    trainer = Trainer(Transformer(model_cfg), cfg)
    if defaults:
        trainer.compile_for_run(planned_steps, None)
    state_note = f"precision {trainer.precision.name}, compiled {trainer.compiled}, " \
                 f"loss chunks of {trainer.loss_chunk_rows} rows"
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
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="precision of the matched pair")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per contender")
    ap.add_argument("--warmup", type=int, default=4, help="first steps left out of the median")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models of the matched pair")
    ap.add_argument("--no-doc-mask", action="store_true", help="lmcore without document masking (plain causal)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--planned-steps", type=int, default=2000,
                    help="run length the out-of-the-box trainer plans for (use_compile: auto decides on it)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    matched_hf = (args.dtype, args.compile) != ("fp32", False)
    with tempfile.TemporaryDirectory() as tmp:
        token_dir = Path(tmp) / "tokens"
        write_tokens(token_dir, (args.steps + 2) * BATCH * SEQ * 2 + 1)
        hf_step, hf_params = build_hf(args.steps, "fp32", False)
        steps = {"transformers fp32 eager": hf_step}
        if matched_hf:
            steps[f"transformers {args.dtype} compile={args.compile}"] = build_hf(args.steps, args.dtype, args.compile)[0]
        matched_step, matched_state, lm_params = build_lmcore(token_dir, args.dtype, args.compile, not args.no_doc_mask)
        default_step, default_state, _ = build_lmcore(token_dir, args.dtype, args.compile, not args.no_doc_mask,
                                                      defaults=True, planned_steps=args.planned_steps)
        steps["lmcore matched"] = matched_step
        steps["lmcore defaults"] = default_step
        times: dict[str, list[float]] = {name: [] for name in steps}
        for i in range(args.steps):  # interleaved, so load changes on a shared machine hit all alike
            for name, step in steps.items():
                times[name].append(timed(step))
            if i == args.warmup - 1:
                matched_state["wait"] = default_state["wait"] = 0.0
    tps = {name: BATCH * SEQ / statistics.median(t[args.warmup:]) for name, t in times.items()}
    base = tps["transformers fp32 eager"]
    hf_matched = tps[f"transformers {args.dtype} compile={args.compile}"] if matched_hf else base
    wait = matched_state["wait"] / sum(times["lmcore matched"][args.warmup:])
    print(f"threads={torch.get_num_threads()} steps={args.steps} lmcore document masking={not args.no_doc_mask}; "
          f"params lmcore={lm_params:,} transformers={hf_params:,}")
    print(f"transformers LlamaForCausalLM fp32 eager: {base:8.0f} tokens/s")
    if matched_hf:
        print(f"transformers {args.dtype} compile={args.compile}:      {hf_matched:8.0f} tokens/s")
    print(f"lmcore trainer, matched (dtype={args.dtype} compile={args.compile}): {tps['lmcore matched']:8.0f} tokens/s  "
          f"(ratio {tps['lmcore matched'] / hf_matched:.2f}x; data wait {wait:.2%})")
    print(f"lmcore trainer, out of the box ({default_state['note']}, planned {args.planned_steps} steps): "
          f"{tps['lmcore defaults']:8.0f} tokens/s  (ratio {tps['lmcore defaults'] / base:.2f}x vs transformers "
          f"fp32 eager)")


if __name__ == "__main__":
    main()
