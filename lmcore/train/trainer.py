"""One optimizer update, the token-weighted loss, and the state an exact resume needs.

:class:`Trainer` holds the model, the optimizer (AdamW, or Muon + AdamW), precision and grad
scaler, and does one update from a group of micro-batches (:meth:`Trainer.train_step`).  The loss is normalised
by the number of target tokens in the *whole* accumulation group, summed over ranks:
each micro-batch contributes ``sum(CE over targets != -100) / total_targets``, so the
gradient equals that of one big batch whatever ``gradient_accumulation_steps`` is and
however the loss mask is distributed among the micro-batches.

Non-finite handling: a non-finite loss skips the update; non-finite gradients are
skipped by the GradScaler in fp16 and by the trainer otherwise.  The caller counts
consecutive skips (``lmcore.train.loop``) and stops the run when there are too many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lmcore.data.loader import attention_doc_ids
from lmcore.model.loss import cross_entropy_sum
from lmcore.train import checkpoint as ckpt
from lmcore.train.context import DistContext, single_process_context
from lmcore.train.distributed import (GatheredState, full_optimizer_state_dict, full_state_dict, gradient_scale,
                                      is_sharded, load_full_state, wrap_for_training)
from lmcore.train.optim import build_optimizer, set_learning_rate
from lmcore.train.compile import CompiledWithFallback, compile_pays, maybe_compile
from lmcore.train.precision import Precision, resolve_precision
from lmcore.train.state import TrainProgress, capture_rng_state, from_safe, restore_rng_state, to_safe



@dataclass
class StepResult:
    loss: float            # mean nats per target token over the group (all ranks)
    grad_norm: float       # before clipping
    target_tokens: int     # targets in the group (all ranks)
    updated: bool          # an optimizer step was taken
    nonfinite: bool        # loss or gradients were not finite (counts toward divergence)
    stop: bool = False     # some rank was asked to stop (agreed through this update's all-reduce)


def model_width(model: torch.nn.Module) -> int | None:
    """``config.hidden_size`` of lmcore's Transformer (precision ``auto`` weighs it on a CPU); None otherwise."""
    return getattr(getattr(model, "config", None), "hidden_size", None)


def batch_loss_sum(model: torch.nn.Module, ids: torch.Tensor, doc_ids, targets: torch.Tensor,
                   chunk_rows: int) -> torch.Tensor:
    """Summed nats of ``model`` on one batch. ``chunk_rows`` > 0: the model computes its head and loss in
    chunks of that many tokens without the full logits (``lmcore.model.loss``); 0: through the logits."""
    if chunk_rows > 0:
        return model(ids, doc_ids=doc_ids, targets=targets, loss_chunk_rows=chunk_rows)
    return cross_entropy_sum(model(ids, doc_ids=doc_ids), targets)


def loss_chunk_rows(model: torch.nn.Module, training_cfg) -> int:
    """``training.loss_chunk_rows`` for lmcore's Transformer (which computes its own loss), else 0."""
    from lmcore.model import Transformer

    return int(training_cfg.loss_chunk_rows) if isinstance(model, Transformer) else 0


@torch.no_grad()
def loss_totals(model: torch.nn.Module, batches, precision: Precision, device: torch.device,
                max_batches: int | None = None, progress=None, chunk_rows: int = 0) -> tuple[float, int, int]:
    """``(total nats, target tokens, input tokens)`` of ``model`` over ``batches`` (eval mode, restored after);
    ``progress(done, total)`` after each batch when given."""
    was_training = model.training
    model.eval()
    nats = torch.zeros((), dtype=torch.float64, device=device)
    targets = tokens = 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            ids = batch.input_ids.to(device, non_blocking=True)
            tgt = batch.targets.to(device, non_blocking=True)
            with precision.autocast():
                docs = attention_doc_ids(batch.doc_ids)
                docs = None if docs is None else docs.to(device, non_blocking=True)
                nats += batch_loss_sum(model, ids, docs, tgt, chunk_rows).double()
            targets += int(batch.num_target_tokens)
            tokens += ids.numel()
            if progress is not None:
                progress(i + 1, min(len(batches), max_batches or len(batches)))
    finally:
        model.train(was_training)
    return float(nats.item()), targets, tokens


