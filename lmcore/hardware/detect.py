"""What machine are we on: device type, memory, and which fast paths work.

Why a probe rather than a version check: bf16 on a CPU, ``torch.compile``
without a C compiler, or flash-attn wheels that exist but do not match the
GPU all fail only when tried, so :func:`detect` tries the cheap ones (a 4x4
matmul under autocast) and only *looks for* the expensive ones (flash_attn is
found with ``importlib.util.find_spec``, never imported: importing it
initialises CUDA kernels and can take seconds or crash on a mismatched build).

:class:`HardwareInfo` is a plain dataclass so that tests and the ``auto``
preset logic can describe a machine they are not running on (a 24 GB or an
80 GB GPU) without mocking anything.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import torch

from lmcore.errors import UsageError

DeviceType = Literal["cuda", "mps", "cpu"]


@dataclass(frozen=True)
class HardwareInfo:
    """One node's accelerator as seen by torch. Memory figures are bytes, per device."""

    device_type: DeviceType = "cpu"
    name: str = "cpu"
    count: int = 1
    total_memory: int = 0
    free_memory: int = 0
    bf16: bool = False
    fp16: bool = False
    compile: bool = False
    flash_attn: bool = False
    cpu_cores: int = 1
    capability: Optional[tuple[int, int]] = None

    @property
    def is_gpu(self) -> bool:
        return self.device_type in ("cuda", "mps")

    def to_dict(self) -> dict:
        return asdict(self)


def detect(device_type: Optional[str] = None) -> HardwareInfo:
    """Describe this machine's best device (``cuda`` > ``mps`` > ``cpu``), or the one named."""
    kind = device_type or _best_device_type()
    cores = _cpu_cores()
    compile_ok = compile_available(kind)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("device 'cuda' requested, but this machine has no CUDA GPU that torch can use "
                             "(torch.cuda.is_available() is False): plan for cpu here, or on the GPU machine")
        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        props = torch.cuda.get_device_properties(index)
        capability = (props.major, props.minor)
        return HardwareInfo(
            device_type="cuda", name=torch.cuda.get_device_name(index), count=torch.cuda.device_count(),
            total_memory=int(total), free_memory=int(free), bf16=bool(torch.cuda.is_bf16_supported()),
            fp16=True, compile=compile_ok, flash_attn=_flash_attn_installed() and capability >= (8, 0),
            cpu_cores=cores, capability=capability)
    if kind == "mps":
        if not _mps_available():
            raise UsageError("device 'mps' requested, but this machine has no Apple GPU that torch can use")
        total = _mps_memory()
        return HardwareInfo(
            device_type="mps", name="Apple MPS", count=1, total_memory=total,
            free_memory=total - int(getattr(torch.mps, "current_allocated_memory", lambda: 0)()),
            bf16=_autocast_works("mps", torch.bfloat16), fp16=_autocast_works("mps", torch.float16),
            compile=compile_ok, flash_attn=False, cpu_cores=cores)
    total, available = _ram()
    return HardwareInfo(
        device_type="cpu", name=cpu_name(), count=1, total_memory=total, free_memory=available,
        bf16=_autocast_works("cpu", torch.bfloat16), fp16=_autocast_works("cpu", torch.float16),
        compile=compile_ok, flash_attn=False, cpu_cores=cores)


def _best_device_type() -> DeviceType:
    if torch.cuda.is_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _ram() -> tuple[int, int]:
    """(total, available) RAM in bytes: /proc/meminfo on Linux, sysconf elsewhere."""
    try:
        fields = {}
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0]) * 1024
        total = fields["MemTotal"]
        return total, fields.get("MemAvailable", fields.get("MemFree", total))
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
        try:
            available = page * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError):
            available = total
        return total, available
    except (ValueError, OSError, AttributeError):
        return 0, 0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def _mps_memory() -> int:
    recommended = getattr(torch.mps, "recommended_max_memory", None)
    if recommended is not None:
        try:
            return int(recommended())
        except RuntimeError:
            pass
    return _ram()[0]


def _autocast_works(device_type: str, dtype: torch.dtype) -> bool:
    """True when a small matmul under autocast runs and yields ``dtype``."""
    try:
        x = torch.ones(4, 4, device=device_type)
        with torch.autocast(device_type=device_type, dtype=dtype):
            y = x @ x
        return y.dtype == dtype and bool(torch.isfinite(y.float()).all())
    except (RuntimeError, TypeError, ValueError, AssertionError):
        return False


def compile_available(device_type: str) -> bool:
    """``torch.compile`` exists and inductor has a compiler for this device (a C compiler on CPU)."""
    if not hasattr(torch, "compile"):
        return False
    if device_type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))


def _flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None
