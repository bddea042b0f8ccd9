"""``lmcore models list|show ID|delete ID``: the registered models under ``paths.models``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

MODELS_HELP = "Models folder (default: $LMCORE_MODELS or ./models)."


def default_models_dir() -> Path:
    return Path(os.environ.get("LMCORE_MODELS") or "models")


def registry_versions(config: Path | None) -> list[dict]:
    """Versions of the configured registered model; [] when there is no MLflow store to read.

    The embedded SQLite store is only read when its file exists, so listing never leaves a
    stray mlflow.db behind.
    """
    from lmcore.config import PipelineConfig

    from lmcore.tracking.client import sqlite_file
    from lmcore.tracking.registry import list_registry_versions

    cfg = PipelineConfig.from_yaml(config) if config else PipelineConfig()
    db = sqlite_file(cfg.tracking_uri())
    if db is not None and not db.exists():
        return []
    return list_registry_versions(cfg)


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="List, inspect and delete registered models.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_models(
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
        config: Path = typer.Option(None, "--config", "-c", help="Pipeline config whose MLflow registry to show "
                                    "(default: the default config's tracking URI)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """List local models (oldest first) and the MLflow registry's versions with their aliases."""
        from rich.console import Console
        from rich.table import Table

        from lmcore.models_dir import ModelManager

        rows = ModelManager(models_dir or default_models_dir()).list_models()
        versions = registry_versions(config)
        aliases_by_model = {v["model_id"]: v["aliases"] for v in versions if v.get("model_id")}
        if as_json:
            typer.echo(json.dumps({"models": rows, "registry": versions}, indent=2, default=str))
            return
        console = Console()
        table = Table("id", "parameters", "size MB", "eval loss", "aliases", "created", title="local models")
        for m in rows:
            loss = (m.get("eval_metrics") or {}).get("eval_loss")
            table.add_row(m["id"], f"{m.get('parameters', 0):,}", f"{m.get('size_mb', 0):.2f}",
                          f"{loss:.3f}" if isinstance(loss, (int, float)) else "-",
                          ", ".join(aliases_by_model.get(m["id"], [])) or "-", str(m.get("created", "")))
        console.print(table if rows else f"no models under {models_dir or default_models_dir()}")
        if versions:
            reg = Table("name", "version", "aliases", "bits/byte", "model id", "created", title="MLflow registry")
            for v in versions:
                bpb = v.get("bits_per_byte")
                reg.add_row(v["name"], v["version"], ", ".join(v["aliases"]) or "-",
                            f"{bpb:.3f}" if isinstance(bpb, (int, float)) else "-", v.get("model_id") or "-",
                            v.get("created") or "")
            console.print(reg)

    @models_app.command("show")
    def show(
        model_id: str = typer.Argument(..., help="Model id, a unique prefix of one, or 'latest'."),
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
    ) -> None:
        """Print a model's metadata.json (parameters, lineage keys, eval metrics, config)."""
        from lmcore.models_dir import ModelManager

        manager = ModelManager(models_dir or default_models_dir())
        typer.echo(json.dumps(manager.metadata(manager.resolve_id(model_id)), indent=2, default=str))

    @models_app.command("delete")
    def delete(
        model_id: str = typer.Argument(..., help="Model id (or a unique prefix, or 'latest') to delete."),
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
        yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking (needed when not on a terminal)."),
    ) -> None:
        """Delete a registered model's folder (MLflow versions are left alone). Asks first."""
        import sys

        from lmcore.errors import UsageError
        from lmcore.models_dir import ModelManager

        manager = ModelManager(models_dir or default_models_dir())
        full_id = manager.resolve_id(model_id)  # only ids inside the models folder; anything else exits 2
        size = manager.metadata(full_id).get("size_mb", 0)
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError(f"not deleting {full_id} without confirmation: pass --yes")
            typer.confirm(f"delete {full_id} ({size:.1f} MB) from {manager.root}?", abort=True)
        manager.delete_model(full_id)
        typer.echo(f"deleted {full_id}")
