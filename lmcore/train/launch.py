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
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from lmcore.atomic_files import write_text_atomic
from lmcore.errors import ConfigError, LmcoreError, TrainingInterrupted
from lmcore.train import interrupt
from lmcore.train.callbacks import EVENTS, CallbackList
from lmcore.train.checkpoint import latest_good_checkpoint
from lmcore.locks import pid_alive
from lmcore.train.distributed import DistributedError, Rendezvous, launch_torchrun

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

    t = cfg.training
    rendezvous = Rendezvous(t.nnodes, t.rdzv_endpoint, Path(out_dir).name.lstrip(".")) if t.nnodes > 1 else None
    with tempfile.TemporaryDirectory(prefix="lmcore-launch-") as tmp:
        spec_data = {
            "cfg": cfg.model_dump(mode="json"), "model_cfg": model_cfg.model_dump(mode="json"),
            "token_dirs": [str(d) for d in token_dirs], "tokenizer_dir": str(tokenizer_dir) if tokenizer_dir else None,
            "out_dir": str(out_dir), "resume_from": str(resume_from) if resume_from else None,
            "base": dataclasses.asdict(base) if base is not None else None, "relay_events": True}
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps(spec_data))
        if rendezvous is not None:  # the other nodes find the run here (`lmcore train-node`)
            write_ticket(Path(out_dir), spec_data, rendezvous, nproc)
        stop_file = Path(out_dir) / interrupt.STOP_FILE
        stop_file.unlink(missing_ok=True)
        group: dict[str, int] = {}
        with interrupt.stop_on_signals(on_request=lambda signum: stop_file.write_text(str(signum)),
                                       on_hard_exit=lambda: _kill_group(group.get("pid"))):
            try:
                launch_torchrun(nproc, "lmcore.train.worker", [str(spec)], on_line=on_line,
                                on_start=lambda proc: group.update(pid=proc.pid), rendezvous=rendezvous)
            except DistributedError:
                signum = interrupt.stop_requested()
                if signum is None:
                    raise
                kept = latest_good_checkpoint(Path(out_dir))
                raise TrainingInterrupted(
                    f"training in {nproc} processes stopped by {interrupt.signal_name(signum)}; checkpoint kept: "
                    f"{kept or 'none yet'}. Run the same command again to resume from it.", signum=signum,
                    step=-1, checkpoint=kept) from None
            finally:
                (Path(out_dir) / TICKET).unlink(missing_ok=True)
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


# --------------------------------------------------------------------------- several nodes

TICKET = "rendezvous.json"


def write_ticket(out_dir: Path, spec: dict[str, Any], rendezvous: Rendezvous, nproc: int) -> Path:
    """What the other nodes need to join: the run's spec, the rendezvous and who wrote it (node 0)."""
    ticket = {**spec, "relay_events": False, "nproc_per_node": nproc, "host": socket.gethostname(),
              "pid": os.getpid(), "rendezvous": dataclasses.asdict(rendezvous)}
    write_text_atomic(out_dir / TICKET, json.dumps(ticket))
    return out_dir / TICKET


def find_ticket(cfg) -> Optional[dict[str, Any]]:
    """The open ticket of a train stage in ``cfg``'s store that this config can join (same ``nnodes`` and
    ``rdzv_endpoint``), newest first; None while there is none. A ticket of a dead node 0 on this
    host is ignored."""
    root = Path(cfg.paths.store) / "train"
    candidates = sorted(root.glob(f".work-*/{TICKET}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            ticket = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being written, or removed meanwhile
        meeting = ticket.get("rendezvous") or {}
        if meeting.get("nnodes") != cfg.training.nnodes or meeting.get("endpoint") != cfg.training.rdzv_endpoint:
            continue
        if ticket.get("host") == socket.gethostname() and not pid_alive(int(ticket.get("pid", -1))):
            continue
        return ticket
    return None


def join_training(cfg, wait_s: float = 3600.0, on_line=None, on_wait=None, poll_s: float = 1.0) -> None:
    """Node K of a multi-node run: wait for node 0's ticket in the shared store, then join its rendezvous
    with ``training.nproc_per_node`` local ranks until training ends. Only node 0 relays events (MLflow,
    progress); global rank 0, wherever it runs, writes the checkpoints into the shared store."""
    if cfg.training.nnodes < 2:
        raise ConfigError("lmcore train-node is for multi-node runs: set training.nnodes >= 2 and "
                          "training.rdzv_endpoint", key="training.nnodes")
    deadline = time.monotonic() + wait_s
    ticket = find_ticket(cfg)
    if ticket is None and on_wait is not None:
        on_wait(Path(cfg.paths.store) / "train")
    while ticket is None:
        if time.monotonic() > deadline:
            raise LmcoreError(f"no train stage to join in {Path(cfg.paths.store) / 'train'} after {wait_s:.0f} s: "
                              "start the pipeline on node 0 with the same config (training.nnodes, rdzv_endpoint)")
        time.sleep(poll_s)
        ticket = find_ticket(cfg)
    rendezvous = Rendezvous(**ticket["rendezvous"])
    nproc = int(ticket["nproc_per_node"])
    _check_devices(nproc)
    with tempfile.TemporaryDirectory(prefix="lmcore-node-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps(ticket), encoding="utf-8")
        launch_torchrun(nproc, "lmcore.train.worker", [str(spec)], on_line=on_line, rendezvous=rendezvous)


class EventPrinter:
    """The relaying rank's callback in a child (local rank 0 of the node that runs the pipeline): prints
    each event as one JSON line for the parent. ``every_rank``: it hears events even when its rank is
    not global rank 0 (metrics are global: every rank computes the same numbers)."""

    every_rank = True

    def __getattr__(self, name: str):
        if name not in EVENTS:
            raise AttributeError(name)
        return lambda *args: print(EVENT_PREFIX + json.dumps({"event": name, "args": list(args)}, default=str),
                                   flush=True)


def _decode(text: str) -> tuple[str, list]:
    payload = json.loads(text)
    return payload["event"], payload["args"]
