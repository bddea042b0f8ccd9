"""Where a fine-tuning run starts: ``model.init_from`` resolved to a model folder, its identity and weights.

``init_from`` takes one of:

* a local model id, a unique prefix of one, or ``latest`` (in ``paths.models``);
* an MLflow registry URI, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: the version's model
  folder (the ``lmcore.model_dir`` tag when that folder is here, else its artifacts, downloaded once
  into ``<store>/base/``);
* a Hugging Face Llama folder (``config.json``, safetensors, tokenizer files), such as one
  ``lmcore export-hf`` wrote or any ``LlamaForCausalLM.save_pretrained`` output.

The architecture and the tokenizer come from the base; the weights are loaded before step 0.
The base's identity is the sha256 of its weights (:attr:`BaseModel.sha256`): it enters the train
key, so a new champion behind ``models:/NAME@champion`` reruns fine-tuning and an unchanged one
stays cached. :attr:`BaseModel.lineage` is what the model's metadata, its MLflow version and the
run record about it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from lmcore.config import ModelConfig
from lmcore.errors import ConfigError, ModelNotFoundError
from lmcore.models_dir import METADATA, WEIGHTS, ModelManager
from lmcore.store import sha256_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Fields of the architecture a base fixes (its weights have these shapes); the others (seq_length,
# dropout, init_std and the runtime switches) are the fine-tuning run's own choice.
FIXED_BY_BASE = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                 "mlp_type", "rope_theta", "norm_eps", "tie_embeddings")


@dataclass(frozen=True)
class BaseModel:
    """A resolved ``init_from``: the folder, its format, and who it is."""

    source: str                  # what init_from said
    kind: str                    # "lmcore" (a models/<id>/ folder) or "hf" (a transformers folder)
    dir: str
    sha256: str                  # of the weights: the base's identity in the train key
    tokenizer_sha256: str        # of the tokenizer files: the tokenizer stage's key
    model_id: Optional[str] = None
    registered: Optional[dict] = field(default=None)  # {name, version} for a models:/ URI

    @property
    def lineage(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "tokenizer_sha256"}

    def model_config(self) -> ModelConfig:
        path = Path(self.dir) / "config.json"
        raw = json.loads(path.read_text(encoding="utf-8"))
        if self.kind == "hf":
            from lmcore.hf.convert import from_hf_config

            return from_hf_config(raw, source=str(path))
        return ModelConfig(**raw)

    def state_dict(self) -> dict:
        """The base weights under lmcore's parameter names."""
        if self.kind == "hf":
            from lmcore.hf.convert import from_hf_state_dict, read_safetensors

            return from_hf_state_dict(read_safetensors(Path(self.dir)), self.model_config(), source=self.dir)
        from safetensors.torch import load_file

        return load_file(str(Path(self.dir) / WEIGHTS))


def resolve_base(init_from: str, models_root: str | Path, store_root: str | Path, cfg=None) -> BaseModel:
    """Find ``init_from`` (see the module doc); a ConfigError naming ``model.init_from`` if it is nothing."""
    if init_from.startswith("models:/"):
        return _from_registry(init_from, store_root, cfg)
    manager = ModelManager(models_root)
    try:
        model_id = manager.resolve_id(init_from)
    except ModelNotFoundError:
        model_id = None
    if model_id is not None:
        return _from_models_dir(init_from, manager.model_dir(model_id))
    path = Path(init_from).expanduser()
    if (path / "config.json").is_file():
        if (path / METADATA).is_file():  # a models/<id>/ folder given by path
            return _from_models_dir(init_from, path)
        return _from_hf_folder(init_from, path)
    raise ConfigError(f"'{init_from}' is not a model id in {models_root}, a models:/NAME@ALIAS or models:/NAME/"
                      "VERSION URI, or a folder with config.json", key="model.init_from")


def architecture(base: BaseModel, cfg) -> ModelConfig:
    """The ModelConfig a fine-tuning run trains: the base's shapes, the run's sequence length, dropout
    and runtime switches (``model.attention_backend``, ``document_masking``, ``gradient_checkpointing``)."""
    base_cfg = base.model_config()
    custom = cfg.model.custom.model_dump()
    check_architecture(base_cfg, custom, cfg.tokenizer.vocab_size)
    own = {k: custom[k] for k in ("seq_length", "dropout", "init_std") if custom.get(k) is not None}
    return base_cfg.model_copy(update={**own, "attention_backend": cfg.model.attention_backend,
                                       "document_masking": cfg.model.document_masking,
                                       "gradient_checkpointing": cfg.model.gradient_checkpointing})


