"""ModelManager: the local folder of registered models, ``models/<model_id>/``.

Why a folder and not only MLflow: a registered model must load with nothing
but lmcore installed (``ModelManager("models").load_model(id)``), be readable
by a person (``metadata.json``) and refuse to load silently corrupted weights
(sha256 of every file, checked on load).

Layout of ``models/<model_id>/``: ``model.safetensors`` (names of
``model.state_dict()``), ``config.json`` (the ``ModelConfig``), the tokenizer
files (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``),
``metadata.json`` and, when given, ``optimizer.pt`` (optimizer state dict) and
``scheduler.json`` (scheduler state dict).

``load_model`` returns ``(model, tokenizer, metadata, optimizer_state, scheduler_state)``:
the optimizer and scheduler come back as *state dicts* (or None), because
rebuilding them needs the caller's parameter groups; pass them to
``optimizer.load_state_dict`` / ``scheduler.load_state_dict``.

Model ids sort by time and read well: ``<name>-<YYYYmmdd-HHMMSS>-<6 hex>``.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from lmcore.errors import CheckpointError, ModelNotFoundError
from lmcore.locks import FileLock, is_locked
from lmcore.store import sha256_file

METADATA = "metadata.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def new_model_id(name: str = "lmcore") -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{_ID_SAFE.sub('-', name).strip('-') or 'lmcore'}-{stamp}-{secrets.token_hex(3)}"


def _state_dict(obj: Any) -> dict | None:
    if obj is None:
        return None
    return obj if isinstance(obj, dict) else obj.state_dict()


class ModelManager:
    """Save, list, load and delete models under ``root``."""

    def __init__(self, root: str | Path = "models"):
        self.root = Path(root)

    # ------------------------------------------------------------------ saving
    def save_model(self, model: Any, tokenizer: Any, metadata: dict[str, Any], optimizer: Any = None,
                   scheduler: Any = None, model_id: str | None = None,
                   extra_files: dict[str, Callable[[Path], None]] | None = None) -> str:
        """Write a model (an ``lmcore.model.Transformer``) and its tokenizer; returns the model id.
        ``extra_files`` maps a file name to a function that writes it (a LoRA adapter, say)."""
        from safetensors.torch import save_model as save_weights

        def write(tmp: Path) -> None:
            save_weights(model, str(tmp / WEIGHTS))
            (tmp / CONFIG).write_text(model.config.model_dump_json(indent=2), encoding="utf-8")
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            self._write_optim(tmp, optimizer, scheduler)
            for name, write_file in (extra_files or {}).items():
                write_file(tmp / name)

        return self._publish(write, metadata, model_id)

    def import_checkpoint(self, checkpoint_dir: str | Path, tokenizer_dir: str | Path | None,
                          metadata: dict[str, Any], model_id: str | None = None,
                          include_optimizer: bool = False) -> str:
        """Register a trainer checkpoint folder by copying its files (no torch import needed)."""
        checkpoint_dir = Path(checkpoint_dir)
        for needed in (WEIGHTS, CONFIG):
            if not (checkpoint_dir / needed).is_file():
                raise CheckpointError("missing from checkpoint", path=str(checkpoint_dir / needed))

        def write(tmp: Path) -> None:
            shutil.copy2(checkpoint_dir / WEIGHTS, tmp / WEIGHTS)
            shutil.copy2(checkpoint_dir / CONFIG, tmp / CONFIG)
            if tokenizer_dir is not None:
                for name in TOKENIZER_FILES:
                    if (Path(tokenizer_dir) / name).is_file():
                        shutil.copy2(Path(tokenizer_dir) / name, tmp / name)
            if include_optimizer and (checkpoint_dir / OPTIMIZER).is_file():
                shutil.copy2(checkpoint_dir / OPTIMIZER, tmp / OPTIMIZER)

        return self._publish(write, metadata, model_id)

    def _write_optim(self, tmp: Path, optimizer: Any, scheduler: Any) -> None:
        opt_state, sched_state = _state_dict(optimizer), _state_dict(scheduler)
        if opt_state is not None:
            import torch

            torch.save(opt_state, tmp / OPTIMIZER)
        if sched_state is not None:
            (tmp / SCHEDULER).write_text(json.dumps(sched_state, indent=2, default=repr), encoding="utf-8")

    def _publish(self, write, metadata: dict[str, Any], model_id: str | None) -> str:
        import lmcore
        from lmcore.config import ModelConfig

        model_id = self.check_id(model_id or new_model_id(str(metadata.get("name") or "lmcore")))
        if (self.root / model_id).exists():
            raise CheckpointError("a model with this id already exists", path=str(self.root / model_id))
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{model_id}-{secrets.token_hex(4)}"
        lock = FileLock(f"{tmp}.lock")  # held while the copy is written: a gc never takes live work
        lock.acquire()
        tmp.mkdir()
        try:
            write(tmp)
            config = json.loads((tmp / CONFIG).read_text(encoding="utf-8"))
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            size = sum((tmp / name).stat().st_size for name in files)
            meta = {
                "id": model_id,
                "name": metadata.get("name") or model_id.rsplit("-", 3)[0],
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "parameters": ModelConfig(**config).num_parameters(),
                "size_mb": round(size / 1e6, 3),
                "lmcore_version": lmcore.__version__,
                "model_config": config,
                **{k: v for k, v in metadata.items() if k not in ("id", "files")},
                "files": files,
            }
            (tmp / METADATA).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
            tmp.rename(self.root / model_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            lock.remove()
        return model_id

    def remove_abandoned(self, path: Path) -> bool:
        """Delete one :meth:`abandoned` copy unless a writer holds it (then False)."""
        lock = FileLock(f"{path}.lock")
        if not lock.acquire(blocking=False):
            return False
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            lock.remove()
        return True

    def abandoned(self) -> list[tuple[Path, int]]:
        """``(folder, bytes)`` of half-written model copies whose writer is gone (what ``store gc`` frees)."""
        if not self.root.is_dir():
            return []
        return [(p, sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
                for p in sorted(self.root.glob(".tmp-*")) if p.is_dir() and not is_locked(f"{p}.lock")]

    # ------------------------------------------------------------------ reading
    def check_id(self, model_id: str) -> str:
        """``model_id`` if it can only name a folder directly inside the models folder; else an error
        (exit 2) that touches nothing: no separators, no ``..``, not empty, not starting with ``.``."""
        bad = (not model_id or model_id.startswith(".") or "/" in model_id or "\\" in model_id
               or "\x00" in model_id or model_id != model_id.strip())
        if not bad:
            root = self.root.resolve()
            bad = (root / model_id).resolve().parent != root
        if bad:
            raise ModelNotFoundError(f"{model_id!r} is not a model id: ids name a folder inside {self.root} "
                                     "(no '/', '..' or leading '.'); see `lmcore models list`")
        return model_id

    def model_dir(self, model_id: str) -> Path:
        directory = self.root / self.check_id(model_id)
        if not (directory / METADATA).is_file():
            known = ", ".join(m["id"] for m in self.list_models()[-5:]) or "none"
            raise ModelNotFoundError(f"no model '{model_id}' under {self.root} (latest: {known}); "
                                     f"see `lmcore models list`")
        return directory

    def metadata(self, model_id: str) -> dict[str, Any]:
        return json.loads((self.model_dir(model_id) / METADATA).read_text(encoding="utf-8"))

    def resolve_id(self, model_id: str) -> str:
        """``latest`` or a unique prefix -> the full id (only ids inside the models folder: :meth:`check_id`)."""
        self.check_id(model_id)
        if (self.root / model_id / METADATA).is_file():
            return model_id
        ids = [m["id"] for m in self.list_models()]
        if model_id == "latest" and ids:
            return ids[-1]
        matches = [i for i in ids if i.startswith(model_id)]
        if len(matches) == 1:
            return matches[0]
        self.model_dir(model_id)  # raises ModelNotFoundError
        return model_id

    def list_models(self) -> list[dict[str, Any]]:
        """One dict per model (id, name, parameters, size_mb, created, metrics ...), oldest first."""
        if not self.root.is_dir():
            return []
        out = []
        for meta_path in self.root.glob(f"*/{METADATA}"):
            if meta_path.parent.name.startswith("."):
                continue
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            meta.setdefault("id", meta_path.parent.name)
            meta.pop("files", None)
            out.append(meta)
        return sorted(out, key=lambda m: (str(m.get("created", "")), m["id"]))

    def find_by_lineage(self, stage: str, key: str) -> str | None:
        """The id of the model whose lineage has ``stage: key`` (oldest first), or None: registering the
        same trained weights again finds the folder the first registration wrote."""
        for meta in self.list_models():
            if (meta.get("lineage") or {}).get(stage) == key and (self.root / meta["id"] / WEIGHTS).is_file():
                return meta["id"]
        return None

    def verify(self, model_id: str) -> None:
        """Raise ``CheckpointError`` naming the first file whose sha256 differs from metadata.json."""
        directory = self.model_dir(model_id)
        files = self.metadata(model_id).get("files", {})
        for name, digest in files.items():
            path = directory / name
            if not path.is_file():
                raise CheckpointError("file listed in metadata.json is missing", path=str(path))
            if sha256_file(path) != digest:
                raise CheckpointError("sha256 mismatch: the file changed since it was saved "
                                      "(corrupted copy?)", path=str(path))

    def load_model(self, model_id: str, device: str = "cpu", verify: bool = True, training_state: bool = True):
        """``(model, tokenizer, metadata, optimizer_state | None, scheduler_state | None)``.

        ``training_state=False`` never opens ``optimizer.pt`` / ``scheduler.json`` (both come back None):
        generating, chatting and exporting need only the weights and the tokenizer.
        """
        from safetensors.torch import load_model as load_weights

        from lmcore.config import ModelConfig
        from lmcore.model import Transformer

        model_id = self.resolve_id(model_id)
        directory = self.model_dir(model_id)
        if verify:
            self.verify(model_id)
        meta = self.metadata(model_id)
        config = ModelConfig(**json.loads((directory / CONFIG).read_text(encoding="utf-8")))
        model = Transformer(config)
        try:
            load_weights(model, str(directory / WEIGHTS), strict=True, device=device)
        except Exception as exc:  # wrong shapes or names
            raise CheckpointError(f"weights do not fit the config: {exc}", path=str(directory / WEIGHTS)) from None
        model.to(device).eval()
        tokenizer = None
        if (directory / "tokenizer.json").is_file():
            from lmcore.data.tokenizer import LmcoreTokenizer

            tokenizer = LmcoreTokenizer.load(directory)
        optimizer_state = scheduler_state = None
        if training_state:
            optimizer_state, scheduler_state = self._training_state(directory, device)
        return model, tokenizer, meta, optimizer_state, scheduler_state

    def load_for_inference(self, model_id: str, device: str = "cpu", verify: bool = True):
        """``(model, tokenizer, metadata)``: :meth:`load_model` without the optimizer and scheduler state."""
        model, tokenizer, meta, _, _ = self.load_model(model_id, device, verify, training_state=False)
        return model, tokenizer, meta

    @staticmethod
    def _training_state(directory: Path, device: str) -> tuple[dict | None, dict | None]:
        optimizer_state = scheduler_state = None
        if (directory / OPTIMIZER).is_file():
            from lmcore.train.checkpoint import load_torch_state

            optimizer_state = load_torch_state(directory / OPTIMIZER, map_location=device)
        if (directory / SCHEDULER).is_file():
            try:
                scheduler_state = json.loads((directory / SCHEDULER).read_text(encoding="utf-8"))
            except ValueError as exc:
                raise CheckpointError(f"not valid JSON ({exc})", path=str(directory / SCHEDULER)) from None
        return optimizer_state, scheduler_state

    def delete_model(self, model_id: str) -> str:
        """Remove a model's folder; returns the full id. Only ids inside the models folder (:meth:`check_id`)."""
        full_id = self.resolve_id(model_id)
        shutil.rmtree(self.model_dir(full_id))
        return full_id
