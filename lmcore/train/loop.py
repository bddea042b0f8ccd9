"""The training loop, :func:`fit`: updates, limits, evaluation, checkpoints, and a graceful stop.

:func:`fit` gathers ``gradient_accumulation_steps`` micro-batches per
update, sets the learning rate from the schedule (following elapsed time when
``training.max_time`` is set), stops at the first limit reached (``max_steps``,
``max_tokens``, ``max_time``, ``max_epochs``; a set ``max_steps`` or ``max_tokens`` wins over
``max_epochs`` and the data repeats), evaluates every ``eval_every`` updates,
checkpoints every ``checkpoint_every`` updates (keeping the last
``keep_last_checkpoints`` plus the best by eval loss), and ends with a complete
checkpoint in ``out_dir/final/``.

Resume: the train stage (:mod:`lmcore.train.stage`) restores weights, optimizer moments,
scaler, RNG states, loader position and counters from the newest checkpoint that verifies
and hands :func:`fit` the loader state, so on CPU a killed-and-resumed run ends bitwise equal
to an uninterrupted one.  Only the main rank writes checkpoints and calls callbacks.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Iterable, Optional

from lmcore.errors import TrainingDivergedError, TrainingInterrupted
from lmcore.hardware.flops import device_peak_flops, mfu, model_flops_per_token
from lmcore.train import checkpoint as ckpt
from lmcore.train import interrupt
from lmcore.train.callbacks import CallbackList
from lmcore.train.schedules import ScheduleSpec, lr_multiplier, run_progress, seq_length_at
from lmcore.train.trainer import Trainer

log = logging.getLogger(__name__)

FINAL = "final"  # the complete checkpoint evaluate and register use, relative to the run directory


def epoch_limit(training_cfg) -> Optional[int]:
    """``max_epochs``, unless ``max_steps`` or ``max_tokens`` is set: then the data repeats until that
    limit (as in the Hugging Face Trainer, where ``max_steps`` overrides the epochs)."""
    return None if (training_cfg.max_steps or training_cfg.max_tokens) else training_cfg.max_epochs


def estimate_total_steps(training_cfg, batches_per_epoch: int, tokens_per_step: int) -> Optional[int]:
    """Updates the run will make if no time budget stops it first (None if unbounded)."""
    accum = training_cfg.gradient_accumulation_steps
    epochs = epoch_limit(training_cfg)
    limits = [epochs * batches_per_epoch // accum] if batches_per_epoch and epochs else []
    if training_cfg.max_steps:
        limits.append(training_cfg.max_steps)
    if training_cfg.max_tokens:
        limits.append(math.ceil(training_cfg.max_tokens / tokens_per_step))
    return max(1, min(limits)) if limits else None


class _Batches:
    """Endless iteration over epochs of a loader, stopping after ``max_epochs`` (None: never); counts
    data wait.

    The epoch counter is the trainer's (``progress.epoch``); the loader is told with
    ``set_epoch`` at each rollover, so a loader restored at the very end of an epoch
    rolls over (or stops) exactly as the uninterrupted run did.
    """

    def __init__(self, loader, trainer: Trainer, max_epochs: Optional[int], loader_state: dict | None):
        self.loader, self.trainer, self.max_epochs = loader, trainer, max_epochs
        self.wait_s = 0.0
        self.done = False
        if loader_state is not None:
            loader.load_state_dict(loader_state)
        else:
            loader.set_epoch(trainer.progress.epoch)
        self.it = iter(loader)
        if loader_state is not None and loader_state.get("position", 0) >= len(loader):
            self._rollover()

    def _rollover(self) -> None:
        progress = self.trainer.progress
        if (self.max_epochs is not None and progress.epoch + 1 >= self.max_epochs) or len(self.loader) == 0:
            self.done = True
            return
        progress.epoch += 1
        self.loader.set_epoch(progress.epoch)
        self.it = iter(self.loader)

    def next(self):
        start = time.perf_counter()
        try:
            while not self.done:
                try:
                    return next(self.it)
                except StopIteration:
                    self._rollover()
            return None
        finally:
            self.wait_s += time.perf_counter() - start


def fit(trainer: Trainer, model_cfg, train_loader, eval_loader, out_dir: Path, callbacks: Iterable = (),
        loader_state: dict | None = None, resumed_from: Optional[Path] = None) -> dict:
    """Train until a limit is reached; write checkpoints and ``out_dir/final``; return the summary.

    A stop request (SIGINT/SIGTERM, or the stop file a relaying parent writes) ends the run after
    the current update with a checkpoint and :class:`TrainingInterrupted` (see ``interrupt``).
    """
    with interrupt.stop_on_signals():
        return _fit(trainer, model_cfg, train_loader, eval_loader, Path(out_dir), callbacks, loader_state,
                    resumed_from)


def _fit(trainer: Trainer, model_cfg, train_loader, eval_loader, out_dir: Path, callbacks: Iterable,
         loader_state: dict | None, resumed_from: Optional[Path]) -> dict:
    t = trainer.cfg.training
    stop_file = out_dir / interrupt.STOP_FILE
    ctx, progress = trainer.ctx, trainer.progress
    emit = CallbackList(callbacks, is_main=ctx.is_main)
    accum, seq = t.gradient_accumulation_steps, model_cfg.seq_length
    tokens_per_step = t.batch_size * seq * accum * ctx.world_size
    total_steps = estimate_total_steps(t, len(train_loader), tokens_per_step)
    spec = ScheduleSpec.from_training(t)
    warmup = t.seq_length_warmup
    flops_tok = model_flops_per_token(model_cfg, seq)
    peak = device_peak_flops(trainer.device, trainer.precision.name)
    batches = _Batches(train_loader, trainer, epoch_limit(t), loader_state)
    start_step = progress.step
    trainer.compile_for_run(None if total_steps is None else total_steps - start_step,
                            None if t.max_time is None else t.max_time - progress.elapsed_s)
    resumed = _relative(resumed_from, out_dir)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    emit("on_train_start", {"total_steps": total_steps, "start_step": start_step, "tokens_per_step": tokens_per_step,
                            "parameters": model_cfg.num_parameters(), "trainable_parameters": trainable,
                            "precision": trainer.precision.name, "compiled": trainer.compiled,
                            "device": str(trainer.device), "world_size": ctx.world_size, "resumed_from": resumed,
                            "max_time": t.max_time, "elapsed_s": progress.elapsed_s})

    session_start = time.perf_counter()
    elapsed_before = progress.elapsed_s
    window = {"t": 0.0, "tokens": 0, "losses": [], "wait": batches.wait_s}
    stopped_by, last_eval_step, last_metrics = "max_epochs", -1, {}
    stop_signum: Optional[int] = None
    session_train_s = 0.0  # data + update time this session (no eval, no checkpoints)

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - session_start

    while True:
        if stop_signum is not None:
            progress.elapsed_s = elapsed()
            _stop(trainer, model_cfg, out_dir, train_loader, emit, t, stop_signum)
        if t.max_steps and progress.step >= t.max_steps:
            stopped_by = "max_steps"
            break
        if t.max_tokens and progress.tokens_seen >= t.max_tokens:
            stopped_by = "max_tokens"
            break
        if t.max_time and elapsed() >= t.max_time:
            stopped_by = "max_time"
            break
        step_start = time.perf_counter()
        group = []
        for _ in range(accum):
            batch = batches.next()
            if batch is None:
                break
            group.append(batch)
        if len(group) < accum:  # epochs exhausted; a partial group would be a smaller-batch update
            break
        frac = run_progress(progress.step, total_steps, elapsed(), t.max_time)
        lr = t.learning_rate * lr_multiplier(spec, frac, progress.step, total_steps)
        if warmup is not None:  # progressive training: shorter rows early on, the same tokens
            length = seq_length_at(frac, seq, warmup.start, warmup.fraction)
            group = [b.repacked(length) for b in group]
        local_stop = interrupt.stop_requested() or (interrupt.stop_file_requested(stop_file) if ctx.is_main else None)
        result = trainer.train_step(group, lr, stop=local_stop is not None)
        group_tokens = sum(b.input_ids.numel() for b in group) * ctx.world_size
        progress.micro_steps += len(group)
        progress.tokens_seen += group_tokens
        progress.target_tokens_seen += result.target_tokens
        dt = time.perf_counter() - step_start
        progress.train_time_s += dt
        session_train_s += dt
        window["t"] += dt
        window["tokens"] += group_tokens
        # Every rank stops after the same update: the request rode on this update's all-reduce.
        if ctx.world_size == 1:
            stop_signum = interrupt.stop_requested()
        elif result.stop:
            stop_signum = local_stop or interrupt.stop_requested() or int(signal.SIGTERM)

        if result.nonfinite or not result.updated:
            progress.skipped_steps += 1
            if result.nonfinite:
                progress.consecutive_nonfinite += 1
                log.warning("non-finite loss or gradients at step %d (%d in a row); update skipped",
                            progress.step, progress.consecutive_nonfinite)
                if progress.consecutive_nonfinite >= t.max_nonfinite_steps:
                    good = ckpt.latest_good_checkpoint(out_dir)
                    raise TrainingDivergedError(
                        f"loss or gradients were non-finite for {progress.consecutive_nonfinite} updates in a row "
                        f"at step {progress.step}; last good checkpoint: {good or 'none'}. "
                        "Lower training.learning_rate, keep training.max_grad_norm > 0, or use bf16/fp32.",
                        key="training.max_nonfinite_steps", step=progress.step, checkpoint=good)
            continue
        progress.consecutive_nonfinite = 0
        progress.step += 1
        progress.last_loss = result.loss
        window["losses"].append(result.loss)
        step = progress.step

        if step % t.log_every == 0 or step == t.max_steps:
            tps = window["tokens"] / window["t"] if window["t"] > 0 else 0.0
            wait = batches.wait_s - window["wait"]
            last_metrics = {"loss": sum(window["losses"]) / len(window["losses"]), "lr": lr,
                            "grad_norm": result.grad_norm, "tokens_per_sec": tps,
                            "mfu": mfu(tps / ctx.world_size, flops_tok, peak), "tokens_seen": progress.tokens_seen,
                            "epoch": progress.epoch, "step": step,
                            "data_wait_fraction": wait / window["t"] if window["t"] > 0 else 0.0}
            if warmup is not None:
                last_metrics["seq_length"] = group[0].input_ids.shape[1]
            emit("on_log", step, last_metrics)
            window = {"t": 0.0, "tokens": 0, "losses": [], "wait": batches.wait_s}

        step_meta = {}
        if eval_loader is not None and step % t.eval_every == 0:
            step_meta = _run_eval(trainer, eval_loader, t.eval_batches, emit)
            last_eval_step = step
        if step % t.checkpoint_every == 0:
            progress.elapsed_s = elapsed()
            _save_step_checkpoint(trainer, model_cfg, out_dir, train_loader, step_meta, emit, t)

    # ------------------------------------------------------------------ end of run
    final_eval = {}
    if eval_loader is not None and last_eval_step != progress.step and progress.step > 0:
        final_eval = _run_eval(trainer, eval_loader, t.eval_batches, emit)
        final_eval.pop("is_best", None)
    # the final checkpoint's eval loss: this last evaluation, or the one the loop just ran at this step
    final_loss = final_eval.get("eval_loss", _last_eval_loss(progress) if last_eval_step == progress.step else None)
    if final_loss is not None and (progress.best_checkpoint_loss is None or final_loss <= progress.best_checkpoint_loss):
        progress.best_checkpoint, progress.best_checkpoint_loss = FINAL, final_loss
    progress.elapsed_s = elapsed()
    run_time = progress.train_time_s
    summary = {
        "steps": progress.step, "start_step": start_step, "tokens": progress.tokens_seen,
        "target_tokens": progress.target_tokens_seen, "epochs": progress.epoch + 1, "final_loss": progress.last_loss,
        "final_eval_loss": final_eval.get("eval_loss", _last_eval_loss(progress)),
        "best_eval_loss": progress.best_eval_loss, "best_checkpoint": progress.best_checkpoint,
        # throughput over the whole run, all sessions: a resumed run reports what training cost
        "tokens_per_sec": progress.tokens_seen / run_time if run_time > 0 else 0.0,
        "mfu": mfu(progress.tokens_seen / run_time / ctx.world_size, flops_tok, peak) if run_time > 0 else None,
        "data_wait_fraction": batches.wait_s / session_train_s if session_train_s > 0 else 0.0,
        "elapsed_s": progress.elapsed_s, "skipped_steps": progress.skipped_steps, "stopped_by": stopped_by,
        "precision": trainer.precision.name, "checkpoint": FINAL, "resumed_from": resumed,
        "trainable_parameters": trainable, "compiled": trainer.compiled,
        "compile_failed": bool(getattr(trainer.train_model, "compile_failed", False)),
    }
    final_dir = out_dir / FINAL
    if ctx.is_main or trainer.sharded:  # FSDP: saving gathers over every rank; rank 0 writes
        meta = {"metrics": {"loss": progress.last_loss, **final_eval}, "stopped_by": stopped_by, "summary": summary}
        trainer.save(final_dir, model_cfg, train_loader.state_dict(), meta)
    if ctx.is_main:
        emit("on_checkpoint", progress.step, final_dir)
    ctx.barrier()
    emit("on_train_end", summary)
    return summary


def _relative(path: Optional[Path], root: Path) -> Optional[str]:
    """``path`` relative to the run directory (which is renamed when the stage is published)."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _stop(trainer: Trainer, model_cfg, out_dir: Path, train_loader, emit, t, signum: int) -> None:
    """Checkpoint the current step (unless it just was) and raise :class:`TrainingInterrupted`."""
    progress = trainer.progress
    dest = out_dir / "checkpoints" / ckpt.step_dir_name(progress.step)
    if progress.step > 0 and not (dest / ckpt.METADATA).is_file():
        _save_step_checkpoint(trainer, model_cfg, out_dir, train_loader, {}, emit, t)
    kept = ckpt.latest_good_checkpoint(out_dir) if trainer.ctx.is_main else dest
    raise TrainingInterrupted(
        f"training stopped by {interrupt.signal_name(signum)} after step {progress.step}; "
        f"checkpoint kept: {kept or 'none yet (stopped before the first update)'}. "
        "Run the same command again to resume from it.", signum=signum, step=progress.step, checkpoint=kept)


