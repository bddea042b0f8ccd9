"""Training on several devices: torchrun processes, DDP or FSDP2, and global loss normalisation.

Why torchrun: it is PyTorch's launcher for one node and for many (its rendezvous
is the multi-node story), it sets RANK / WORLD_SIZE / LOCAL_RANK for each
process, and it reports a failed child with its traceback. The train stage runs
in one ordinary process; when ``training.nproc_per_node > 1`` it re-launches
itself under torchrun (:func:`launch_torchrun`, used by
``lmcore.train.launch``) and every child builds a :class:`DistributedContext`
from the environment.

Strategies (``training.strategy``):

* ``ddp``: each rank holds the whole model; DDP broadcasts rank 0's weights at
  wrap time and averages gradients during backward.
* ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on every transformer
  block, then on the root, so parameters, gradients and optimizer states are
  sharded and one block at a time is gathered. Rank 0's weights are broadcast
  first so every rank starts from the same model (FSDP does not do this).

Loss normalisation: the loss is the sum of token losses over the *global*
number of target tokens of the update (all micro-batches, all ranks). DDP and
FSDP average gradients over ranks, so each rank backpropagates
``local_sum * world_size / global_tokens`` (:func:`gradient_scale`); the
gradient is then exactly that of one process seeing the global batch,
whatever way the loss mask is spread over ranks.

Only rank 0 writes checkpoints and talks to callbacks/MLflow (the trainer
checks ``ctx.is_main``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from lmcore.errors import LmcoreError
from lmcore.train.context import DistContext, single_process_context

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedError(LmcoreError):
    """A distributed launch or collective failed; carries the child's last output lines."""

    def __init__(self, message: str, output_tail: str = ""):
        self.output_tail = output_tail
        super().__init__(message + (f"\n--- last output ---\n{output_tail}" if output_tail else ""))


def inside_torchrun() -> bool:
    """True in a process started by torchrun (or any launcher that sets RANK/WORLD_SIZE/LOCAL_RANK)."""
    return all(k in os.environ for k in TORCHRUN_ENV)


@dataclass
class DistributedContext(DistContext):
    """This process's place in a torchrun job; the process group is created by :meth:`from_env`."""

    backend: Optional[str] = None

    @classmethod
    def from_env(cls, device_type: Optional[str] = None, timeout_s: float = 600.0,
                 group_of_one: bool = False) -> "DistributedContext":
        """Read RANK/WORLD_SIZE/LOCAL_RANK, pick the device, and init the process group
        (nccl on CUDA, gloo on CPU). Outside torchrun, or with one process, no group is made
        (unless ``group_of_one``: FSDP2 with CPU offload on a single GPU needs one)."""
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        kind = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
        if kind == "cuda":
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device(kind)
        ctx = cls(rank=rank, world_size=world, local_rank=local, device=device)
        if world > 1 or group_of_one:
            ctx.backend = "nccl" if kind == "cuda" else "gloo"
            if not dist.is_initialized():
                kwargs = {"device_id": device} if kind == "cuda" else {}
                dist.init_process_group(ctx.backend, timeout=timedelta(seconds=timeout_s), **kwargs)
                atexit.register(destroy_process_group)
            ctx.all_reduce_fn = _all_reduce_sum
            ctx.barrier_fn = dist.barrier
        return ctx

    def no_sync(self, model: nn.Module, skip_sync: bool):
        """Skip gradient sync on micro-batches that are not the last of an update (DDP and FSDP2)."""
        if not (skip_sync and self.world_size > 1):
            return contextlib.nullcontext()
        layer = model
        while isinstance(layer, nn.Module):  # through compile / fallback wrappers to DDP
            if hasattr(layer, "no_sync"):
                return layer.no_sync()
            layer = getattr(layer, "module", None) or getattr(layer, "_orig_mod", None)
        fsdp_root = _fsdp_root(model)
        if fsdp_root is not None:
            return _fsdp_sync_off(fsdp_root)
        return contextlib.nullcontext()

    def close(self) -> None:
        """Destroy the process group (idempotent)."""
        destroy_process_group()

    def __enter__(self) -> "DistributedContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def init_context(cfg=None) -> DistContext:
    """This process's context: a :class:`DistributedContext` under torchrun with more than one
    process (or with ``training.cpu_offload``, which shards with FSDP2 even on one GPU), the
    single-process context otherwise."""
    offload = cpu_offload(cfg)
    if inside_torchrun() and (int(os.environ["WORLD_SIZE"]) > 1 or offload):
        return DistributedContext.from_env(group_of_one=offload)
    return single_process_context()


