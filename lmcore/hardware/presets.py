"""The ``auto`` preset: the largest model that trains on the detected device.

Why largest-that-fits: a user who writes ``config_preset: auto`` wants the
best model their machine can train without running out of memory. Every
preset is estimated (:mod:`lmcore.hardware.memory`) with the configured
micro-batch, the preset's sequence length and the training precision; a
preset fits when its estimate is at most ``SAFETY_MARGIN`` of the device's
total memory (the rest is for the CUDA context, allocator fragmentation and
temporary buffers). Total, not free: the choice is then a property of the
hardware, so the same config on the same GPU always resolves to the same
model and a rerun hits the pipeline's cache; memory held by other processes
at that moment is reported in the reason instead of silently shrinking the
model. With ``training.strategy: fsdp`` the model states are
divided over ``training.nproc_per_node`` devices. A preset that only fits with gradient checkpointing is
chosen with it, and the reason says so. A CPU always gets ``tiny``: a
larger model would fit in RAM but would not finish training in useful time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lmcore.config import PRESETS, ModelConfig, PipelineConfig
from lmcore.hardware.detect import HardwareInfo, detect
from lmcore.hardware.memory import GiB, MemoryEstimate, estimate_training_memory

SAFETY_MARGIN = 0.85
PRESET_ORDER = ("tiny", "small", "medium", "research")  # smallest to largest


@dataclass(frozen=True)
class PresetPlan:
    """One preset's shape and its memory estimates without and with gradient checkpointing."""

    name: str
    model: ModelConfig
    plain: MemoryEstimate
    checkpointed: MemoryEstimate
    budget: int

    @property
    def fits(self) -> bool:
        return self.plain.total <= self.budget

    @property
    def fits_with_checkpointing(self) -> bool:
        return self.checkpointed.total <= self.budget


@dataclass(frozen=True)
class PresetChoice:
    """What ``auto`` resolved to, why, and whether gradient checkpointing is needed."""

    name: str
    reason: str
    gradient_checkpointing: bool
    plans: tuple[PresetPlan, ...]


def training_dtype(cfg: PipelineConfig, hw: HardwareInfo, hidden_size: Optional[int] = None) -> str:
    """The compute precision a run will use: ``precision.dtype`` with ``auto`` resolved (on a CPU it
    weighs the model's ``hidden_size``; None: the config's ``model.custom`` width if set)."""
    if not cfg.precision.use_mixed_precision:
        return "fp32"
    wanted = cfg.precision.dtype
    if wanted == "auto":  # the same rule as lmcore.train.precision.resolve_precision
        if hw.device_type == "cpu":
            from lmcore.hardware.bf16_probe import cpu_bf16_pays

            if hidden_size is None:
                hidden_size = cfg.model.custom.hidden_size
            return "bf16" if hw.bf16 and cpu_bf16_pays(hidden_size) else "fp32"
        return "bf16" if hw.bf16 else ("fp16" if hw.fp16 else "fp32")
    return wanted


def device_memory(hw: HardwareInfo) -> int:
    """The device's memory in bytes: its total (free only when the total is unknown)."""
    return hw.total_memory or hw.free_memory


def memory_budget(hw: HardwareInfo) -> int:
    """Bytes a training run may plan for: ``SAFETY_MARGIN`` of the device's total memory."""
    return int(device_memory(hw) * SAFETY_MARGIN)


def _busy_note(hw: HardwareInfo, needed: int) -> str:
    """A warning when other processes hold the memory the chosen preset needs."""
    if hw.free_memory and hw.free_memory < needed:
        return (f"; warning: only {hw.free_memory / GiB:.1f} GiB is free now (other processes hold the rest), "
                f"free it or lower training.batch_size")
    return ""


