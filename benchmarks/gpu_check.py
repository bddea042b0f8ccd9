"""GPU check: one prepared run that says how fast and how correct lmcore is on this GPU.

Run it with ``bash benchmarks/gpu_check.sh`` (or ``python3 benchmarks/gpu_check.py``). No
network, no installs; it needs torch with CUDA plus pydantic and pyyaml (for
``lmcore.config``). What it prints, in order:

1. the hardware ``lmcore.hardware.detect()`` sees and the datasheet peak it uses for MFU;
2. the preset ``auto`` picks on this GPU, with the memory estimate per preset;
3. attention backends agreement: the same model's logits with ``sdpa`` vs ``math``
   (and ``flash`` when flash-attn is installed), with packed-document masking;
4. a GPT-2-small-shaped model (110M parameters: hidden 768, 12 layers, 12 heads, vocab 32000, seq 1024)
   trained on random tokens in bf16 with ``torch.compile``: tokens/s, MFU, peak memory
   (and the estimate from ``lmcore.hardware`` next to it);
5. the same in fp16 with a GradScaler (eager, fewer steps);
6. with flash-attn installed, bf16 + compile again with ``attention_backend=flash``;
7. with ``--cpu-offload``, ``training.cpu_offload`` (FSDP2's CPUOffloadPolicy in a process group of
   one): peak GPU memory with and without it, next to lmcore's estimate;
8. flex attention (the document-mask path on CUDA) against SDPA's math path: values and the
   gradients of q, k and v, in fp32, for rows of 1-3 packed documents and grouped KV heads;
9. with ``--sweep`` (gpu_check.sh's default): bf16 at 1 and 2 documents per row x batch 16 and 32
   x eager / compiled (``default``), then ``max-autotune-no-cudagraphs`` while time is left
   (``--budget-s``); each run is one row of the table ``runs`` in the JSON.

The JSON is rewritten after every section, so a run cut short by a timeout keeps what it measured.

The training step is lmcore's real one (``lmcore.train.trainer.Trainer.train_step``: forward
under autocast, token-summed cross-entropy, backward, clipping, fused AdamW) when that
module imports; otherwise a plain loop over lmcore's ``Transformer`` with the same parts.

``--device cpu --tiny`` runs the same logic on a tiny model in seconds (used by the tests).
``--json PATH`` also writes every figure to a file (gpu_check.sh puts it in ``$OUT``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmcore.config import ModelConfig, PipelineConfig  # noqa: E402
from lmcore.hardware import (  # noqa: E402
    GiB,
    choose,
    detect,
    estimate_training_memory,
    measure_cpu_matmul_peak,
    mfu,
    model_flops_per_token,
    peak_flops,
)
from lmcore.model import Transformer  # noqa: E402

GPT2_SMALL = dict(vocab_size=32000, hidden_size=768, num_layers=12, num_heads=12, seq_length=1024,
                  tie_embeddings=True)
TINY = dict(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, seq_length=64, tie_embeddings=True)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def section(title: str) -> None:
    log(f"\n== {title} " + "=" * max(0, 70 - len(title)))


# --------------------------------------------------------------------------- batches and steps


class RandomBatch:
    """Same fields as lmcore.data.loader.Batch; ``docs_per_row`` packed documents in every row.

    Two documents per row (the default) is what real packed data looks like and exercises the
    document mask (flex on CUDA); one document per row takes the plain causal kernels, the upper
    bound the masked path is measured against.
    """

    def __init__(self, batch: int, seq: int, vocab: int, device: torch.device, generator: torch.Generator,
                 docs_per_row: int = 2):
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=generator)
        self.input_ids = ids[:, :-1].contiguous().to(device)
        self.targets = ids[:, 1:].contiguous().to(device)
        doc = torch.zeros(batch, seq, dtype=torch.int32)
        for d in range(1, docs_per_row):
            doc[:, d * seq // (docs_per_row + 1):] = d
        self.doc_ids = doc.to(device)
        self.num_target_tokens = batch * seq


def make_stepper(model: torch.nn.Module, dtype: str, compile_: bool, device: torch.device,
                 compile_mode: str = "default"):
    """``(step(batch) -> loss, path)``: lmcore's Trainer when importable, else a plain loop."""
    cfg = PipelineConfig.from_dict({"precision": {"dtype": dtype, "use_compile": compile_,
                                                  "compile_mode": compile_mode},
                                    "training": {"learning_rate": 1e-4, "max_grad_norm": 1.0}})
    try:
        from lmcore.train.context import single_process_context
        from lmcore.train.trainer import Trainer

        trainer = Trainer(model, cfg, single_process_context(device))
        return (lambda b: trainer.train_step([b], 1e-4).loss), "lmcore.train.trainer.Trainer.train_step"
    except ImportError as exc:
        log(f"(lmcore trainer not importable: {exc}; using a plain loop)")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    model = model.to(device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
    fwd = torch.compile(model, mode=compile_mode) if compile_ else model

    def step(b):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=dtype != "fp32"):
            logits = fwd(b.input_ids, doc_ids=b.doc_ids)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), b.targets.flatten())
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step, "plain loop (autocast, CE, backward, clip, AdamW)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_benchmark(name: str, shape: dict, dtype: str, compile_: bool, batch: int, warmup: int, steps: int,
                    device: torch.device, peak, backend: str = "auto", docs_per_row: int = 2,
                    compile_mode: str = "default") -> dict:
    mode = f" ({compile_mode})" if compile_ and compile_mode != "default" else ""
    section(f"{name}: {dtype}{' + compile' + mode if compile_ else ''}, attention {backend}, "
            f"{docs_per_row} document(s) per row")
    model_cfg = ModelConfig(**shape, attention_backend=backend)
    torch.manual_seed(0)
    model = Transformer(model_cfg).to(device)
    n = model_cfg.num_parameters()
    seq = model_cfg.seq_length
    step, path = make_stepper(model, dtype, compile_, device, compile_mode)
    gen = torch.Generator().manual_seed(1)
    batches = [RandomBatch(batch, seq, model_cfg.vocab_size, device, gen, docs_per_row) for _ in range(4)]
    log(f"model {n / 1e6:.1f}M params, batch {batch} x {seq}, step = {path}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    first_loss = None
    for i in range(warmup):
        loss = step(batches[i % len(batches)])
        first_loss = first_loss if first_loss is not None else loss
    sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = []
    for i in range(steps):
        losses.append(step(batches[i % len(batches)]))
    sync(device)
    dt = time.perf_counter() - t0
    tps = steps * batch * seq / dt
    util = mfu(tps, model_flops_per_token(model_cfg, seq), peak)
    peak_mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    est = estimate_training_memory(model_cfg, batch, seq, dtype)
    result = {"name": name, "dtype": dtype, "compile": compile_, "compile_mode": compile_mode,
              "attention_backend": backend, "docs_per_row": docs_per_row, "params": n,
              "batch": batch, "seq": seq, "warmup_steps": warmup, "warmup_s": round(warm_s, 2), "steps": steps,
              "step_ms": round(1000 * dt / steps, 2), "tokens_per_sec": round(tps, 1),
              "mfu": util,
              "flops_per_token": model_flops_per_token(model_cfg, seq),
              "peak_memory_gib": round(peak_mem / GiB, 2) if peak_mem is not None else None,
              "estimated_memory_gib": round(est.total / GiB, 2), "first_loss": first_loss, "last_loss": losses[-1],
              "finite": all(math.isfinite(x) for x in losses), "step_path": path}
    log(f"warm-up {warmup} steps (incl. compile): {warm_s:.1f} s")
    log(f"measured {steps} steps: {result['step_ms']:.1f} ms/step, {tps:,.0f} tokens/s, "
        f"MFU {'%.1f%%' % (100 * util) if util is not None else 'n/a (no peak for this device)'}")
    if peak_mem is not None:
        log(f"peak memory {peak_mem / GiB:.2f} GiB (lmcore.hardware estimate {est.total / GiB:.2f} GiB)")
    log(f"loss {first_loss:.3f} -> {losses[-1]:.3f} ({'finite' if result['finite'] else 'NON-FINITE'})")
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# --------------------------------------------------------------------------- checks


def attention_agreement(device: torch.device, tiny: bool, flash: bool) -> dict:
    section("attention backends agreement (document masking on)")
    shape = dict(TINY if tiny else dict(vocab_size=1024, hidden_size=256, num_layers=2, num_heads=4,
                                        num_kv_heads=2, seq_length=256))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape["vocab_size"], (2, shape["seq_length"]), generator=gen).to(device)
    docs = torch.zeros_like(ids, dtype=torch.int32)
    docs[:, shape["seq_length"] // 2:] = 1
    docs[1, shape["seq_length"] // 4:] += 1
    outputs = {}
    backends = ["math", "sdpa"] + (["flash"] if flash else [])
    for backend in backends:
        torch.manual_seed(0)
        model = Transformer(ModelConfig(**shape, attention_backend=backend)).to(device).eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            outputs[backend] = model(ids, doc_ids=docs).float()
    ref = outputs["math"]
    result = {"dtype": str(dtype).replace("torch.", ""), "backends": backends}
    tol = 5e-2 if dtype != torch.float32 else 1e-4
    ok = True
    for backend in backends[1:]:
        diff = (outputs[backend] - ref).abs().max().item()
        scale = ref.abs().max().item()
        result[f"{backend}_vs_math_max_abs_diff"] = diff
        agree = diff <= tol * max(1.0, scale)
        ok &= agree
        log(f"{backend:>5} vs math: max |diff| {diff:.2e} (logits max {scale:.2f}) -> {'OK' if agree else 'MISMATCH'}")
    result["agree"] = ok
    return result


def flex_vs_math(device: torch.device, tiny: bool) -> dict:
    """flex attention with lmcore's document block mask vs the math reference with the dense mask:
    outputs and the gradients of q, k, v (fp32, GQA 4 query heads over 2 KV heads)."""
    section("flex attention vs SDPA math (document masks): values and gradients, fp32")
    from lmcore.model.attention_backends import (AttentionPlan, attend, document_block_mask, document_causal_mask,
                                                 flex_attention_available)

    if not flex_attention_available():
        log("flex_attention is not in this torch: skipped")
        return {"available": False, "agree": True}
    B, H, KV, T, D = (2, 4, 2, 128, 16) if tiny else (4, 8, 2, 1024, 64)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, h, T, D, generator=gen).to(device) for h in (H, KV, KV))
    grad_out = torch.randn(B, H, T, D, generator=gen).to(device)
    docs = torch.zeros(B, T, dtype=torch.int32)
    docs[0, T // 2:] = 1                       # two documents
    docs[1, T // 4:] = 1                       # three, one of them short
    docs[1, T - T // 8:] = 2
    docs = docs.to(device)
    plans = {"flex": AttentionPlan("flex", is_causal=False, block_mask=document_block_mask(docs), doc_ids=docs),
             "math": AttentionPlan("math", is_causal=False, mask=document_causal_mask(docs))}
    grads = device.type == "cuda"   # flex_attention has no backward on CPU: values only there
    results = {}
    for name, plan in plans.items():
        leaves = [t.clone().requires_grad_(grads) for t in (q, k, v)]
        out = attend(*leaves, plan)
        if grads:
            out.backward(grad_out)
        results[name] = [out.detach(), *((t.grad for t in leaves) if grads else ())]
    tol = 2e-3 if device.type == "cuda" else 1e-4   # TF32 matmuls on the GPU
    report = {"available": True, "shape": [B, H, KV, T, D], "tolerance": tol, "gradients_checked": grads}
    if not grads:
        log("(gradients: CUDA only, flex_attention has no CPU backward)")
    ok = True
    for label, a, b in zip(("out", "grad_q", "grad_k", "grad_v"), results["flex"], results["math"]):
        diff = (a - b).abs().max().item()
        scale = max(1.0, b.abs().max().item())
        report[f"{label}_max_abs_diff"] = diff
        agree = diff <= tol * scale
        ok &= agree
        log(f"{label:>6}: flex vs math max |diff| {diff:.2e} (max |value| {scale:.2f}) -> "
            f"{'OK' if agree else 'MISMATCH'}")
    report["agree"] = ok
    return report


SWEEP_DOCS, SWEEP_BATCHES = (2, 1), (16, 32)


def sweep(shape: dict, tiny: bool, device: torch.device, peak, warmup: int, steps: int, started: float,
          budget_s: float, write) -> list[dict]:
    """bf16 runs over documents per row x batch x compile mode, most telling first; a run is skipped
    (and listed as skipped) once the time budget is spent. ``write`` saves the table so far."""
    section(f"sweep: docs/row {SWEEP_DOCS} x batch {SWEEP_BATCHES} x compile (budget {budget_s:.0f} s)")
    can_compile = not (tiny and device.type == "cpu")
    grid = [(docs, batch, mode) for mode in ("default", "eager") for docs in SWEEP_DOCS for batch in SWEEP_BATCHES]
    grid += [(2, 16, "max-autotune-no-cudagraphs")]
    rows = []
    for docs, batch, mode in grid:
        compile_ = mode != "eager"
        elapsed = time.perf_counter() - started
        # max-autotune benchmarks kernels for minutes: only with half the budget still left
        reserve = budget_s / 2 if mode.startswith("max-autotune") else 0.0
        why = ("no torch.compile in --tiny on CPU" if compile_ and not can_compile else
               f"time budget ({elapsed:.0f} of {budget_s:.0f} s spent)" if elapsed > budget_s - reserve else None)
        if why:
            log(f"skipped docs/row={docs} batch={batch} {mode}: {why}")
            rows.append({"docs_per_row": docs, "batch": batch, "compile_mode": mode, "skipped": why})
            continue
        name = "tiny" if tiny else "gpt2-small"
        row = train_benchmark(name, shape, "bf16", compile_, batch, warmup, steps, device, peak,
                              docs_per_row=docs, compile_mode=mode if compile_ else "default")
        row["compile_mode"] = mode
        rows.append(row)
        write(rows)
    return rows


def cpu_offload_check(shape: dict, batch: int, steps: int, device: torch.device) -> dict:
    """training.cpu_offload: a few real Trainer steps with FSDP2's CPUOffloadPolicy in a process group of
    one, against the same steps without it: peak GPU memory of each, loss finite, and the estimate."""
    section("cpu_offload: FSDP2 CPUOffloadPolicy (one GPU), peak memory against no offload")
    if device.type != "cuda":
        log("skipped: CPU offload moves GPU memory to the CPU; there is no GPU here")
        return {"skipped": "no GPU"}
    import os
    import socket

    import torch.distributed as dist

    from lmcore.train.distributed import DistributedContext
    from lmcore.train.trainer import Trainer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result = {}
    model_cfg = ModelConfig(**shape)
    for offload in (False, True):
        cfg = PipelineConfig.from_dict({"precision": {"dtype": "bf16"}, "training": {
            "learning_rate": 1e-4, "strategy": "fsdp", "cpu_offload": offload}})
        ctx = DistributedContext.from_env(group_of_one=True)
        torch.manual_seed(0)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        trainer = Trainer(Transformer(model_cfg).to(device), cfg, ctx)
        gen = torch.Generator().manual_seed(1)
        losses = [trainer.train_step([RandomBatch(batch, model_cfg.seq_length, model_cfg.vocab_size, device, gen)],
                                     1e-4).loss for _ in range(steps)]
        torch.cuda.synchronize()
        key = "offload" if offload else "no_offload"
        result[key] = {"peak_memory_gib": round(torch.cuda.max_memory_allocated() / GiB, 2),
                       "finite": all(math.isfinite(x) for x in losses)}
        log(f"{key:>10}: peak {result[key]['peak_memory_gib']} GiB, loss finite {result[key]['finite']}")
        del trainer
    est = estimate_training_memory(model_cfg, batch, model_cfg.seq_length, "bf16")
    result["estimated_gib"] = {"no_offload": round(est.total / GiB, 2),
                               "offload": round(est.with_cpu_offload(model_cfg).total / GiB, 2)}
    log(f"  estimate: {result['estimated_gib']}")
    dist.destroy_process_group()
    return result


def auto_preset(hw) -> dict:
    section("auto preset")
    choice = choose(PipelineConfig(), hw)
    for plan in choice.plans:
        log(f"{plan.name:>9}: {plan.model.num_parameters() / 1e6:8.1f}M params, "
            f"{plan.plain.total / GiB:7.1f} GiB, with checkpointing {plan.checkpointed.total / GiB:7.1f} GiB")
    log(f"auto picks: {choice.name}{' (gradient checkpointing)' if choice.gradient_checkpointing else ''} "
        f"-- {choice.reason}")
    return {"preset": choice.name, "reason": choice.reason, "gradient_checkpointing": choice.gradient_checkpointing}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    ap.add_argument("--tiny", action="store_true", help="a tiny model and 2+3 steps (logic check, seconds)")
    ap.add_argument("--steps", type=int, default=None, help="measured bf16 steps (default 30; tiny 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps incl. compile (default 5; tiny 2)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 16; tiny 2)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile in the bf16 run")
    ap.add_argument("--compile-mode", default="default",
                    choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                    help="torch.compile mode of the bf16 run (precision.compile_mode)")
    ap.add_argument("--docs-per-row", type=int, default=2, choices=[1, 2, 3, 4],
                    help="packed documents per row: 2 (default) masks them, 1 is plain causal attention")
    ap.add_argument("--skip-fp16", action="store_true", help="skip the fp16 + GradScaler run")
    ap.add_argument("--cpu-offload", action="store_true", help="also check training.cpu_offload (FSDP2, one GPU)")
    ap.add_argument("--sweep", action="store_true", help="bf16 over docs/row 1,2 x batch 16,32 x eager/compiled "
                    "(+ max-autotune while time is left) instead of the single bf16/fp16/flash runs")
    ap.add_argument("--budget-s", type=float, default=400.0, help="--sweep starts no run after this many seconds")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda" and not torch.cuda.is_available():
        log("error: --device cuda but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
        return 2
    device = torch.device(device_type)
    tiny = args.tiny
    shape = TINY if tiny else GPT2_SMALL
    steps = args.steps or (3 if tiny else 30)
    warmup = args.warmup or (2 if tiny else 5)
    batch = args.batch or (2 if tiny else 16)
    compile_ = not args.no_compile and not (tiny and device_type == "cpu")
    started = time.perf_counter()

    section("hardware")
    hw = detect(device_type)
    for key, value in hw.to_dict().items():
        if key.endswith("memory"):
            value = f"{value / GiB:.1f} GiB"
        log(f"{key:>13}: {value}")
    log(f"{'torch':>13}: {torch.__version__} (CUDA {torch.version.cuda})")
    if device_type == "cuda":
        peak_bf16, peak_fp16 = peak_flops(hw.name, "bf16"), peak_flops(hw.name, "fp16")
        where = "datasheet dense"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        peak_bf16 = measure_cpu_matmul_peak("bf16", seconds=0.2, size=512)
        peak_fp16 = peak_bf16
        where = "measured matmul"
    log(f"{'peak bf16':>13}: {peak_bf16 / 1e12:.1f} TFLOP/s ({where})" if peak_bf16 else
        f"{'peak bf16':>13}: unknown for {hw.name!r} (MFU not computed)")
    report = {"hardware": hw.to_dict(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "peak_bf16": peak_bf16, "peak_fp16": peak_fp16}
    report["auto_preset"] = auto_preset(hw)

    def write(runs_so_far=None) -> None:
        if runs_so_far is not None:
            report["runs"] = runs_so_far
        report["total_s"] = round(time.perf_counter() - started, 1)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2, default=str))

    report["attention"] = attention_agreement(device, tiny, hw.flash_attn)
    report["flex_vs_math"] = flex_vs_math(device, tiny)
    write()
    docs = args.docs_per_row
    if args.sweep:
        runs = sweep(shape, tiny, device, peak_bf16, warmup, steps, started, args.budget_s, write)
    else:
        runs = [train_benchmark("gpt2-small" if not tiny else "tiny", shape, "bf16", compile_, batch, warmup, steps,
                                device, peak_bf16, docs_per_row=docs, compile_mode=args.compile_mode)]
        write(runs)
        if not args.skip_fp16:
            runs.append(train_benchmark("gpt2-small" if not tiny else "tiny", shape, "fp16", False, batch,
                                        max(1, warmup // 2), max(2, steps // 3), device, peak_fp16,
                                        docs_per_row=docs))
            write(runs)
        if hw.flash_attn and time.perf_counter() - started > 150:
            log("\n(flash-attn run skipped: over 150 s already)")
        elif hw.flash_attn:
            runs.append(train_benchmark("gpt2-small", shape, "bf16", compile_, batch, warmup, steps, device,
                                        peak_bf16, backend="flash", docs_per_row=docs, compile_mode=args.compile_mode))
    report["runs"] = runs
    write()
    if args.cpu_offload:
        report["cpu_offload"] = cpu_offload_check(shape, batch, max(2, steps // 5), device)
    report["total_s"] = round(time.perf_counter() - started, 1)

    section("summary")
    measured = [r for r in runs if "skipped" not in r]
    for r in runs:
        if "skipped" in r:
            log(f"bf16 {r['compile_mode']:>26} docs/row={r['docs_per_row']} batch {r['batch']:>3}: skipped ({r['skipped']})")
            continue
        m = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_memory_gib']} GiB" if r["peak_memory_gib"] is not None else "-"
        mode = r["compile_mode"] if r["compile"] else "eager"
        log(f"{r['dtype']} {mode:>26} attn={r['attention_backend']:5} docs/row={r['docs_per_row']} "
            f"batch {r['batch']:>3} {r['tokens_per_sec']:>12,.0f} tok/s  MFU {m:>6}  peak mem {mem:>10}  "
            f"(est {r['estimated_memory_gib']} GiB)  loss finite: {r['finite']}")
    flex = report["flex_vs_math"]
    checked = "values and gradients" if flex.get("gradients_checked") else "values"
    log(f"attention backends agree: {report['attention']['agree']}; flex vs math ({checked}): "
        f"{flex['agree'] if flex.get('available') else 'n/a'}; auto preset: {report['auto_preset']['preset']}; "
        f"total {report['total_s']} s")
    write()
    if args.json:
        log(f"figures written to {args.json}")
    offload = report.get("cpu_offload", {})
    ok = report["attention"]["agree"] and flex["agree"] and all(r["finite"] for r in measured) and all(
        v.get("finite", True) for v in offload.values() if isinstance(v, dict))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
