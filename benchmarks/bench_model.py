"""lmcore Transformer vs transformers LlamaForCausalLM on CPU: training step and greedy generation.

Same architecture and identical weights on both sides (vocab 8192, hidden 256,
intermediate 688, 4 layers, 8 heads, 2 KV heads, seq 256, batch 8, fp32,
2 threads). Training: forward + cross-entropy + backward + AdamW, tokens/s, two ratios:

* **matched**: lmcore's ``Transformer`` in fp32 eager with the same external cross-entropy and
  ``torch.optim.AdamW`` as transformers (the model code alone);
* **out of the box**: the same weights the way ``lmcore run`` trains them by default (``precision.dtype:
  auto``, ``use_compile: auto`` for a run of ``--planned-steps``, the chunked head + loss, fused AdamW),
  against transformers eager fp32.

Generation: greedy, prompt 32, 128 new tokens, batch 1 and 4, new tokens/s;
both must produce the same tokens. Runs are interleaved in rounds and the best
round of each is kept, so a busy neighbour on a shared machine hurts both alike.

    .venv/bin/python benchmarks/bench_model.py [--rounds 3] [--steps 4]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from lmcore.config import ModelConfig, PrecisionConfig, TrainingConfig  # noqa: E402
from lmcore.hf.convert import to_hf_state_dict  # noqa: E402
from lmcore.model import Transformer  # noqa: E402
from lmcore.train.compile import compile_pays, maybe_compile  # noqa: E402
from lmcore.train.optim import build_optimizer  # noqa: E402
from lmcore.train.precision import resolve_precision  # noqa: E402

CFG = ModelConfig(vocab_size=8192, hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8,
                  num_kv_heads=2, seq_length=256, tie_embeddings=False, attention_backend="sdpa")
BATCH = 8


def build_pair() -> tuple[Transformer, LlamaForCausalLM]:
    torch.manual_seed(0)
    ours = Transformer(CFG)
    hf_cfg = LlamaConfig(vocab_size=CFG.vocab_size, hidden_size=CFG.hidden_size, intermediate_size=CFG.ffn_size,
                         num_hidden_layers=CFG.num_layers, num_attention_heads=CFG.num_heads,
                         num_key_value_heads=CFG.kv_heads, max_position_embeddings=CFG.seq_length,
                         rope_theta=CFG.rope_theta, rms_norm_eps=CFG.norm_eps, tie_word_embeddings=False,
                         attn_implementation="sdpa")
    theirs = LlamaForCausalLM(hf_cfg)
    theirs.load_state_dict(to_hf_state_dict(ours.state_dict(), CFG))
    return ours, theirs


def train_steps(model, loss_of, batches, steps: int) -> float:
    """Seconds per step (forward + loss + backward + AdamW) over ``steps`` steps."""
    opt = model._bench_opt
    start = time.perf_counter()
    for i in range(steps):
        loss_of(model, batches[i % len(batches)]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def external_loss(logits_of):
    """Mean cross-entropy outside the model, in fp32: the matched setup for both sides."""
    def loss_of(model, ids):
        logits = logits_of(model, ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    return loss_of


def out_of_the_box(ours: Transformer, planned_steps: int):
    """A copy of ``ours`` set up as the trainer does with default settings; returns ``(model, loss_of, note)``."""
    model = copy.deepcopy(ours)
    precision_cfg, training_cfg = PrecisionConfig(), TrainingConfig(learning_rate=1e-4)
    precision = resolve_precision(precision_cfg, "cpu")
    compiled = compile_pays(precision_cfg.use_compile, "cpu", planned_steps, None)
    forward = maybe_compile(model, compiled, precision_cfg.compile_mode)
    chunk = training_cfg.loss_chunk_rows

    def loss_of(_, ids):
        with precision.autocast():
            return forward(ids[:, :-1], targets=ids[:, 1:], loss_chunk_rows=chunk) / ids[:, 1:].numel()

    model._bench_opt = build_optimizer(model, training_cfg, "cpu")
    return model, loss_of, f"{precision.name}, compile {compiled}, loss chunks of {chunk} rows"


def bench_training(ours, theirs, rounds: int, steps: int, planned_steps: int) -> tuple[dict[str, float], str]:
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, CFG.vocab_size, (BATCH, CFG.seq_length + 1), generator=gen) for _ in range(4)]
    default_model, default_loss, note = out_of_the_box(ours, planned_steps)
    runners = {"lmcore": (ours, external_loss(lambda m, x: m(x))),
               "transformers": (theirs, external_loss(lambda m, x: m(input_ids=x).logits)),
               "lmcore defaults": (default_model, default_loss)}
    best = {}
    for name, (model, fn) in runners.items():
        model.train()
        if not hasattr(model, "_bench_opt"):
            model._bench_opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
        train_steps(model, fn, batches, 2)  # warm-up: allocator, kernels, optimizer state, compilation
    for _ in range(rounds):
        for name, (model, fn) in runners.items():
            t = train_steps(model, fn, batches, steps)
            best[name] = min(best.get(name, float("inf")), t)
    tokens = BATCH * CFG.seq_length
    return {name: tokens / t for name, t in best.items()}, note


def bench_generation(ours, theirs, batch: int, rounds: int, prompt_len=32, new_tokens=128) -> dict[str, float]:
    ours.eval()
    theirs.eval()
    prompt = torch.randint(0, CFG.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(2))

    def run_ours():
        return ours.generate(prompt, max_new_tokens=new_tokens, temperature=0)

    def run_theirs():
        with torch.inference_mode():
            out = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)
        return out[:, prompt_len:]

    a, b = run_ours(), run_theirs()  # warm-up, and both must agree
    agree = torch.equal(a, b)
    best = {}
    for _ in range(rounds):
        for name, fn in (("lmcore", run_ours), ("transformers", run_theirs)):
            start = time.perf_counter()
            fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    result = {name: batch * new_tokens / t for name, t in best.items()}
    result["same_tokens"] = agree
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--steps", type=int, default=4, help="training steps per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["training", "generation"], help="run one half")
    parser.add_argument("--planned-steps", type=int, default=2000,
                        help="the run length the out-of-the-box setup plans for (use_compile: auto decides on it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours, theirs = build_pair()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {ours.num_parameters() / 1e6:.2f}M params")

    if args.only != "generation":
        train, note = bench_training(ours, theirs, args.rounds, args.steps, args.planned_steps)
        hf = train["transformers"]
        print(f"training  batch {BATCH}x{CFG.seq_length}: transformers fp32 eager {hf:8.0f} tok/s")
        print(f"  matched (fp32 eager, same loss and AdamW): lmcore {train['lmcore']:8.0f} tok/s   "
              f"ratio {train['lmcore'] / hf:.2f}x")
        print(f"  out of the box ({note}): lmcore {train['lmcore defaults']:8.0f} tok/s   "
              f"ratio {train['lmcore defaults'] / hf:.2f}x")
    for batch in (1, 4) if args.only != "training" else ():
        g = bench_generation(ours, theirs, batch, args.rounds)
        print(f"generate  batch {batch}, 32+128 greedy: lmcore {g['lmcore']:8.0f} tok/s   "
              f"transformers {g['transformers']:8.0f} tok/s   ratio {g['lmcore'] / g['transformers']:.2f}x   "
              f"same tokens: {g['same_tokens']}")


if __name__ == "__main__":
    main()
