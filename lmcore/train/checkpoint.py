"""Checkpoint directories: written atomically, verified by sha256, loaded without pickled code.

Layout of one checkpoint (``<out>/checkpoints/step-XXXXXXXX/`` or ``<out>/final/``)::

    model.safetensors     weights, names of model.state_dict() (tied tensors stored under both names)
    optimizer.pt          optimizer.state_dict()                (torch.save; loaded weights_only=True)
    trainer_state.pt      step, tokens, epoch, loader state, RNG states, scaler, elapsed time
    config.json           the ModelConfig
    pipeline_config.json  the PipelineConfig the run used (when given)
    metadata.json         {format, step, tokens_seen, metrics, created, files: {name: {bytes, sha256}}}

Why this shape: the directory is built under a temporary name and renamed into place, so
a reader sees a complete checkpoint or none; ``metadata.json`` is written last and lists a
sha256 for every file, so truncation or bit rot is caught on load with a
:class:`~lmcore.errors.CheckpointError` that names the file, and resume falls back to the
previous good checkpoint (:func:`latest_good_checkpoint`).  Every ``.pt`` file is read
with ``torch.load(weights_only=True)``: a file carrying pickled code is refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from lmcore.errors import CheckpointError
from lmcore.store import sha256_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
TRAINER_STATE = "trainer_state.pt"
MODEL_CONFIG = "config.json"
PIPELINE_CONFIG = "pipeline_config.json"
METADATA = "metadata.json"
STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def _weights_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Clone so tied parameters become separate tensors: safetensors refuses shared storage.
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}


def save_checkpoint(dest: Path, *, model: torch.nn.Module, model_cfg, optimizer: torch.optim.Optimizer | None = None,
                    trainer_state: dict | None = None, pipeline_cfg=None, metadata: dict | None = None) -> Path:
    """Write a complete checkpoint at ``dest`` atomically (temp dir + rename); return ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_weights_for_saving(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER_STATE)
    (tmp / MODEL_CONFIG).write_text(json.dumps(model_cfg.model_dump(mode="json"), indent=2))
    if pipeline_cfg is not None:
        (tmp / PIPELINE_CONFIG).write_text(json.dumps(pipeline_cfg.model_dump(mode="json"), indent=2))
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir())}
    meta = {"format": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta.update(metadata or {})
    meta["files"] = files
    (tmp / METADATA).write_text(json.dumps(meta, indent=2, default=_json_default))
    _fsync_dir(tmp)
    if dest.exists():  # e.g. final/ rewritten by a rerun: move the old one aside, then drop it
        old = dest.parent / f".old-{dest.name}-{os.getpid()}"
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


def _json_default(value: Any):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _fsync_dir(path: Path) -> None:
    for p in path.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())


def read_metadata(ckpt_dir: Path) -> dict:
    path = Path(ckpt_dir) / METADATA
    if not path.is_file():
        raise CheckpointError("metadata.json is missing (incomplete checkpoint)", path=str(path))
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"metadata.json is not valid JSON ({exc})", path=str(path)) from None


def verify_checkpoint(ckpt_dir: Path) -> dict:
    """Check every file listed in metadata.json against its size and sha256; return the metadata."""
    ckpt_dir = Path(ckpt_dir)
    meta = read_metadata(ckpt_dir)
    files = meta.get("files")
    if not isinstance(files, dict) or WEIGHTS not in files:
        raise CheckpointError("metadata.json lists no model weights", path=str(ckpt_dir / METADATA))
    for name, info in files.items():
        path = ckpt_dir / name
        if not path.is_file():
            raise CheckpointError("file listed in metadata.json is missing", path=str(path))
        size = path.stat().st_size
        if size != info.get("bytes"):
            raise CheckpointError(f"truncated or altered: {size} bytes, expected {info.get('bytes')}", path=str(path))
        if sha256_file(path) != info.get("sha256"):
            raise CheckpointError("sha256 does not match metadata.json (corrupted)", path=str(path))
    return meta


