"""``lmcore models list|show ID|delete ID``: the registered models under ``paths.models``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

MODELS_HELP = "Models folder (default: $LMCORE_MODELS or ./models)."


def default_models_dir() -> Path:
    return Path(os.environ.get("LMCORE_MODELS") or "models")


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="List, inspect and delete registered models.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_models(
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List registered models, oldest first."""
        from rich.console import Console
        from rich.table import Table

        from lmcore.registry import ModelManager

        rows = ModelManager(models_dir or default_models_dir()).list_models()
        if as_json:
            typer.echo(json.dumps(rows, indent=2, default=str))
            return
        table = Table("id", "parameters", "size MB", "eval loss", "created")
        for m in rows:
            loss = (m.get("eval_metrics") or {}).get("eval_loss", (m.get("eval_metrics") or {}).get("loss"))
            table.add_row(m["id"], f"{m.get('parameters', 0):,}", f"{m.get('size_mb', 0):.2f}",
                          f"{loss:.3f}" if isinstance(loss, (int, float)) else "-", str(m.get("created", "")))
        Console().print(table if rows else f"no models under {models_dir or default_models_dir()}")

    @models_app.command("show")
    def show(
        model_id: str = typer.Argument(..., help="Model id, a unique prefix of one, or 'latest'."),
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
    ) -> None:
        """Print a model's metadata.json (parameters, lineage keys, eval metrics, config)."""
        from lmcore.registry import ModelManager

        manager = ModelManager(models_dir or default_models_dir())
        typer.echo(json.dumps(manager.metadata(manager.resolve_id(model_id)), indent=2, default=str))

    @models_app.command("delete")
    def delete(
        model_id: str = typer.Argument(..., help="Model id to delete (its folder is removed)."),
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
    ) -> None:
        """Delete a registered model's folder (MLflow versions are left alone)."""
        from lmcore.registry import ModelManager

        ModelManager(models_dir or default_models_dir()).delete_model(model_id)
        typer.echo(f"deleted {model_id}")