def _last_eval_loss(progress) -> Optional[float]:
    return progress.history[-1][1] if progress.history else None


def _run_eval(trainer: Trainer, eval_loader, eval_batches: int, emit) -> dict:
    metrics = trainer.evaluate(eval_loader, eval_batches)
    progress = trainer.progress
    progress.history.append([progress.step, metrics["eval_loss"]])
    if progress.best_eval_loss is None or metrics["eval_loss"] < progress.best_eval_loss:
        progress.best_eval_loss = metrics["eval_loss"]
        metrics["is_best"] = True
    emit("on_eval", progress.step, metrics)
    return metrics


def _save_step_checkpoint(trainer: Trainer, model_cfg, out_dir: Path, train_loader, step_meta: dict, emit,
                          t) -> None:
    progress = trainer.progress
    root = out_dir / "checkpoints"
    dest = root / ckpt.step_dir_name(progress.step)
    step_meta.pop("is_best", None)
    eval_loss = step_meta.get("eval_loss")
    if eval_loss is not None and (progress.best_checkpoint_loss is None or eval_loss < progress.best_checkpoint_loss):
        progress.best_checkpoint = dest.relative_to(out_dir).as_posix()
        progress.best_checkpoint_loss = eval_loss
    if trainer.ctx.is_main or trainer.sharded:  # FSDP: saving gathers over every rank; rank 0 writes
        trainer.save(dest, model_cfg, train_loader.state_dict(),
                     {"metrics": {"loss": progress.last_loss, **step_meta}})
    if trainer.ctx.is_main:
        best = out_dir / progress.best_checkpoint if progress.best_checkpoint else None
        ckpt.prune_checkpoints(root, t.keep_last_checkpoints, best=best)
        emit("on_checkpoint", progress.step, dest)
    trainer.ctx.barrier()
