"""The configuration tree: one pydantic model per section, loaded from YAML.

Why pydantic: every key is typed and range-checked in one place, and the
errors it raises are translated here into :class:`ConfigError` messages that
name the dotted key path and suggest the closest valid key, so a typo in a
YAML file or a ``--set`` override is caught before any work starts.

Sections: ``data``, ``tokenizer``, ``model``, ``training``, ``precision``,
``tracking``, ``paths``.  The seed system's TRAINING_CONFIG names are kept
(``data.training_data_path``, ``model.config_preset``,
``training.scheduler_type``, ``precision.use_mixed_precision`` ...).

``ModelConfig`` is the architecture itself (what ``Transformer`` is built
from); the ``model`` section (``ModelSection``) chooses a preset and
overrides, and :meth:`ModelSection.resolve` turns it into a ``ModelConfig``.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
from pathlib import Path
from typing import Any, Literal, Optional, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from lmcore.config_keys import apply_override, translate
from lmcore.errors import ConfigError

# One Literal per set of choices; code that lists the choices reads them from here (typing.get_args).
PresetName = Literal["tiny", "small", "medium", "research"]
PresetChoice = Literal["auto", "tiny", "small", "medium", "research", "custom"]
PRESET_CHOICES = get_args(PresetChoice)
MlpType = Literal["swiglu", "geglu"]
AttentionBackend = Literal["auto", "flash", "sdpa", "math"]
SchedulerType = Literal["cosine_with_warmup", "cosine_with_restarts", "linear", "constant_with_warmup"]
Dtype = Literal["bf16", "fp16", "fp32"]
DtypeChoice = Literal["auto", "bf16", "fp16", "fp32"]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- model


class ModelConfig(StrictModel):
    """Architecture of a LLaMA-style decoder. ``Transformer(ModelConfig(...))`` builds it."""

    vocab_size: int = Field(8192, ge=8, le=1_048_576, description="tokens in the vocabulary")
    hidden_size: int = Field(256, ge=8, description="width of the residual stream")
    num_layers: int = Field(4, ge=1, le=512, description="transformer blocks")
    num_heads: int = Field(8, ge=1, description="query heads")
    num_kv_heads: Optional[int] = Field(None, ge=1, description="key/value heads (GQA); None = num_heads")
    intermediate_size: Optional[int] = Field(None, ge=1, description="MLP width; None = ~8/3 hidden, multiple of 64")
    seq_length: int = Field(256, ge=2, description="training context length (max positions)")
    mlp_type: MlpType = "swiglu"
    rope_theta: float = Field(10_000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0, lt=1)
    tie_embeddings: bool = True
    init_std: float = Field(0.02, gt=0, description="std of weight init; residual projections get /sqrt(2*layers)")
    dropout: float = Field(0.0, ge=0, lt=1)
    attention_backend: AttentionBackend = "auto"
    document_masking: bool = Field(True, description="packed documents do not attend to each other")
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _check_shapes(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_kv_heads ({self.kv_heads}) must divide num_heads ({self.num_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def ffn_size(self) -> int:
        if self.intermediate_size:
            return self.intermediate_size
        return max(64, int(round(8 * self.hidden_size / 3 / 64)) * 64)

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Exact parameter count of the model this config builds."""
        h, kv = self.hidden_size, self.kv_heads * self.head_dim
        attn = h * h * 2 + h * kv * 2
        mlp = 3 * h * self.ffn_size
        per_layer = attn + mlp + 2 * h
        n = self.num_layers * per_layer + h
        if include_embeddings:
            n += self.vocab_size * h * (1 if self.tie_embeddings else 2)
        return n


# Reference shapes. Parameter counts (with embeddings): tiny ~25M, small ~350M,
# medium ~1.5B, research ~7B; ``tests/lmcore/test_config.py`` keeps them there.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=32000, hidden_size=384, num_layers=8, num_heads=6, num_kv_heads=2,
                 intermediate_size=1024, seq_length=512, tie_embeddings=True),
    "small": dict(vocab_size=32000, hidden_size=1024, num_layers=24, num_heads=16, num_kv_heads=4,
                  intermediate_size=2816, seq_length=1024, tie_embeddings=False),
    "medium": dict(vocab_size=32000, hidden_size=2048, num_layers=30, num_heads=16, num_kv_heads=4,
                   intermediate_size=5632, seq_length=2048, tie_embeddings=False),
    "research": dict(vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                     intermediate_size=14336, seq_length=4096, tie_embeddings=False, rope_theta=500_000.0),
}


