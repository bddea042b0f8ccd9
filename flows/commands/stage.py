"""``lmcore stage STAGE CONFIG.yaml``: run one stage's flow (upstream stages from cache or computed)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from flows.commands.run import STAGE_HELP

STAGE_NAMES = ("validate", "shard", "tokenizer", "pretokenize", "train", "evaluate", "register")


def register(app: typer.Typer) -> None:
    @app.command()
    def stage(
        name: str = typer.Argument(..., help=f"The stage to run: {STAGE_HELP}."),
        config: Path = typer.Argument(..., help="Pipeline config YAML (see examples/)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.path=value "
                                                 "(repeatable)."),
        refresh: bool = typer.Option(False, "--refresh", help="Recompute this stage even if its output exists."),
    ) -> None:
        """Run one stage as its own Prefect flow; the stages above it come from the cache."""
        if name not in STAGE_NAMES:
            raise typer.BadParameter(f"unknown stage '{name}'; choose one of {', '.join(STAGE_NAMES)}",
                                     param_hint="STAGE")
        from flows.runtime import configure

        configure(quiet=True)
        from rich.console import Console

        from flows.commands._report import where_to_look
        from flows.commands.run import load_config, run_flow

        console = Console(highlight=False, soft_wrap=True)
        cfg = load_config(config, set_)
        from flows.pipeline import check_inputs
        from flows.stages import STAGE_FLOWS

        check_inputs(cfg)

        records = run_flow(lambda: STAGE_FLOWS[name](cfg, refresh=refresh), console)
        where_to_look(records, console)