def check_architecture(base_cfg: ModelConfig, overrides: dict[str, Any], tokenizer_vocab: Optional[int]) -> None:
    """A ConfigError naming both values for each ``model.custom`` setting the base contradicts."""
    for name in FIXED_BY_BASE:
        wanted = overrides.get(name)
        if wanted is not None and wanted != getattr(base_cfg, name):
            raise ConfigError(f"the base model has {name}={getattr(base_cfg, name)!r}, the config asks for "
                              f"{wanted!r}; leave it out (the architecture comes from model.init_from)",
                              key=f"model.custom.{name}")
    if tokenizer_vocab is not None and tokenizer_vocab != base_cfg.vocab_size:
        raise ConfigError(f"the base model's vocabulary has {base_cfg.vocab_size} tokens, the config asks for "
                          f"{tokenizer_vocab}; leave it out (the tokenizer comes from model.init_from)",
                          key="tokenizer.vocab_size")


# --------------------------------------------------------------------------- the three sources


def _from_models_dir(source: str, folder: Path) -> BaseModel:
    meta = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    files = meta.get("files", {})
    weights = files.get(WEIGHTS) or sha256_file(folder / WEIGHTS)
    tok = _digest(files.get(name) or sha256_file(folder / name) for name in TOKENIZER_FILES
                  if (folder / name).is_file())
    return BaseModel(source, "lmcore", str(folder.resolve()), weights, tok, model_id=meta.get("id", folder.name))


def _from_hf_folder(source: str, folder: Path) -> BaseModel:
    from lmcore.hf.convert import weight_files

    weights = _digest(sha256_file(f) for f in weight_files(folder))
    tok = _digest(sha256_file(folder / name) for name in TOKENIZER_FILES if (folder / name).is_file())
    return BaseModel(source, "hf", str(folder.resolve()), weights, tok)


def _from_registry(uri: str, store_root: str | Path, cfg) -> BaseModel:
    from lmcore.tracking.client import make_client

    rest = uri[len("models:/"):]
    by_alias = "@" in rest
    name, ref = rest.split("@", 1) if by_alias else rest.rsplit("/", 1) if "/" in rest else (rest, "")
    if not name or not ref or (not by_alias and not ref.isdigit()):
        raise ConfigError(f"'{uri}' is not models:/NAME@ALIAS or models:/NAME/VERSION", key="model.init_from")
    client = make_client(cfg)
    try:
        version = client.get_model_version_by_alias(name, ref) if by_alias else client.get_model_version(name, ref)
    except Exception as exc:  # noqa: BLE001 - MLflow says RESOURCE_DOES_NOT_EXIST in many ways
        raise ConfigError(f"'{uri}': no such registered model version at {cfg.tracking_uri()} "
                          f"({str(exc).splitlines()[0][:160]})", key="model.init_from") from None
    registered = {"name": name, "version": str(version.version)}
    local = Path((version.tags or {}).get("lmcore.model_dir", ""))
    if not (local / METADATA).is_file():
        local = _download(client, version, Path(store_root) / "base" / f"{name}-v{version.version}")
    base = _from_models_dir(uri, local)
    return BaseModel(uri, base.kind, base.dir, base.sha256, base.tokenizer_sha256, base.model_id, registered)


def _download(client, version, dest: Path) -> Path:
    """The version's model folder from its artifacts (once: a complete download is reused)."""
    found = sorted(dest.glob(f"**/{METADATA}")) if dest.is_dir() else []
    if not found:
        import mlflow.artifacts

        mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dest),
                                            tracking_uri=client.tracking_uri)
        found = sorted(dest.glob(f"**/{METADATA}"))
    if not found:
        raise ConfigError(f"models:/{version.name}/{version.version} holds no lmcore model folder",
                          key="model.init_from")
    return found[0].parent


def _digest(hexes) -> str:
    """sha256 over a sequence of sha256 hex strings (one file: that file's own sha256)."""
    items = list(hexes)
    if len(items) == 1:
        return items[0]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


# --------------------------------------------------------------------------- loading any of them for inference


def load_any_model(spec: str, models_root: str | Path, cfg=None, device: str = "cpu"):
    """``(model, tokenizer, base)`` for inference from anything lmcore can name: a model id (or unique
    prefix, or ``latest``) in ``models_root``, ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` (the
    registry at ``cfg.tracking_uri()``; default config: ``MLFLOW_TRACKING_URI`` or the local SQLite
    store), or a Hugging Face Llama folder. The model is in eval mode on ``device``; ``base`` says
    what was loaded (source, kind, folder, sha256, registered name and version).

    One loader for ``lmcore serve``, ``lmcore eval`` and the other commands that take a MODEL, so a
    model that loads for one loads for all. A name that is none of these is a ``ConfigError``.
    """
    from lmcore.data.tokenizer import LmcoreTokenizer

    if cfg is None:
        from lmcore.config import PipelineConfig

        cfg = PipelineConfig.from_dict({"paths": {"models": str(models_root)}})
    try:
        base = resolve_base(spec, models_root, cfg.paths.store, cfg)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("model.init_from", "MODEL")) from None
    if base.kind == "hf":
        from lmcore.hf.convert import load_hf

        model = load_hf(base.dir, device=device)
    else:
        manager = ModelManager(Path(base.dir).parent)
        model, _, _ = manager.load_for_inference(Path(base.dir).name, device=device)
    return model.eval(), LmcoreTokenizer.load(base.dir), base
