"""``lmcore run CONFIG.yaml``: the whole pipeline as one Prefect flow, one line per stage.

Heavy imports (prefect, torch, mlflow) happen inside the command so that
``lmcore --help`` and the other commands start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

STAGE_HELP = "validate, shard, tokenizer, pretokenize, train, evaluate or register"


def load_config(config: Path, overrides: Optional[List[str]]):
    from lmcore.config import PipelineConfig

    return PipelineConfig.from_yaml(config, overrides=overrides or [])


def run_flow(flow_call, console) -> dict:
    """Run a flow call with the live stage report; returns the stage records."""
    from flows.commands._report import StageReporter

    from lmcore.errors import LmcoreError

    with StageReporter(console) as reporter:
        try:
            return flow_call()
        except Exception as exc:
            done = ", ".join(reporter.records) or "none"
            console.print(f"[red]stage '{reporter.current}' failed[/]; finished stages kept in the store: {done}")
            if isinstance(exc, LmcoreError):
                raise  # the CLI prints it and exits with its code (1 work, 2 config)
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
            raise typer.Exit(1) from None


def print_sample(records: dict, cfg, console) -> None:
    """A sample generation from the registered model (skipped if generation fails)."""
    register = records.get("register")
    if not register:
        return
    model_id = register["summary"].get("model_id")
    try:
        from flows.commands._textgen import complete, sampling_args
        from lmcore.registry import ModelManager

        model, tok, *_ = ModelManager(cfg.paths.models).load_model(model_id)
        prompt = (cfg.training.sample_prompts or ["The"])[0]
        text = complete(model, tok, prompt, **sampling_args(cfg.training.sample_max_new_tokens, 0.8, 50, None, 0))
        console.print(f"[bold]model[/]      {model_id}   (lmcore generate {model_id} --prompt ...)")
        console.print(f"[bold]sample[/]     [dim]{prompt}[/]{text}", highlight=False)
    except Exception as exc:  # a sample is a courtesy; the run already succeeded
        console.print(f"[yellow]sample generation skipped: {exc}[/]")


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        config: Path = typer.Argument(..., help="Pipeline config YAML (see examples/)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.path=value "
                                                 "(repeatable), e.g. --set training.max_steps=10."),
        refresh: Optional[str] = typer.Option(None, "--refresh", help=f"Recompute this stage and every stage "
                                              f"below it ({STAGE_HELP})."),
        sample: bool = typer.Option(True, "--sample/--no-sample", help="End with a sample generation."),
        report: Optional[Path] = typer.Option(None, "--report", help="Also write the per-stage records "
                                              "(status, seconds, compute seconds, key, summary) to this JSON file."),
    ) -> None:
        """Run the whole pipeline (validate -> register); finished stages come from the cache."""
        from flows.commands.stage import STAGE_NAMES

        if refresh is not None and refresh not in STAGE_NAMES:
            raise typer.BadParameter(f"unknown stage '{refresh}'; choose one of {', '.join(STAGE_NAMES)}",
                                     param_hint="--refresh")
        from flows.runtime import configure

        configure(quiet=True)
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=True)
        cfg = load_config(config, set_)
        from flows.commands._report import where_to_look
        from flows.pipeline import check_inputs, pipeline

        check_inputs(cfg)  # a missing file is a usage error before Prefect starts

        records = run_flow(lambda: pipeline(cfg, refresh=refresh), console)
        if report:
            import json

            report.write_text(json.dumps(records, indent=2, default=str), encoding="utf-8")
        if sample:
            print_sample(records, cfg, console)
        where_to_look(records, console)