def cpu_offload(cfg) -> bool:
    return bool(cfg is not None and not isinstance(cfg, str) and cfg.training.cpu_offload)


def wrap_for_training(model: nn.Module, cfg, ctx: DistContext) -> nn.Module:
    """The model as the trainer calls it: DDP/FSDP across processes (:func:`wrap_model`), else itself."""
    return model if ctx.world_size == 1 and not cpu_offload(cfg) else wrap_model(model, cfg, ctx)


# --------------------------------------------------------------------------- wrapping


def wrap_model(model: nn.Module, strategy, ctx: DistContext, param_dtype: Optional[torch.dtype] = None) -> nn.Module:
    """DDP or FSDP2 around ``model`` for ``ctx``. ``strategy`` is ``"ddp"``/``"fsdp"`` or a
    ``PipelineConfig`` (``training.strategy`` is read). One process: the model unchanged.

    For FSDP the module is sharded in place and returned (it keeps its class, its
    ``state_dict`` names and its forward); ``param_dtype`` is FSDP's compute dtype for
    gathered parameters (None: keep fp32 and let autocast cast per op, as the trainer does).
    """
    name = strategy if isinstance(strategy, str) else strategy.training.strategy
    offload = cpu_offload(strategy)
    if ctx.world_size == 1 and not offload:
        return model
    if name == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    if name == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        broadcast_parameters(model, src=0)
        kwargs = {}
        if param_dtype is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        if offload:  # parameters, gradients and optimizer state live in CPU memory; a block at a time on the GPU
            from torch.distributed.fsdp import CPUOffloadPolicy

            kwargs["offload_policy"] = CPUOffloadPolicy()
        for block in transformer_blocks(model):
            fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)
        return model
    raise ValueError(f"training.strategy must be 'ddp' or 'fsdp', not {name!r}")


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one: the first ``nn.ModuleList`` named
    ``layers``/``blocks``/``h``, else the largest ModuleList in the model."""
    for attr in ("layers", "blocks", "h"):
        found = getattr(model, attr, None)
        if isinstance(found, nn.ModuleList):
            return list(found)
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module under DDP / torch.compile wrappers (FSDP2 shards in place: itself)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (in place)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=src)


def is_sharded(model: nn.Module) -> bool:
    """True when ``model`` has FSDP2-sharded (DTensor) parameters."""
    return _fsdp_root(model) is not None


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict as plain CPU tensors. With FSDP this is a collective: call it
    on every rank; rank 0 gets the tensors, other ranks an empty dict."""
    if not is_sharded(model):
        return unwrap_model(model).state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer.state_dict()`` as an unsharded run would write it (parameters numbered in
    ``param_groups`` order), so a checkpoint loads the same with or without FSDP. A collective
    under FSDP: call on every rank; rank 0 gets the state, other ranks an empty dict."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer,
                                       options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not by_name:
        return {}
    index = {name: i for i, name in enumerate(_param_names_in_optimizer_order(model, optimizer))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in by_name["param_groups"]]
    return {"state": {index[n]: v for n, v in by_name["state"].items()}, "param_groups": groups}


def load_full_state(model: nn.Module, optimizer: Optional[torch.optim.Optimizer], model_state: dict,
                    optimizer_state: Optional[dict] = None) -> None:
    """Load full (unsharded) model and optimizer state into a possibly FSDP-sharded model; under
    FSDP every rank calls it with the full state. Plain models use ``load_state_dict``."""
    if not is_sharded(model):
        unwrap_model(model).load_state_dict(model_state)
        if optimizer is not None and optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizer is not None and optimizer_state is not None:
        names = _param_names_in_optimizer_order(model, optimizer)
        groups = [{**g, "params": [names[i] for i in g["params"]]} for g in optimizer_state["param_groups"]]
        by_name = {"state": {names[i]: v for i, v in optimizer_state["state"].items()}, "param_groups": groups}
        set_optimizer_state_dict(model, optimizer, by_name, options=options)


