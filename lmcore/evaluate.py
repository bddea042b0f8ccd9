"""Stage ``evaluate``: held-out loss, perplexity, bits per byte, samples and throughput of a checkpoint.

``run_evaluate(checkpoint_dir, token_dirs, tokenizer_dir, cfg, out_dir)`` writes
``metrics.json`` and returns the same dict.

Definitions (the whole eval split is evaluated, it is small, so every figure covers the
same text):

* ``eval_loss``: total cross-entropy in nats over every target token of the eval split
  (targets != -100) divided by the number of those targets.
* ``perplexity``: ``exp(eval_loss)``.
* ``bits_per_byte``: tokenizer-independent compression of the eval text,
  ``eval_loss * num_tokens / utf8_bytes / ln 2``: the loss per token times the split's
  tokens per UTF-8 byte (both totals from the loader: ``PackedLoader.num_tokens`` and
  ``.utf8_bytes`` of the source text), i.e. total nats over total bytes when every token
  is a target.  Special tokens (BOS/EOS) are predicted and counted in the nats but have no
  bytes, so a model pays for document boundaries as it should.
* ``eval_tokens_per_sec``: forward tokens per second over the split; ``eval_mfu`` uses
  forward FLOPs (a third of the training FLOPs per token).
* ``samples``: one continuation per ``training.sample_prompts`` entry (seeded sampling,
  temperature 0.8, top-k 50) when a tokenizer is given.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Optional

import torch

from lmcore.errors import LmcoreError
from lmcore.train.checkpoint import load_model
from lmcore.train.context import default_device
from lmcore.train.trainer import loss_chunk_rows, loss_totals
from lmcore.train.precision import resolve_precision
from lmcore.hardware.flops import device_peak_flops, mfu, model_flops_per_token

log = logging.getLogger(__name__)

STAGE_VERSION = "1"


def bits_per_byte(eval_loss: float, num_tokens: int, utf8_bytes: int) -> float:
    """Loss in nats per token -> bits per UTF-8 byte of the text those tokens encode."""
    if utf8_bytes <= 0:
        return float("nan")
    return eval_loss * num_tokens / utf8_bytes / math.log(2)


def sample_generations(model, tokenizer_dir: Path, prompts: list[str], max_new_tokens: int,
                       seed: int = 0) -> list[dict]:
    """``[{prompt, completion}]`` sampled from ``model`` with the run's tokenizer."""
    from lmcore.data.tokenizer import LmcoreTokenizer

    tok = LmcoreTokenizer.load(tokenizer_dir)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for prompt in prompts:
        ids = [tok.bos_id] + tok.encode(prompt)
        new = model.generate([ids], max_new_tokens=max_new_tokens, temperature=0.8, top_k=50,
                             stop_tokens=[tok.eos_id], generator=generator, pad_token_id=tok.pad_id)[0]
        out.append({"prompt": prompt, "completion": tok.decode(new)})
    return out


def run_evaluate(checkpoint_dir: Path, token_dirs: list[Path], tokenizer_dir: Optional[Path], cfg,
                 out_dir: Path, progress=None) -> dict:
    """Evaluate ``checkpoint_dir`` on the eval split of ``token_dirs``; write ``out_dir/metrics.json``.
    ``progress(batches_done, batches)`` follows the scoring pass."""
    from lmcore.data.loader import PackedLoader

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = default_device()
    model, model_cfg, meta = load_model(checkpoint_dir, device)
    precision = resolve_precision(cfg.precision, device, model_cfg.hidden_size)
    metrics: dict = {"checkpoint": str(checkpoint_dir), "step": meta.get("step"), "precision": precision.name,
                     "parameters": model_cfg.num_parameters(), "split": "eval"}
    try:
        loader = PackedLoader([Path(d) for d in token_dirs], "eval", seq_length=model_cfg.seq_length,
                              batch_size=cfg.training.batch_size, seed=cfg.training.seed, shuffle=False,
                              drop_last=False)
    except LmcoreError as exc:
        log.warning("no eval split to evaluate (%s)", exc)
        loader = None
    if loader is not None:
        start = time.perf_counter()
        nats, targets, tokens = loss_totals(model, loader, precision, device, progress=progress,
                                            chunk_rows=loss_chunk_rows(model, cfg.training))
        seconds = time.perf_counter() - start
        loss = nats / targets if targets else float("nan")
        tps = tokens / seconds if seconds > 0 else 0.0
        fwd_flops = model_flops_per_token(model_cfg, model_cfg.seq_length) / 3
        metrics.update({
            "eval_loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "bits_per_byte": bits_per_byte(loss, loader.num_tokens, loader.utf8_bytes),
            "eval_nats": nats, "eval_target_tokens": targets, "eval_split_tokens": loader.num_tokens,
            "eval_utf8_bytes": loader.utf8_bytes, "eval_seconds": seconds, "eval_tokens_per_sec": tps,
            "eval_mfu": mfu(tps, fwd_flops, device_peak_flops(device, precision.name)),
        })
    train_summary = meta.get("summary") or {}
    for key in ("tokens_per_sec", "mfu", "elapsed_s", "tokens"):
        if key in train_summary:
            metrics[f"train_{key}"] = train_summary[key]
    metrics["model_flops_per_token"] = model_flops_per_token(model_cfg, model_cfg.seq_length)
    if tokenizer_dir is not None and cfg.training.sample_prompts:
        metrics["samples"] = sample_generations(model, Path(tokenizer_dir), list(cfg.training.sample_prompts),
                                                cfg.training.sample_max_new_tokens, seed=cfg.training.seed)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
