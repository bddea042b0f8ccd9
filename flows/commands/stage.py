"""``lmcore stage STAGE CONFIG.yaml``: run one stage's flow (upstream stages from cache or computed)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from flows.commands.run import REPORT_HELP, load_config, run_flow, write_report
from flows.stage_names import STAGE_HELP, STAGES


def register(app: typer.Typer) -> None:
    @app.command()
    def stage(
        name: str = typer.Argument(..., help=f"The stage to run: {STAGE_HELP}."),
        config: Path = typer.Argument(..., help="Pipeline config YAML (see examples/)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.path=value "
                                                 "(repeatable)."),
        refresh: bool = typer.Option(False, "--refresh", help="Recompute this stage even if its output exists."),
        verify: bool = typer.Option(False, "--verify", help="Check the sha256 of every stored file before reusing "
                                    "it (default: size and modification time)."),
        report: Optional[Path] = typer.Option(None, "--report", help=REPORT_HELP),
    ) -> None:
        """Run one stage as its own Prefect flow; the stages above it come from the cache."""
        if name not in STAGES:
            raise typer.BadParameter(f"unknown stage '{name}'; choose one of {', '.join(STAGES)}",
                                     param_hint="STAGE")
        from flows.runtime import configure

        configure(quiet=True)
        from rich.console import Console

        from flows.commands._report import where_to_look

        console = Console(highlight=False, soft_wrap=True)
        cfg = load_config(config, set_)
        from lmcore.data.inputs import input_paths

        input_paths(cfg)  # a missing file is a usage error before Prefect starts

        def make_call():
            from flows.stages import STAGE_FLOWS

            return lambda: STAGE_FLOWS[name](cfg, refresh=refresh, verify=verify)

        records = run_flow(make_call, console)
        write_report(records, report)
        where_to_look(records, console)
