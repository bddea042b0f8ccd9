"""Learning-quality experiment: examples/shakespeare-cpu.yaml end to end, held-out bits per byte.

Runs the lmcore stage functions directly (no Prefect, no MLflow): shard -> tokenizer ->
pretokenize (cached under --work by vocab size) -> run_train -> run_evaluate, and prints
one JSON line with the figures recorded in docs/experiments.md.

    .venv/bin/python benchmarks/exp_shakespeare.py [--set training.learning_rate=2e-3 ...] [--name tag]

Without ``--data`` it trains on the shipped split (``data/shakespeare/``, made by
``scripts/split_shakespeare.py``). ``--data`` is another JSONL with ``text`` and ``source``
(the play); the plays named by ``--heldout`` go to the eval split whole, so the held-out
figure measures new plays.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from lmcore.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ("comedy_of_errors", "julius_caesar", "twelfth_night")
EXAMPLE = ROOT / "examples" / "shakespeare-cpu.yaml"


def split_plays(data: Path, heldout: tuple[str, ...], out: Path) -> tuple[Path, Path]:
    """``data`` split by play with ``scripts/split_shakespeare.py`` into ``out``."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import split_shakespeare

    if split_shakespeare.main([str(data), "--out", str(out), "--heldout", *heldout]) != 0:
        raise SystemExit(2)
    return out / split_shakespeare.TRAIN_FILE, out / split_shakespeare.HELDOUT_FILE


def prepare(cfg: PipelineConfig, work: Path, vocab: int) -> tuple[Path, Path]:
    from lmcore.data.pretokenize import run_pretokenize_shard
    from lmcore.data.shard import run_shard
    from lmcore.data.tokenizer import run_train_tokenizer

    root = work / f"vocab-{vocab}"
    if (root / "done").exists():
        return root / "tokens", root / "tokenizer"
    run_shard(None, cfg.data, root / "shards")
    run_train_tokenizer(root / "shards", cfg.tokenizer, cfg.data, vocab, root / "tokenizer")
    for shard in sorted((root / "shards").glob("*.parquet")):
        run_pretokenize_shard(shard, root / "tokenizer", cfg, root / "tokens")
    (root / "done").write_text("ok")
    return root / "tokens", root / "tokenizer"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a JSONL (text, source) to split here instead of the shipped split")
    ap.add_argument("--config", type=Path, default=EXAMPLE, help="the recipe to run")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value override")
    ap.add_argument("--work", type=Path, default=Path("exp-shakespeare"), help="cache of splits and tokens")
    ap.add_argument("--heldout", nargs="*", default=list(HELDOUT), help="plays held out for evaluation")
    ap.add_argument("--name", default="run", help="tag of this experiment")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    overrides = list(args.overrides)
    if args.data is not None:
        train, held = split_plays(args.data, tuple(args.heldout), args.work / "data")
        overrides = [f"data.training_data_path=[{train}]", f"data.eval_data_path=[{held}]"] + overrides
    cfg = PipelineConfig.from_yaml(args.config, overrides=overrides)
    model_cfg = cfg.model.resolve()
    vocab = cfg.tokenizer.vocab_size or model_cfg.vocab_size
    start = time.perf_counter()
    token_dir, tok_dir = prepare(cfg, args.work, vocab)
    prep_s = time.perf_counter() - start

    from tokenizers import Tokenizer

    from lmcore.evaluate import run_evaluate
    from lmcore.train.callbacks import LoggingCallback
    from lmcore.train.stage import run_train

    actual_vocab = Tokenizer.from_file(str(tok_dir / "tokenizer.json")).get_vocab_size()
    model_cfg = model_cfg.model_copy(update={"vocab_size": actual_vocab})
    run_dir = args.work / "runs" / f"{args.name}-{int(time.time())}"
    summary = run_train(cfg, model_cfg, [token_dir], tok_dir, run_dir / "train", [LoggingCallback()])
    metrics = run_evaluate(run_dir / "train" / summary["checkpoint"], [token_dir], tok_dir, cfg, run_dir / "eval")
    result = {"name": args.name, "overrides": args.overrides, "params": model_cfg.num_parameters(),
              "vocab": actual_vocab, "prep_s": round(prep_s, 1), "steps": summary["steps"],
              "tokens": summary["tokens"], "epochs": summary["epochs"], "tokens_per_sec": round(summary["tokens_per_sec"]),
              "train_loss": summary["final_loss"], "eval_loss": metrics["eval_loss"],
              "heldout_bpb": metrics["bits_per_byte"], "precision": summary["precision"],
              "threads": __import__("torch").get_num_threads(),
              "sample": metrics.get("samples", [{}])[0].get("completion", "")[:200]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
