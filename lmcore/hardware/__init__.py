"""Hardware: what this machine is, what a model needs, and how fast it could go.

``detect()`` describes the device; ``estimate_training_memory()`` predicts a
training step's bytes; ``choose_preset()`` resolves ``model.config_preset:
auto``; ``peak_flops()``/``model_flops_per_token()``/``mfu()`` turn tokens/s
into model FLOPs utilisation. Imports only torch, pydantic and yaml (through
``lmcore.config``) and the stdlib-only ``lmcore.atomic_files``, so GPU check
scripts can use it on a bare machine.
"""

from lmcore.hardware.detect import HardwareInfo, detect
from lmcore.hardware.flops import device_peak_flops, measure_cpu_matmul_peak, mfu, model_flops_per_token, peak_flops
from lmcore.hardware.memory import GiB, MemoryEstimate, estimate_training_memory
from lmcore.hardware.presets import (
    SAFETY_MARGIN,
    PresetChoice,
    PresetPlan,
    choose,
    choose_preset,
    plan_presets,
    resolve_architecture,
    resolve_model_config,
    training_dtype,
)

__all__ = [
    "GiB", "HardwareInfo", "device_peak_flops", "MemoryEstimate", "PresetChoice", "PresetPlan", "SAFETY_MARGIN", "choose",
    "choose_preset", "detect", "estimate_training_memory", "measure_cpu_matmul_peak", "mfu",
    "model_flops_per_token", "peak_flops", "plan_presets", "resolve_architecture", "resolve_model_config", "training_dtype",
]
