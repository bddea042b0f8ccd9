"""The train stage: ``run_train`` builds the model, loaders and trainer, resumes, and runs the loop.

``run_train(cfg, model_cfg, token_dirs, tokenizer_dir, out_dir, callbacks)`` is what the Prefect
task calls with the store's work directory as ``out_dir``: everything the run writes
(checkpoints, ``final/``) lives there, and calling it again on the same directory continues from
the newest checkpoint that verifies (a killed, interrupted or diverged run loses only the steps
since its last checkpoint).  With ``training.nproc_per_node > 1`` outside torchrun it relaunches
itself there (:mod:`lmcore.train.launch`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Optional

from lmcore.base_model import BaseModel
from lmcore.errors import ConfigError, LmcoreError
from lmcore.model.lora import apply_lora
from lmcore.train import checkpoint as ckpt
from lmcore.train import interrupt
from lmcore.train.distributed import init_context, inside_torchrun
from lmcore.train.launch import run_train_multiprocess
from lmcore.train.loop import fit
from lmcore.train.state import seed_everything
from lmcore.train.trainer import Trainer

log = logging.getLogger(__name__)

STAGE_VERSION = "2"  # 2: a set max_steps / max_tokens wins over max_epochs (the data repeats)

def build_model(model_cfg):
    """The model to train (seam for other architectures)."""
    from lmcore.model import Transformer

    return Transformer(model_cfg)


def build_loaders(cfg, model_cfg, token_dirs: list[Path], ctx):
    """``(train_loader, eval_loader or None)`` over the token dirs for this rank."""
    from lmcore.data.loader import PackedLoader

    t = cfg.training
    train = PackedLoader(token_dirs, "train", seq_length=model_cfg.seq_length, batch_size=t.batch_size,
                         seed=t.seed, rank=ctx.rank, world_size=ctx.world_size, shuffle=True, drop_last=True)
    if len(train) == 0:
        raise LmcoreError(f"the train split has fewer tokens than one batch of {t.batch_size} x "
                          f"{model_cfg.seq_length}; lower training.batch_size or model seq_length")
    try:
        evaluation = PackedLoader(token_dirs, "eval", seq_length=model_cfg.seq_length, batch_size=t.batch_size,
                                  seed=t.seed, rank=ctx.rank, world_size=ctx.world_size, shuffle=False,
                                  drop_last=False)
        if len(evaluation) == 0:
            evaluation = None
    except (LmcoreError, FileNotFoundError, ValueError) as exc:
        log.info("no eval split (%s): training without evaluation", exc)
        evaluation = None
    return train, evaluation


def _check_vocab(tokenizer_dir: Optional[Path], model_cfg) -> None:
    if tokenizer_dir is None or not (Path(tokenizer_dir) / "tokenizer.json").is_file():
        return
    from lmcore.data.tokenizer import read_tokenizer_file

    size = read_tokenizer_file(Path(tokenizer_dir) / "tokenizer.json").get_vocab_size()
    if size > model_cfg.vocab_size:
        raise LmcoreError(f"tokenizer has {size} tokens but the model vocab_size is {model_cfg.vocab_size}; "
                          "build the model with the tokenizer's vocab_size")


def run_train(cfg, model_cfg, token_dirs: list[Path], tokenizer_dir: Optional[Path], out_dir: Path,
              callbacks: Iterable = (), resume_from: Optional[Path] = None, base: Optional[BaseModel] = None) -> dict:
    """Train ``model_cfg`` on ``token_dirs``; checkpoints under ``out_dir``; returns the summary dict.

    Resumes from the newest good checkpoint in ``resume_from`` or ``out_dir`` when there is one;
    otherwise a ``base`` model's weights are loaded before step 0 (the optimizer and schedule
    start fresh). ``training.lora`` then wraps the target layers with adapters and freezes the rest.
    Summary keys: steps, tokens, final_loss, best_eval_loss, tokens_per_sec, checkpoint (final dir), ...
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0") or 0) == 0:
        ckpt.remove_partial_writes(out_dir)  # a killed session's half-written checkpoint, an old stop request
        (out_dir / interrupt.STOP_FILE).unlink(missing_ok=True)
    _check_vocab(tokenizer_dir, model_cfg)
    if cfg.training.cpu_offload:
        _check_offload()
    if (cfg.training.nproc_per_node > 1 or cfg.training.nnodes > 1 or cfg.training.cpu_offload) \
            and not inside_torchrun():
        # relaunch under torchrun; callbacks hear rank 0's events here
        return run_train_multiprocess(cfg, model_cfg, token_dirs, tokenizer_dir, out_dir, callbacks, resume_from,
                                      base=base)
    ctx = init_context(cfg)
    seed_everything(cfg.training.seed + ctx.rank)
    model = build_model(model_cfg)
    train_loader, eval_loader = build_loaders(cfg, model_cfg, [Path(d) for d in token_dirs], ctx)
    source = ckpt.latest_good_checkpoint(Path(resume_from) if resume_from else out_dir)
    if source is None and base is not None:
        log.info("starting from the weights of %s", base.source)
        load_base_weights(model, base)
    lora = cfg.training.lora
    if lora is not None:
        trainable = apply_lora(model, lora.rank, lora.alpha, lora.dropout, lora.targets)
        log.info("LoRA rank %d on %s: %s trainable parameters of %s", lora.rank, ", ".join(lora.targets),
                 f"{trainable:,}", f"{sum(p.numel() for p in model.parameters()):,}")
    trainer = Trainer(model, cfg, ctx)
    loader_state, resumed = None, None
    if source is not None:
        log.info("resuming from %s", source)
        loader_state = trainer.load(source)
        resumed = source
    summary = fit(trainer, model_cfg, train_loader, eval_loader, out_dir, callbacks, loader_state, resumed)
    if base is not None:
        summary["base"] = base.lineage
    return summary


def _check_offload() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("training.cpu_offload moves parameters, gradients and optimizer state from GPU memory "
                          "to CPU memory; this machine has no CUDA GPU (train without it on a CPU)",
                          key="training.cpu_offload")


def load_base_weights(model, base: BaseModel) -> None:
    """The base model's weights into ``model`` (names and shapes must match: the architecture came from it)."""
    try:
        model.load_state_dict(base.state_dict(), strict=True)
    except RuntimeError as exc:
        raise LmcoreError(f"{base.dir}: the base model's weights do not fit the model to train "
                          f"({str(exc).splitlines()[0][:200]})") from None