def _param_names_in_optimizer_order(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    names = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


class GatheredState:
    """Stands in for a module or optimizer whose full state was gathered: ``state_dict()`` returns it."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state


# --------------------------------------------------------------------------- global loss normalisation


def gradient_scale(global_tokens: int, ctx: DistContext) -> float:
    """Factor on a rank's summed token loss so that, after DDP/FSDP average gradients over
    ``world_size`` ranks, the gradient is that of the global mean token loss."""
    return ctx.world_size / max(1, int(global_tokens))


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _fsdp_root(model: nn.Module):
    from torch.distributed.fsdp import FSDPModule

    model = unwrap_model(model)
    return model if isinstance(model, FSDPModule) else None


@contextlib.contextmanager
def _fsdp_sync_off(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


# --------------------------------------------------------------------------- launching


@dataclass(frozen=True)
class Rendezvous:
    """torchrun's c10d rendezvous of several nodes: ``nnodes`` agents meet at ``endpoint`` (host:port)
    under ``run_id``. Ranks are assigned by the rendezvous, not by node number."""

    nnodes: int
    endpoint: str
    run_id: str

    def args(self) -> list[str]:
        return ["--nnodes", str(self.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", self.endpoint,
                "--rdzv-id", self.run_id]


def torchrun_command(nproc_per_node: int, module_or_script: str, args: Sequence[str] = (),
                     python: str = sys.executable, rendezvous: Optional[Rendezvous] = None) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N <module or script> args``, or
    with a :class:`Rendezvous` the multi-node form. A name ending in ``.py`` is a script; anything
    else runs as a module (``-m``)."""
    target = [module_or_script] if module_or_script.endswith(".py") else ["-m", module_or_script]
    nodes = rendezvous.args() if rendezvous is not None else ["--standalone", "--nnodes", "1"]
    return [python, "-m", "torch.distributed.run", *nodes, "--nproc_per_node", str(int(nproc_per_node)), *target,
            *map(str, args)]


def launch_torchrun(nproc_per_node: int, module_or_script: str, args: Iterable[str] = (),
                    on_line: Optional[Callable[[str], None]] = None, env: Optional[dict] = None,
                    cwd: Optional[str] = None, tail_lines: int = 60,
                    on_start: Optional[Callable[[subprocess.Popen], None]] = None,
                    rendezvous: Optional[Rendezvous] = None) -> None:
    """Run ``module_or_script`` in ``nproc_per_node`` torchrun processes and wait.

    Output (stdout and stderr of every rank, merged) is streamed line by line to
    ``on_line`` (default: this process's stdout). A non-zero exit raises
    :class:`DistributedError` with the last ``tail_lines`` lines, which hold the
    failing rank's traceback. torchrun runs in its own session (a terminal's Ctrl-C
    reaches only this process, which decides how to stop it); if this process is
    interrupted, the whole torchrun process group is killed. ``on_start(proc)`` is told
    the torchrun process.
    """
    if nproc_per_node < 1:
        raise ValueError("nproc_per_node must be >= 1")
    cmd = torchrun_command(nproc_per_node, module_or_script, list(args), rendezvous=rendezvous)
    child_env = dict(os.environ if env is None else env)
    for key in (*TORCHRUN_ENV, "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        child_env.pop(key, None)  # a parent already under torchrun must not leak its rank
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (root, child_env.get("PYTHONPATH")) if p)
    emit = on_line or (lambda line: print(line, flush=True))
    tail: deque[str] = deque(maxlen=tail_lines)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=child_env, cwd=cwd, start_new_session=True)
    if on_start is not None:
        on_start(proc)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            emit(line)
        code = proc.wait()
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and every rank it started
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    if code != 0:
        raise DistributedError(f"torchrun with {nproc_per_node} processes running {module_or_script} exited "
                               f"with code {code}", output_tail="\n".join(tail))