def plan_presets(cfg: PipelineConfig, hw: HardwareInfo, batch_size: Optional[int] = None) -> list[PresetPlan]:
    """Every preset (with the config's ``model.custom`` overrides applied) and its estimates."""
    dtype = training_dtype(cfg, hw)
    budget = memory_budget(hw)
    b = batch_size or cfg.training.batch_size
    shards = cfg.training.nproc_per_node if cfg.training.strategy == "fsdp" else 1
    plans = []
    for name in PRESET_ORDER:
        model = cfg.model.resolve(name)
        plans.append(PresetPlan(
            name=name, model=model, budget=budget,
            plain=estimate_training_memory(model, b, model.seq_length, dtype, gradient_checkpointing=False,
                                          shards=shards),
            checkpointed=estimate_training_memory(model, b, model.seq_length, dtype, gradient_checkpointing=True,
                                                 shards=shards)))
    return plans


def choose(cfg: PipelineConfig, hw: Optional[HardwareInfo] = None) -> PresetChoice:
    """Resolve ``auto``; an explicit preset (or ``custom``) is returned as-is."""
    hw = hw or detect()
    plans = tuple(plan_presets(cfg, hw))
    wanted = cfg.model.config_preset
    if wanted != "auto":
        return PresetChoice(wanted, f"set in the config (model.config_preset={wanted})",
                            cfg.model.gradient_checkpointing, plans)
    total = f"{device_memory(hw) / GiB:.1f} GiB"
    if hw.device_type == "cpu":
        return PresetChoice("tiny", f"CPU ({hw.cpu_cores} cores): larger presets would not train in useful time",
                            cfg.model.gradient_checkpointing, plans)
    budget = f"{SAFETY_MARGIN:.0%} of {total} on {hw.name}"
    for plan in reversed(plans):
        if plan.fits:
            return PresetChoice(plan.name, f"largest preset that fits: {plan.plain.total / GiB:.1f} GiB "
                                f"<= {budget}" + _busy_note(hw, plan.plain.total),
                                cfg.model.gradient_checkpointing, plans)
        if plan.fits_with_checkpointing:
            return PresetChoice(plan.name, f"largest preset that fits, with gradient checkpointing: "
                                f"{plan.checkpointed.total / GiB:.1f} GiB <= {budget} "
                                f"(without: {plan.plain.total / GiB:.1f} GiB)" + _busy_note(hw, plan.checkpointed.total),
                                True, plans)
    return PresetChoice("tiny", f"no preset fits {budget}; using the smallest "
                        f"(needs {plans[0].checkpointed.total / GiB:.1f} GiB with checkpointing): "
                        "lower training.batch_size", True, plans)


def choose_preset(cfg: PipelineConfig, hw: Optional[HardwareInfo] = None) -> tuple[str, str]:
    """``(preset name, reason)`` for ``cfg.model.config_preset`` (``auto`` resolved against ``hw``)."""
    choice = choose(cfg, hw)
    return choice.name, choice.reason


def resolve_model_config(cfg: PipelineConfig, hw: Optional[HardwareInfo] = None) -> tuple[ModelConfig, PresetChoice]:
    """The ``ModelConfig`` to build: ``auto`` resolved, gradient checkpointing on if the choice needs it."""
    choice = choose(cfg, hw)
    model = cfg.model.resolve(choice.name)
    if choice.gradient_checkpointing and not model.gradient_checkpointing:
        model = model.model_copy(update={"gradient_checkpointing": True})
    return model, choice


def resolve_architecture(cfg: PipelineConfig, hw: Optional[HardwareInfo] = None) -> tuple[str, ModelConfig]:
    """``(preset name, ModelConfig)`` a pipeline run trains: ``auto`` resolved against the hardware
    (only then is the hardware looked at), the vocabulary from ``tokenizer.vocab_size`` when set."""
    preset = cfg.model.config_preset
    if preset == "auto":
        model_cfg, choice = resolve_model_config(cfg, hw)
        preset = choice.name
    else:
        model_cfg = cfg.model.resolve(preset)
    vocab = cfg.tokenizer.vocab_size or model_cfg.vocab_size
    return preset, model_cfg.model_copy(update={"vocab_size": vocab})


assert set(PRESET_ORDER) == set(PRESETS), "PRESET_ORDER must list every preset in lmcore.config.PRESETS"