# ``model.custom``: the shape fields of ModelConfig, each optional, with ModelConfig's own bounds.
OVERRIDABLE = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
               "seq_length", "mlp_type", "rope_theta", "norm_eps", "tie_embeddings", "init_std", "dropout")
ModelOverrides = create_model(
    "ModelOverrides", __base__=StrictModel,
    __doc__="``model.custom``: any shape field of ``ModelConfig``; applied on top of the chosen preset.",
    **{name: (Optional[ModelConfig.model_fields[name].annotation],
              FieldInfo.merge_field_infos(ModelConfig.model_fields[name], default=None))
       for name in OVERRIDABLE})


class ModelSection(StrictModel):
    """``model``: which preset, custom shape overrides, and runtime switches."""

    config_preset: PresetChoice = "auto"
    custom: ModelOverrides = Field(default_factory=ModelOverrides)  # type: ignore[valid-type]
    init_from: Optional[str] = Field(None, description="start from this model (fine-tuning): a local model id, "
                                     "unique prefix or 'latest', models:/NAME@ALIAS or models:/NAME/VERSION, or a "
                                     "Hugging Face Llama folder; the architecture and tokenizer come from it")
    attention_backend: AttentionBackend = "auto"
    document_masking: bool = True
    gradient_checkpointing: bool = False

    def resolve(self, preset: Optional[str] = None) -> ModelConfig:
        """The architecture to build. ``preset`` is what ``auto`` resolved to (see ``lmcore.hardware``)."""
        name = preset or self.config_preset
        if name == "auto":
            raise ConfigError("preset 'auto' must be resolved against the hardware first "
                              "(lmcore.hardware.choose_preset)", key="model.config_preset")
        base = dict(PRESETS["tiny"] if name == "custom" else PRESETS[name])
        base.update({k: v for k, v in self.custom.model_dump().items() if v is not None})
        base.update(attention_backend=self.attention_backend, document_masking=self.document_masking,
                    gradient_checkpointing=self.gradient_checkpointing)
        try:
            return ModelConfig(**base)
        except ValidationError as exc:
            raise translate(exc, PipelineConfig, prefix="model.custom") from None


# --------------------------------------------------------------------------- other sections