class Trainer:
    """Model + optimizer + precision for one run; ``train_step`` makes one update."""

    def __init__(self, model: torch.nn.Module, cfg, ctx: DistContext | None = None):
        self.cfg = cfg
        self.ctx = ctx or single_process_context(next(model.parameters()).device)
        self.device = self.ctx.device
        self.model = model.to(self.device)           # the plain module: state_dict names, checkpoints
        self.model.train()
        self.precision = resolve_precision(cfg.precision, self.device, model_width(model))
        # use_compile True compiles now; auto waits for the run's length (compile_for_run)
        self.train_model = maybe_compile(wrap_for_training(self.model, cfg, self.ctx),
                                         cfg.precision.use_compile is True, cfg.precision.compile_mode)
        # CPU offload: the optimizer steps on the CPU copies of the parameters
        self.optimizer = build_optimizer(self.model, cfg.training, "cpu" if cfg.training.cpu_offload else self.device)
        self.scaler = self.precision.grad_scaler()
        self.progress = TrainProgress()
        self.loss_chunk_rows = loss_chunk_rows(self.model, cfg.training)

    def compile_for_run(self, planned_steps: int | None, planned_seconds: float | None) -> bool:
        """Compile now if ``precision.use_compile: auto`` finds it pays for a run of that length
        (:func:`lmcore.train.compile.compile_pays`); returns whether the model is compiled."""
        precision = self.cfg.precision
        if not self.compiled and compile_pays(precision.use_compile, self.device, planned_steps, planned_seconds):
            self.train_model = maybe_compile(self.train_model, True, precision.compile_mode)
        return self.compiled

    @property
    def compiled(self) -> bool:
        """The training module is compiled (``compile_failed`` on it says whether compiling then failed)."""
        return isinstance(self.train_model, CompiledWithFallback)

    # ------------------------------------------------------------------ one update
    def train_step(self, micro_batches: list, lr: float, stop: bool = False) -> StepResult:
        """Forward/backward every micro-batch, then clip and step (or skip when non-finite).

        ``stop``: this rank was asked to stop; the flag rides on the all-reduce of the target
        count, so every rank learns of any rank's request at the same update.
        """
        set_learning_rate(self.optimizer, lr)
        local_targets = sum(int(b.num_target_tokens) for b in micro_batches)
        total_targets, stops = (int(v) for v in self.ctx.all_reduce_sum(
            torch.tensor([local_targets, int(stop)], dtype=torch.int64, device=self.device)).tolist())
        if total_targets == 0:
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(float("nan"), 0.0, 0, updated=False, nonfinite=False, stop=stops > 0)
        scale = gradient_scale(total_targets, self.ctx)  # DDP/FSDP average over ranks: this makes it a sum
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        last = len(micro_batches) - 1
        for i, batch in enumerate(micro_batches):
            ids = batch.input_ids.to(self.device, non_blocking=True)
            tgt = batch.targets.to(self.device, non_blocking=True)
            docs = attention_doc_ids(batch.doc_ids)
            docs = None if docs is None else docs.to(self.device, non_blocking=True)
            with self.ctx.no_sync(self.train_model, skip_sync=i < last):
                with self.precision.autocast():
                    nats = batch_loss_sum(self.train_model, ids, docs, tgt, self.loss_chunk_rows)
                self.scaler.scale(nats * scale).backward()
            loss_sum += nats.detach()
        loss_sum = self.ctx.all_reduce_sum(loss_sum)

        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.training.max_grad_norm or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: the norm is a DTensor
            grad_norm = grad_norm.full_tensor()
        loss_t, norm_t = torch.stack([loss_sum / total_targets, grad_norm.float()]).tolist()
        loss_ok, grads_ok = math.isfinite(loss_t), math.isfinite(norm_t)

        updated = False
        if not loss_ok:
            pass
        elif self.scaler.is_enabled():
            before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)   # skips internally when grads overflowed
            self.scaler.update()
            updated = self.scaler.get_scale() >= before
        elif grads_ok:
            self.optimizer.step()
            updated = True
        self.optimizer.zero_grad(set_to_none=True)
        nonfinite = not loss_ok or (not grads_ok and not self.scaler.is_enabled())
        return StepResult(loss_t, norm_t, total_targets, updated=updated, nonfinite=nonfinite, stop=stops > 0)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, loader, max_batches: int | None) -> dict:
        """Token-weighted loss over the first ``max_batches`` of ``loader`` (from its start, every time)."""
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(0)
        nats, targets, tokens = loss_totals(self.model, loader, self.precision, self.device, max_batches,
                                            chunk_rows=self.loss_chunk_rows)
        totals = self.ctx.all_reduce_sum(torch.tensor([nats, float(targets)], dtype=torch.float64,
                                                      device=self.device)).tolist()
        loss = totals[0] / totals[1] if totals[1] else float("nan")
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_tokens": int(totals[1])}

    # ------------------------------------------------------------------ checkpoints
    def trainer_state(self, loader_state: dict | None) -> dict:
        return {"progress": self.progress.state_dict(), "rng": capture_rng_state(),
                "scaler": self.scaler.state_dict(), "loader": to_safe(loader_state)}

    @property
    def sharded(self) -> bool:
        """True under FSDP: saving and loading are then collectives over every rank."""
        return self.ctx.world_size > 1 and is_sharded(self.model)

    def save(self, dest, model_cfg, loader_state: dict | None, metadata: dict | None = None):
        """Write a checkpoint. Under FSDP every rank calls this (the full state is gathered) and
        only rank 0 writes; other ranks get None."""
        meta = {"step": self.progress.step, "tokens_seen": self.progress.tokens_seen, "epoch": self.progress.epoch}
        if self.cfg.training.lora is not None:  # the weights hold adapters: loaders merge them
            meta["lora"] = self.cfg.training.lora.model_dump(mode="json")
        meta.update(metadata or {})
        model, optimizer = self.model, self.optimizer
        if self.sharded:
            model = GatheredState(full_state_dict(self.model))
            optimizer = GatheredState(full_optimizer_state_dict(self.model, self.optimizer))
            if not self.ctx.is_main:
                return None
        return ckpt.save_checkpoint(dest, model=model, model_cfg=model_cfg, optimizer=optimizer,
                                    trainer_state=self.trainer_state(loader_state), pipeline_cfg=self.cfg,
                                    metadata=meta)

    def load(self, ckpt_dir) -> dict | None:
        """Restore weights, optimizer, scaler, RNG and progress from ``ckpt_dir``; return the loader state."""
        if self.sharded:  # FSDP: every rank reads the full state and keeps its shard
            from safetensors.torch import load_file

            ckpt.verify_checkpoint(ckpt_dir)
            load_full_state(self.model, self.optimizer, load_file(str(Path(ckpt_dir) / ckpt.WEIGHTS)),
                            ckpt.load_optimizer_state(ckpt_dir))
        else:
            ckpt.load_weights(ckpt_dir, self.model)
            self.optimizer.load_state_dict(ckpt.load_optimizer_state(ckpt_dir))
        state = ckpt.load_trainer_state(ckpt_dir)
        self.progress = TrainProgress.from_state_dict(state["progress"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        return from_safe(state.get("loader"))
