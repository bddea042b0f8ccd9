"""``lmcore run CONFIG.yaml``: the whole pipeline as one Prefect flow, one line per stage.

Heavy imports (prefect, torch, mlflow) happen inside the command so that
``lmcore --help`` and the other commands start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import typer

from flows.stage_names import STAGE_HELP, STAGES



def load_config(config: Path, overrides: Optional[List[str]]):
    from lmcore.config import PipelineConfig

    return PipelineConfig.from_yaml(config, overrides=overrides or [])


REPORT_HELP = "Also write the per-stage records (status, seconds, compute seconds, key, summary) to this JSON file."


def write_report(records: dict, path: Optional[Path]) -> None:
    if path is not None:
        import json

        path.write_text(json.dumps(records, indent=2, default=str), encoding="utf-8")


def run_flow(make_call: Callable[[], Callable[[], dict]], console) -> dict:
    """Pick the Prefect API, then run the flow call ``make_call()`` returns, with the live stage report.

    ``make_call`` imports the flow (and so Prefect) once the API is chosen, while a temporary
    server boots. Returns the stage records; failures and interrupts name the stage and re-raise
    for the CLI to turn into an exit code.
    """
    from flows.prefect_api import PrefectApi
    from flows.run_logs import quiet_console, start_log_file

    with PrefectApi(status=lambda message: console.print(f"[dim]{message}[/]")) as api:
        flow_call = make_call()
        start_log_file()  # every record, tracebacks included; the console gets one line per problem
        quiet_console()
        api.ready()
        from flows.commands._report import StageReporter

        with StageReporter(console) as reporter:
            try:
                records = flow_call()
                records.setdefault("_run", {})["prefect_api"] = api.source
                return records
            except Exception as exc:
                done = ", ".join(reporter.records) or "none"
                verb = "stopped" if getattr(exc, "signum", None) else "failed"
                where = f"stage '{reporter.current}'" if reporter.current else "the run"
                console.print(f"[red]{where} {verb}[/]; finished stages kept in the store: {done}")
                raise  # the CLI prints it in one line (the traceback goes to the log file) and exits with its
                # code: 1 work, 2 config, 130/143 signals
            except BaseException:  # Ctrl-C or a termination signal outside the training loop
                done = ", ".join(reporter.records) or "none"
                where = f"stage '{reporter.current}'" if reporter.current else "between stages"
                console.print(f"[yellow]interrupted {where}[/]; finished stages kept in the store: {done}")
                raise


def print_sample(records: dict, cfg, console) -> None:
    """A sample generation from the registered model (skipped if generation fails)."""
    register = records.get("register")
    if not register:
        return
    model_id = register["summary"].get("model_id")
    try:
        from flows.commands._textgen import complete, sampling_args
        from lmcore.models_dir import ModelManager

        model, tok, _ = ModelManager(cfg.paths.models).load_for_inference(model_id)
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
        report: Optional[Path] = typer.Option(None, "--report", help=REPORT_HELP),
        verify: bool = typer.Option(False, "--verify", help="Check the sha256 of every stored file before reusing "
                                    "it (default: size and modification time)."),
    ) -> None:
        """Run the whole pipeline (validate -> register); finished stages come from the cache."""
        if refresh is not None and refresh not in STAGES:
            raise typer.BadParameter(f"unknown stage '{refresh}'; choose one of {', '.join(STAGES)}",
                                     param_hint="--refresh")
        from flows.runtime import configure

        configure(quiet=True)
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=True)
        cfg = load_config(config, set_)
        from flows.commands._report import where_to_look
        from lmcore.data.inputs import input_paths

        input_paths(cfg)  # a missing file is a usage error before Prefect starts

        def make_call():
            from flows.pipeline import pipeline

            return lambda: pipeline(cfg, refresh=refresh, verify=verify)

        records = run_flow(make_call, console)
        write_report(records, report)
        if sample:
            print_sample(records, cfg, console)
        where_to_look(records, console)