class DataConfig(StrictModel):
    """``data``: where the raw JSONL is and how it is cleaned and split."""

    training_data_path: list[str] = Field(default_factory=list, description="JSONL files or globs (.gz/.zst ok)")
    eval_data_path: list[str] = Field(default_factory=list, description="optional held-out files: all go to eval")
    text_fields: list[str] = Field(default_factory=lambda: ["text", "content", "message", "body", "output"])
    use_conversation_format: bool = True
    max_samples_train: Optional[int] = Field(None, ge=1)
    eval_split: float = Field(0.05, ge=0.0, lt=1.0)
    min_text_length: int = Field(1, ge=0)
    max_invalid_fraction: float = Field(0.1, ge=0.0, le=1.0)
    deduplicate: bool = True
    shard_max_rows: int = Field(100_000, ge=1)
    shard_max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    tokenizer_train_size: int = Field(100_000, ge=1, description="records sampled to train the tokenizer")
    seed: int = 1234

    @field_validator("training_data_path", "eval_data_path", "text_fields", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class TokenizerConfig(StrictModel):
    """``tokenizer``: byte-level BPE settings."""

    vocab_size: Optional[int] = Field(None, ge=260, le=1_048_576, description="None = the model's vocab_size")
    min_frequency: int = Field(2, ge=1)
    add_bos: bool = True
    add_eos: bool = True
    chat_template: Optional[str] = Field(None, description="Jinja template; None = lmcore's built-in")


class LoraConfig(StrictModel):
    """``training.lora``: train low-rank adapters on frozen base weights (merged into the registered model)."""

    rank: int = Field(8, ge=1, le=4096)
    alpha: float = Field(16.0, gt=0, description="the adapter's output is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input")
    targets: list[str] = Field(default_factory=lambda: ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
                               min_length=1, description="linear layers (by name) that get an adapter")


class SeqLengthWarmup(StrictModel):
    """``training.seq_length_warmup``: train on shorter sequences first ("start small, increase size")."""

    start: int = Field(64, ge=64, description="sequence length at step 0 (a multiple of 64)")
    fraction: float = Field(0.25, gt=0.0, le=1.0, description="of training over which it grows to the model's")

    @field_validator("start")
    @classmethod
    def _multiple_of_64(cls, v: int) -> int:
        if v % 64:
            raise ValueError("must be a multiple of 64")
        return v


class TrainingConfig(StrictModel):
    """``training``: optimisation, schedule, limits, checkpoints, scale-out."""

    batch_size: int = Field(8, ge=1, description="micro-batch sequences per device")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_epochs: int = Field(1, ge=1, description="passes over the data; ignored when max_steps or max_tokens is set")
    max_steps: Optional[int] = Field(None, ge=1, description="updates; wins over max_epochs (the data repeats)")
    max_tokens: Optional[int] = Field(None, ge=1, description="input tokens; wins over max_epochs")
    max_time: Optional[float] = Field(None, gt=0, description="wall-clock budget in seconds")
    learning_rate: float = Field(3e-4, gt=0, le=1.0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    weight_decay: float = Field(0.1, ge=0.0)
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.95, ge=0.0, lt=1.0)
    adam_eps: float = Field(1e-8, gt=0)
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw", description="muon: Muon on hidden matrices, AdamW on embeddings/head/norms (torch>=2.9)")
    muon_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="Muon's Nesterov momentum")
    muon_lr_scale: float = Field(1.0, gt=0, description="Muon half's lr = learning_rate * this")
    scheduler_type: SchedulerType = "cosine_with_warmup"
    warmup_ratio: float = Field(0.02, ge=0.0, lt=1.0)
    warmup_steps: Optional[int] = Field(None, ge=0)
    num_cycles: int = Field(1, ge=1, description="cycles for cosine_with_restarts")
    max_grad_norm: float = Field(1.0, ge=0.0, description="0 disables clipping")
    max_nonfinite_steps: int = Field(5, ge=1)
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(200, ge=1)
    eval_batches: int = Field(20, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_last_checkpoints: int = Field(2, ge=1)
    seed: int = 42
    nproc_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1, description="machines training together (torchrun c10d rendezvous); node 0 runs "
                        "the pipeline, every other one `lmcore train-node CONFIG`")
    rdzv_endpoint: Optional[str] = Field(None, description="host:port of the rendezvous, reachable from every node "
                                         "(needed when nnodes > 1)")
    strategy: Literal["ddp", "fsdp"] = "ddp"
    loss_chunk_rows: int = Field(1024, ge=0, description="the head and loss are computed this many tokens at a "
                                 "time, without the full logits (0: through the full logits)")
    sample_prompts: list[str] = Field(default_factory=lambda: ["ROMEO:", "The king"])
    sample_max_new_tokens: int = Field(48, ge=1)
    lora: Optional[LoraConfig] = Field(None, description="low-rank adapters on a frozen base (fine-tuning)")
    seq_length_warmup: Optional[SeqLengthWarmup] = Field(None, description="grow the packed sequence length")
    cpu_offload: bool = Field(False, description="FSDP2 keeps parameters, gradients and optimizer state in CPU "
                              "memory (CUDA, strategy fsdp)")

    @model_validator(mode="after")
    def _check_optimizer(self) -> "TrainingConfig":
        if self.optimizer == "muon" and self.strategy == "fsdp" and self.nproc_per_node > 1:
            raise ValueError("optimizer 'muon' orthogonalises whole matrices and cannot run on FSDP shards; "
                             "use strategy 'ddp' or optimizer 'adamw'")
        if self.optimizer == "muon" and self.lora is not None:
            raise ValueError("optimizer 'muon' is for full matrices, not low-rank adapters; use optimizer 'adamw' "
                             "with lora")
        if self.cpu_offload and self.strategy != "fsdp":
            raise ValueError("cpu_offload is FSDP2's: set strategy 'fsdp' (and nproc_per_node, or run under torchrun)")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes {self.nnodes} needs rdzv_endpoint: host:port of node 0, reachable from every node")
        if self.rdzv_endpoint and not re.fullmatch(r"[\w.\-\[\]:]+:\d{1,5}", self.rdzv_endpoint):
            raise ValueError(f"rdzv_endpoint must look like host:port, not {self.rdzv_endpoint!r}")
        return self