def list_checkpoints(root: Path) -> list[Path]:
    """``step-*`` directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def _candidates(directory: Path) -> list[Path]:
    """Checkpoint dirs in or under ``directory`` (a run dir, its checkpoints/ dir, or one checkpoint)."""
    directory = Path(directory)
    if (directory / METADATA).exists() or (directory / WEIGHTS).exists():
        return [directory]
    found = list_checkpoints(directory) + list_checkpoints(directory / "checkpoints")
    final = directory / "final"
    if final.is_dir():
        found.append(final)
    return found


def latest_good_checkpoint(directory: Path) -> Optional[Path]:
    """Newest checkpoint under ``directory`` that verifies (by step; corrupted ones are skipped with a warning)."""
    scored = []
    for cand in _candidates(directory):
        try:
            step = int(read_metadata(cand).get("step", -1))
        except CheckpointError:
            step = -1
        scored.append((step, cand.name == "final", cand))
    for _, _, cand in sorted(scored, key=lambda s: (s[0], s[1]), reverse=True):
        try:
            verify_checkpoint(cand)
            return cand
        except CheckpointError as exc:
            log.warning("skipping bad checkpoint: %s", exc)
    return None


def load_torch_state(path: Path, map_location="cpu"):
    """A ``.pt`` state file read with ``weights_only=True``; anything else is a ``CheckpointError`` naming it."""
    return _torch_load_safe(Path(path), map_location)


def _torch_load_safe(path: Path, map_location="cpu"):
    if not path.is_file():
        raise CheckpointError("file is missing", path=str(path))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for pickled code; RuntimeError for a broken zip
        raise CheckpointError("refused to load: not plain tensors and containers "
                              f"(weights_only=True): {str(exc).splitlines()[0][:200]}", path=str(path)) from None


def load_weights(ckpt_dir: Path, model: torch.nn.Module, verify: bool = True) -> None:
    """Load model.safetensors into ``model`` (strict names)."""
    ckpt_dir = Path(ckpt_dir)
    if verify:
        verify_checkpoint(ckpt_dir)
    path = ckpt_dir / WEIGHTS
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors: {exc}", path=str(path)) from None
    _load_strict(model, tensors, path)


def _load_strict(model: torch.nn.Module, tensors: dict, path: Path) -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})",
                              path=str(path))


def load_optimizer_state(ckpt_dir: Path) -> dict:
    return _torch_load_safe(Path(ckpt_dir) / OPTIMIZER)


def load_trainer_state(ckpt_dir: Path) -> dict:
    return _torch_load_safe(Path(ckpt_dir) / TRAINER_STATE)


def load_model_config(ckpt_dir: Path):
    from lmcore.config import ModelConfig

    path = Path(ckpt_dir) / MODEL_CONFIG
    try:
        return ModelConfig(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise CheckpointError("config.json is missing", path=str(path)) from None
    except Exception as exc:
        raise CheckpointError(f"config.json is not a valid ModelConfig: {exc}", path=str(path)) from None


def load_model(ckpt_dir: Path, device: torch.device | str = "cpu"):
    """``(Transformer, ModelConfig, metadata)`` from a verified checkpoint directory (eval mode).

    A checkpoint of a LoRA run (``metadata["lora"]``) comes back as a plain model with the adapters
    merged into its weights.
    """
    from lmcore.model import Transformer

    ckpt_dir = Path(ckpt_dir)
    meta = verify_checkpoint(ckpt_dir)
    model_cfg = load_model_config(ckpt_dir)
    model = Transformer(model_cfg)
    if meta.get("lora"):
        from lmcore.model.lora import merged_state_dict

        tensors = merged_state_dict(load_file(str(ckpt_dir / WEIGHTS)), meta["lora"])
        _load_strict(model, tensors, ckpt_dir / WEIGHTS)
    else:
        load_weights(ckpt_dir, model, verify=False)
    model.to(device).eval()
    return model, model_cfg, meta


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the half-written checkpoint directories (``.tmp-*``, ``.old-*``) a killed session left in
    ``run_dir`` and its ``checkpoints/``; call only while owning the run directory."""
    removed = []
    for parent in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if parent.is_dir():
            for stale in parent.iterdir():
                if stale.is_dir() and stale.name.startswith((".tmp-", ".old-")):
                    shutil.rmtree(stale, ignore_errors=True)
                    removed.append(stale)
    return removed


def prune_checkpoints(root: Path, keep_last: int, best: Optional[Path] = None) -> list[Path]:
    """Delete step checkpoints except the newest ``keep_last`` and ``best``; return what was removed."""
    ckpts = list_checkpoints(root)
    keep = set(ckpts[-keep_last:]) if keep_last > 0 else set()
    if best is not None:
        keep.add(Path(best))
    removed = []
    for path in ckpts:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for stale in Path(root).glob(".tmp-*"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
    return removed
