"""Whether bf16 autocast pays on this CPU: measured once per machine, then remembered.

Why measure: CPUs with bf16 matrix units (AVX512-BF16, AMX; recent EPYC and Xeon) multiply bf16
matrices about twice as fast as fp32, and a training step gains 1.3-1.4x from autocast; CPUs
without them emulate bf16 and lose. The datasheet is not at hand, so ``precision.dtype: auto``
times a 512x512 matmul both ways (about 20 ms) the first time and picks bf16 when it is at least
:data:`MIN_SPEEDUP` times faster.

The matmul units only pay on matrices of some size: a training step at hidden 64 ran 1.34x slower
in bf16 on a CPU whose bf16 matmul is 2.1x faster, hidden 128 broke even and hidden 256 was 1.38x
faster (batch 8x128, docs/experiments.md). So bf16 is picked for models of at least
:data:`MIN_HIDDEN_SIZE`.

Remembered in ``$LMCORE_CACHE_DIR/hardware.json`` (default ``~/.cache/lmcore``), keyed by CPU
model, thread count and torch version, so every later run, plan and test decides the same way
without timing again. Delete the file to measure again.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from lmcore.atomic_files import write_text_atomic

MIN_SPEEDUP = 1.3
MIN_HIDDEN_SIZE = 256   # narrower models run slower in bf16 autocast on a CPU, whatever its matmul units
SIZE = 512
CACHE_FILE = "hardware.json"


def cache_dir() -> Path:
    return Path(os.environ.get("LMCORE_CACHE_DIR") or Path.home() / ".cache" / "lmcore")


def machine_key() -> str:
    from lmcore.hardware.detect import cpu_name

    return f"{cpu_name()}|{platform.machine()}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def cpu_bf16_pays(hidden_size: int | None = None) -> bool:
    """True when bf16 matmuls are at least ``MIN_SPEEDUP`` times faster than fp32 here (cached) and the
    model (``hidden_size``; None: not known) is at least ``MIN_HIDDEN_SIZE`` wide."""
    if hidden_size is not None and hidden_size < MIN_HIDDEN_SIZE:
        return False
    path, key = cache_dir() / CACHE_FILE, machine_key()
    known = _read(path)
    entry = known.get(key)
    if entry is None:
        entry = measure()
        known[key] = entry
        _write(path, known)
    return bool(entry.get("bf16_pays"))


def measure(reps: int = 5) -> dict:
    """Best-of-``reps`` seconds of one ``SIZE``-cube matmul in fp32 and in bf16, interleaved."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(SIZE, SIZE, generator=gen), torch.randn(SIZE, SIZE, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(2):  # warm-up: kernels chosen, pages touched
        a @ b
        a16 @ b16
    for _ in range(reps):
        for name, (x, y) in (("fp32", (a, b)), ("bf16", (a16, b16))):
            start = time.perf_counter()
            x @ y
            best[name] = min(best[name], time.perf_counter() - start)
    speedup = best["fp32"] / best["bf16"] if best["bf16"] > 0 else 0.0
    return {"fp32_s": best["fp32"], "bf16_s": best["bf16"], "speedup": round(speedup, 3),
            "bf16_pays": speedup >= MIN_SPEEDUP, "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    """Atomically; a cache that cannot be written (read-only home) only means measuring again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass
