"""``lmcore plan [CONFIG.yaml]``: what this machine can train, before anything runs.

Prints the detected hardware (device, memory, bf16/fp16, torch.compile,
flash-attn), then one row per preset: parameters, estimated training memory
without and with gradient checkpointing for the configured micro-batch,
sequence length and precision, the token budget (20 tokens per parameter,
the Chinchilla ratio) and how long that would take at an assumed MFU. The
preset ``auto`` picks is marked, with the reason. Nothing is trained or
downloaded; the only work is a 0.2 s matmul timing on a CPU (no datasheet
peak there).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

ASSUMED_MFU = {"cuda": 0.40, "mps": 0.25, "cpu": 0.30}
TOKENS_PER_PARAMETER = 20


def register(app: typer.Typer) -> None:
    @app.command()
    def plan(
        config: Optional[Path] = typer.Argument(None, help="Pipeline config YAML; defaults apply without one."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.path=value "
                                                 "(repeatable), e.g. --set training.batch_size=4."),
        device: Optional[str] = typer.Option(None, help="Plan for this device type (cuda, mps, cpu) instead of "
                                             "the best one found."),
    ) -> None:
        """Show the detected hardware, the preset `auto` picks, and memory/token estimates per preset."""
        from rich.console import Console

        from lmcore.config import PipelineConfig

        if config is not None:
            cfg = PipelineConfig.from_yaml(config, overrides=set_ or [])
        else:
            cfg = PipelineConfig.from_dict({}, overrides=set_ or [])
        if device not in (None, "cuda", "mps", "cpu"):
            raise typer.BadParameter(f"--device must be cuda, mps or cpu, not {device!r}")
        import sys

        render_plan(cfg, Console() if sys.stdout.isatty() else Console(width=120), device)


def render_plan(cfg, console, device_type: Optional[str] = None) -> None:
    from rich.table import Table

    from lmcore.hardware import GiB, choose, detect, measure_cpu_matmul_peak, model_flops_per_token, peak_flops
    from lmcore.hardware import training_dtype
    from lmcore.hardware.presets import resolve_architecture

    hw = detect(device_type)
    dtype = training_dtype(cfg, hw, resolve_architecture(cfg, hw)[1].hidden_size)  # the model it would train
    yes = {True: "[green]yes[/]", False: "[red]no[/]"}
    console.print(f"[bold]device[/]      {hw.device_type} x{hw.count}: {hw.name}")
    console.print(f"[bold]memory[/]      {hw.free_memory / GiB:.1f} GiB free of {hw.total_memory / GiB:.1f} GiB"
                  f"{' per device' if hw.count > 1 else ''}")
    console.print(f"[bold]precision[/]   bf16 {yes[hw.bf16]}  fp16 {yes[hw.fp16]}  -> training in {dtype}")
    console.print(f"[bold]compile[/]     {yes[hw.compile]}   [bold]flash-attn[/] {yes[hw.flash_attn]}   "
                  f"[bold]CPU cores[/] {hw.cpu_cores}")

    if hw.device_type == "cpu":
        peak, peak_note = measure_cpu_matmul_peak(dtype, seconds=0.2), "measured matmul"
    else:
        peak, peak_note = peak_flops(hw.name, dtype), "datasheet"
    if peak:
        console.print(f"[bold]peak[/]        {peak / 1e12:.2f} TFLOP/s {dtype} ({peak_note})")
    else:
        console.print(f"[bold]peak[/]        unknown for {hw.name!r} in {dtype}: no time estimates")

    choice = choose(cfg, hw)
    world = cfg.training.nproc_per_node
    mfu = ASSUMED_MFU[hw.device_type]
    table = Table(title=f"Presets (micro-batch {cfg.training.batch_size}, {dtype}; "
                        f"budget {choice.plans[0].budget / GiB:.1f} GiB = 85% of free)")
    for col, justify in (("preset", "left"), ("params", "right"), ("seq", "right"), ("memory", "right"),
                         ("w/ checkpointing", "right"), ("fits", "left"), (f"{TOKENS_PER_PARAMETER}N tokens", "right"),
                         (f"time @{mfu:.0%} MFU", "right")):
        table.add_column(col, justify=justify)
    for p in choice.plans:
        fits = "yes" if p.fits else ("with ckpt" if p.fits_with_checkpointing else "no")
        tokens = TOKENS_PER_PARAMETER * p.model.num_parameters()
        hours = "-"
        if peak:
            tok_per_s = mfu * peak * world / model_flops_per_token(p.model, p.model.seq_length)
            hours = _duration(tokens / tok_per_s)
        chosen = p.name == choice.name
        table.add_row(("* " if chosen else "  ") + p.name, _count(p.model.num_parameters()), str(p.model.seq_length),
                      f"{p.plain.total / GiB:.1f} GiB", f"{p.checkpointed.total / GiB:.1f} GiB", fits,
                      _count(tokens), hours, style="bold green" if chosen else None)
    console.print(table)
    ckpt = " with gradient checkpointing" if choice.gradient_checkpointing else ""
    source = "auto picks" if cfg.model.config_preset == "auto" else "configured"
    console.print(f"[bold]{source}[/]  {choice.name}{ckpt}: {choice.reason}")
    chosen = next(p for p in choice.plans if p.name == choice.name)
    plain = chosen.checkpointed if choice.gradient_checkpointing else chosen.plain
    offloaded = plain.with_cpu_offload(chosen.model)
    console.print(f"[bold]cpu_offload[/] (training.cpu_offload, CUDA + FSDP2): {choice.name} would need "
                  f"{offloaded.total / GiB:.1f} GiB of GPU memory instead of {plain.total / GiB:.1f} GiB, and "
                  f"{plain.model_states / GiB:.1f} GiB of CPU memory for its weights, gradients and optimizer state"
                  + ("" if hw.device_type == "cuda" else "; not available on this machine (no CUDA)"))


def _count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    if seconds < 86400 * 365:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / (86400 * 365):,.0f} years"