class PrecisionConfig(StrictModel):
    """``precision``: dtype and compilation."""

    dtype: DtypeChoice = "auto"
    use_mixed_precision: bool = Field(True, description="False forces fp32 whatever dtype says")
    use_compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model; auto: on CUDA, and on a CPU for runs long enough to "
                            "earn back the compile time (lmcore.train.compile)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"


class WandbConfig(StrictModel):
    """``tracking.wandb``: Weights & Biases as a second tracker (``pip install 'lmcore[wandb]'``). It
    receives the MLflow run's params and metrics under the same names; MLflow stays the registry."""

    project: str = Field(..., min_length=1, description="W&B project")
    entity: Optional[str] = Field(None, description="W&B team or user (None: the API key's default)")
    mode: Literal["online", "offline", "disabled"] = Field(
        "online", description="offline writes the run under dir for a later `wandb sync`")
    dir: Optional[str] = Field(None, description="folder for W&B's files (None: paths.mlflow)")


class TrackingConfig(StrictModel):
    """``tracking``: MLflow. ``uri`` None = SQLite under ``paths.mlflow``; env MLFLOW_TRACKING_URI wins."""

    enabled: bool = True
    uri: Optional[str] = None
    experiment_name: str = "lmcore"
    registered_model_name: str = "lmcore-model"
    run_name: Optional[str] = None
    flush_every_seconds: float = Field(5.0, gt=0, le=3600, description="metrics are sent in batches this often")
    max_buffered_metrics: int = Field(100_000, ge=100, description="bound on metrics held while the server is down")
    request_timeout: int = Field(10, ge=1, le=600, description="seconds per MLflow HTTP call (MLFLOW_HTTP_REQUEST_TIMEOUT wins)")
    request_retries: int = Field(1, ge=0, le=10, description="retries per MLflow HTTP call (MLFLOW_HTTP_REQUEST_MAX_RETRIES wins)")
    final_flush_timeout: float = Field(60.0, ge=0, description="seconds to keep retrying unsent metrics when a run ends")
    champion_alias: str = Field("champion", min_length=1, description="alias of the best version (lowest bits per byte)")
    challenger_alias: str = Field("challenger", min_length=1, description="alias of a new version that did not win")
    wandb: Optional[WandbConfig] = Field(None, description="also log to Weights & Biases (off when None)")

    # MLflow's own rules (mlflow.utils.validation), checked when the config is read: a name MLflow
    # refuses would otherwise surface only at the end of a run, after training.
    @field_validator("registered_model_name", "experiment_name")
    @classmethod
    def _mlflow_name(cls, v: str, info) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if info.field_name == "registered_model_name":
            if "/" in v or ":" in v:
                raise ValueError("MLflow refuses '/' and ':' in registered model names")
            if posixpath.normpath(v) != v or v.startswith(".."):
                raise ValueError(f"MLflow refuses names that read as another path ({posixpath.normpath(v)!r})")
        if len(v) > 256:
            raise ValueError(f"at most 256 characters (got {len(v)})")
        return v

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v.strip() or len(v) > 250 or any(ord(c) < 32 for c in v)):
            raise ValueError("an MLflow run name is 1-250 printable characters")
        return v

    @field_validator("champion_alias", "challenger_alias")
    @classmethod
    def _alias(cls, v: str) -> str:
        if not re.fullmatch(r"[\w\-]{1,255}", v) or v.lower() == "latest" or re.fullmatch(r"[vV]\d+", v):
            raise ValueError("an MLflow alias is letters, digits, '_' and '-', and not 'latest' or 'v<number>'")
        return v

    @model_validator(mode="after")
    def _distinct_aliases(self) -> "TrackingConfig":
        if self.champion_alias == self.challenger_alias:
            raise ValueError("champion_alias and challenger_alias must differ")
        if self.wandb is not None and not self.enabled:
            raise ValueError("tracking.wandb mirrors the MLflow run: it needs tracking.enabled: true")
        return self


class OrchestrationConfig(StrictModel):
    """``orchestration``: where the data stages' tasks run (Prefect task runners). Outputs and store keys
    are the same for every choice; the store must be on a filesystem every worker sees."""

    task_runner: Literal["threads", "processes", "dask"] = Field(
        "threads", description="threads: one process; processes: a local pool; dask: a Dask cluster (extra 'dask')")
    dask_address: Optional[str] = Field(
        None, description="an existing Dask scheduler, e.g. tcp://scheduler:8786 (None with dask: a local cluster)")
    max_workers: Optional[int] = Field(None, ge=1, description="threads or processes, or the local Dask cluster's "
                                       "workers (None: the runner's default; 2 local Dask workers)")
    part_bytes: int = Field(64 << 20, ge=1024, description="a larger uncompressed input file is parsed in byte "
                            "ranges of about this size, one task each")

    @model_validator(mode="after")
    def _address_needs_dask(self) -> "OrchestrationConfig":
        if self.dask_address and self.task_runner != "dask":
            raise ValueError("dask_address is for task_runner: dask")
        return self


class PathsConfig(StrictModel):
    """``paths``: where things live. Env: LMCORE_STORE, LMCORE_MODELS, LMCORE_MLFLOW_DIR."""

    store: str = "./lmcore-store"
    models: str = "./models"
    mlflow: str = Field("./mlruns-lmcore", description="folder for mlflow.db and mlartifacts/")


class PipelineConfig(StrictModel):
    """The whole tree. ``PipelineConfig.from_yaml(path, overrides=[...])``."""

    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    precision: PrecisionConfig = Field(default_factory=PrecisionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, overrides: list[str] | None = None,
                  source: str | None = None, base_dir: str | Path | None = None,
                  override_label: str = "--set") -> "PipelineConfig":
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError("top level must be a mapping of sections", source=source)
        raw = copy.deepcopy(raw or {})  # overrides must not edit the caller's dict
        _apply_env(raw)  # environment beats the file; an explicit --set beats both
        overridden = {apply_override(cls, raw, item, override_label): item for item in overrides or []}

        def where(key: str) -> Optional[str]:
            set_by = next((item for path, item in overridden.items() if key == path or key.startswith(path + ".")),
                          None)
            return f"{override_label} {set_by}" if set_by else source

        try:
            cfg = cls(**raw)
        except ValidationError as exc:
            raise translate(exc, cls, where) from None
        if base_dir is not None:
            cfg = cfg._relative_to(Path(base_dir))
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "PipelineConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", source=where) from None
        if not isinstance(raw, dict):
            raise ConfigError("top level must be a mapping of sections", source=str(path))
        return cls.from_dict(raw, overrides, source=str(path), base_dir=path.parent)

    def with_overrides(self, overrides: list[str] | None, label: str = "overrides") -> "PipelineConfig":
        """This config with ``key.path=value`` items applied, as ``--set`` does: what a deployment's
        ``overrides`` parameter uses to change one key of its default config."""
        if not overrides:
            return self
        if isinstance(overrides, str):
            overrides = [overrides]
        return type(self).from_dict(self.model_dump(mode="json"), list(overrides), override_label=label)

    def _relative_to(self, base: Path) -> "PipelineConfig":
        """Data paths in a YAML file are relative to that file (absolute paths kept; a path that
        exists only relative to the current directory is kept as given)."""

        def fix(p: str) -> str:
            if os.path.isabs(p):
                return p
            candidate = base / p
            if candidate.exists() or not Path(p).exists():
                return str(candidate)
            return p

        data = self.data.model_copy(update={
            "training_data_path": [fix(p) for p in self.data.training_data_path],
            "eval_data_path": [fix(p) for p in self.data.eval_data_path],
        })
        return self.model_copy(update={"data": data})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view (for MLflow params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out

    @model_validator(mode="after")
    def _architecture_builds(self) -> "PipelineConfig":
        """A preset plus ``model.custom`` that cannot build a model is an error now, not after the data
        stages (``auto`` is resolved against the hardware later; a fine-tuning run takes its base's)."""
        if self.model.config_preset != "auto" and self.model.init_from is None:
            self.model.resolve()
        return self

    def tracking_uri(self) -> str:
        """MLflow tracking URI: env MLFLOW_TRACKING_URI > tracking.uri > SQLite under paths.mlflow."""
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        if self.tracking.uri:
            return self.tracking.uri
        return "sqlite:///" + str((Path(self.paths.mlflow) / "mlflow.db").resolve())


# --------------------------------------------------------------------------- helpers

_ENV_OVERRIDES = {"LMCORE_STORE": ("paths", "store"), "LMCORE_MODELS": ("paths", "models"),
                  "LMCORE_MLFLOW_DIR": ("paths", "mlflow")}


def _apply_env(raw: dict[str, Any]) -> None:
    for env, (section, key) in _ENV_OVERRIDES.items():
        if os.environ.get(env):
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = os.environ[env]
