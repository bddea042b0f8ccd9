"""``lmcore validate FILES...``: print the data validation report, run nothing else.

Calls ``lmcore.data.validate.run_validate`` directly (no Prefect, no store):
a quick look at a dataset before a pipeline run. The report and quarantine are
written to ``--out`` when given, else to a temporary folder that is removed.
Exit code 0 whatever the data looks like, unless ``--strict``: then 1 when
the invalid fraction is above ``data.max_invalid_fraction`` or a file holds no
records. A file that does not exist is bad usage: exit 2, before anything is read.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def validate(
        files: Optional[list[str]] = typer.Argument(
            None, help="JSONL files or globs (.gz/.zst ok). Default: data.training_data_path + eval_data_path "
                       "of --config."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="pipeline YAML; its data section "
                                              "sets text_fields, min_text_length, max_invalid_fraction ..."),
        min_text_length: Optional[int] = typer.Option(None, "--min-text-length", min=0,
                                                      help="override data.min_text_length"),
        as_json: bool = typer.Option(False, "--json", help="print the full report as JSON on stdout"),
        strict: bool = typer.Option(False, "--strict", help="exit 1 when above data.max_invalid_fraction"),
        out: Optional[Path] = typer.Option(None, "--out", help="keep report.json and quarantine.jsonl here"),
    ) -> None:
        """Check JSONL data line by line and print the validation report."""
        from rich.console import Console

        from lmcore.config import PipelineConfig
        from lmcore.data.report import render_report
        from lmcore.data.validate import REPORT_FILE, run_validate

        cfg = PipelineConfig.from_yaml(config) if config else PipelineConfig()
        data_cfg = cfg.data
        if min_text_length is not None:
            data_cfg = data_cfg.model_copy(update={"min_text_length": min_text_length})
        if files:
            data_cfg = data_cfg.model_copy(update={"eval_data_path": []})  # validate what was named
        elif not (data_cfg.training_data_path or data_cfg.eval_data_path):
            raise typer.BadParameter("name FILES or give --config with data.training_data_path", param_hint="FILES")

        _check_exist(files, data_cfg)
        console = Console(stderr=as_json)
        with tempfile.TemporaryDirectory(prefix="lmcore-validate-") as tmp:
            out_dir = out or Path(tmp)
            _run_with_progress(run_validate, files or None, data_cfg, out_dir,
                               show=not as_json and sys.stderr.isatty())
            report = json.loads((out_dir / REPORT_FILE).read_text(encoding="utf-8"))
        if as_json:
            typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            console.print(render_report(report))
            if out:
                console.print(f"report: {out / REPORT_FILE}  quarantine: {out / 'quarantine.jsonl'}", soft_wrap=True)
        if strict and report["invalid_fraction"] > data_cfg.max_invalid_fraction:
            typer.echo(f"--strict: invalid fraction {report['invalid_fraction']:.2%} > data.max_invalid_fraction "
                       f"{data_cfg.max_invalid_fraction:.2%}", err=True)
            raise typer.Exit(code=1)
        empty = report.get("empty_files") or []
        if strict and empty:
            typer.echo(f"--strict: {len(empty)} file(s) hold no records: {', '.join(empty)}", err=True)
            raise typer.Exit(code=1)


def _check_exist(files: Optional[list[str]], data_cfg) -> None:
    """Every named file or glob must match something: exit 2 naming it (FILES, or the config key)."""
    from lmcore.data.formats import expand_paths
    from lmcore.errors import DataFormatError, UsageError

    named = [("FILES", files)] if files else [("data.training_data_path", data_cfg.training_data_path),
                                              ("data.eval_data_path", data_cfg.eval_data_path)]
    for where, patterns in named:
        for pattern in patterns or []:
            try:
                expand_paths([pattern])
            except DataFormatError as exc:
                raise UsageError(str(exc).replace("data.training_data_path / data.eval_data_path", where)) from None


def _run_with_progress(run_validate, files, data_cfg, out_dir: Path, show: bool) -> dict:
    if not show:
        return run_validate(files, data_cfg, out_dir, enforce=False)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("validating", total=None)
        return run_validate(files, data_cfg, out_dir, enforce=False,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
