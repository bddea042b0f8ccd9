"""``run_train`` over several processes: the parent launches torchrun, the children train.

Why a relay: the train stage's callbacks (MLflow, progress bars) live in the
parent process, which may be a Prefect task; the children are fresh torchrun
processes. The parent writes the run's inputs to a JSON spec, starts
``python -m torch.distributed.run ... -m lmcore.train.worker SPEC``, and rank 0
prints each callback event as one line ``@@lmcore-event {json}``; the parent
turns those lines back into calls on its callbacks while the run goes on and
returns the summary from ``on_train_end``. Everything else the children print
is passed through (to this module's logger).

Stopping: torchrun runs in its own session, so a terminal's Ctrl-C reaches this
process only. The first SIGINT/SIGTERM here writes the run's stop file
(``lmcore.train.interrupt.STOP_FILE``); rank 0 sees it, every rank stops after the
same update with a checkpoint, and this process raises ``TrainingInterrupted``. A
second signal kills the whole torchrun process group at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from lmcore.errors import ConfigError, LmcoreError, TrainingInterrupted
from lmcore.train import interrupt
from lmcore.train.callbacks import EVENTS, CallbackList
from lmcore.train.checkpoint import latest_good_checkpoint
from lmcore.train.distributed import DistributedError, launch_torchrun

log = logging.getLogger(__name__)

EVENT_PREFIX = "@@lmcore-event "


def run_train_multiprocess(cfg, model_cfg, token_dirs, tokenizer_dir, out_dir, callbacks: Iterable = (),
                           resume_from=None, nproc_per_node: Optional[int] = None, base=None) -> dict:
    """Run ``lmcore.train.stage.run_train`` in ``training.nproc_per_node`` torchrun processes;
    relay rank 0's callback events to ``callbacks``; return its summary."""
    nproc = int(nproc_per_node or cfg.training.nproc_per_node)
    _check_devices(nproc)
    emit = CallbackList(callbacks, is_main=True)
    result: dict[str, Any] = {}

    def on_line(line: str) -> None:
        if line.startswith(EVENT_PREFIX):
            event, args = _decode(line[len(EVENT_PREFIX):])
            if event == "on_train_end":
                result.update(args[0])
            if event == "on_checkpoint":
                args = [args[0], Path(args[1])]
            emit(event, *args)
        else:
            log.info("%s", line)

    with tempfile.TemporaryDirectory(prefix="lmcore-launch-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({
            "cfg": cfg.model_dump(mode="json"), "model_cfg": model_cfg.model_dump(mode="json"),
            "token_dirs": [str(d) for d in token_dirs], "tokenizer_dir": str(tokenizer_dir) if tokenizer_dir else None,
            "out_dir": str(out_dir), "resume_from": str(resume_from) if resume_from else None,
            "base": dataclasses.asdict(base) if base is not None else None}))
        stop_file = Path(out_dir) / interrupt.STOP_FILE
        stop_file.unlink(missing_ok=True)
        group: dict[str, int] = {}
        with interrupt.stop_on_signals(on_request=lambda signum: stop_file.write_text(str(signum)),
                                       on_hard_exit=lambda: _kill_group(group.get("pid"))):
            try:
                launch_torchrun(nproc, "lmcore.train.worker", [str(spec)], on_line=on_line,
                                on_start=lambda proc: group.update(pid=proc.pid))
            except DistributedError:
                signum = interrupt.stop_requested()
                if signum is None:
                    raise
                kept = latest_good_checkpoint(Path(out_dir))
                raise TrainingInterrupted(
                    f"training in {nproc} processes stopped by {interrupt.signal_name(signum)}; checkpoint kept: "
                    f"{kept or 'none yet'}. Run the same command again to resume from it.", signum=signum,
                    step=-1, checkpoint=kept) from None
    if not result:
        raise LmcoreError(f"distributed training in {nproc} processes ended without a summary")
    return result


def _kill_group(pid: Optional[int]) -> None:
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _check_devices(nproc: int) -> None:
    """One GPU per process on a CUDA machine; CPU (gloo) runs take any count."""
    import torch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise ConfigError(f"{nproc} processes but only {torch.cuda.device_count()} visible GPU(s); lower it "
                          "or set CUDA_VISIBLE_DEVICES", key="training.nproc_per_node")


class EventPrinter:
    """Rank 0's callback in a child: prints each event as one JSON line for the parent."""

    def __getattr__(self, name: str):
        if name not in EVENTS:
            raise AttributeError(name)
        return lambda *args: print(EVENT_PREFIX + json.dumps({"event": name, "args": list(args)}, default=str),
                                   flush=True)


def _decode(text: str) -> tuple[str, list]:
    payload = json.loads(text)
    return payload["event"], payload["args"]
