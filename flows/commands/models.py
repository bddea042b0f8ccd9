"""``lmcore models list|show ID|delete ID``: the registered models under ``paths.models``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

MODELS_HELP = "Models folder (default: $LMCORE_MODELS or ./models)."


def default_models_dir() -> Path:
    return Path(os.environ.get("LMCORE_MODELS") or "models")


def registries(rows: list[dict], config: Path | None) -> list[tuple[str, str]]:
    """The MLflow registries to read: ``(tracking URI, registered model name)`` recorded in each local
    model's metadata (older models: from the config they were trained with), then ``--config``'s."""
    from lmcore.config import PipelineConfig

    found: list[tuple[str, str]] = []
    for meta in rows:
        where = meta.get("registry") or {}
        if not where and (meta.get("config") or {}).get("tracking", {}).get("enabled"):
            tracking = meta["config"]["tracking"]
            uri = tracking.get("uri") or "sqlite:///" + str(Path(meta["config"]["paths"]["mlflow"]).resolve()
                                                             / "mlflow.db")
            where = {"tracking_uri": uri, "name": tracking.get("registered_model_name")}
        if where.get("tracking_uri") and where.get("name"):
            found.append((where["tracking_uri"], where["name"]))
    if config is not None or not found:
        cfg = PipelineConfig.from_yaml(config) if config else PipelineConfig()
        found.append((cfg.tracking_uri(), cfg.tracking.registered_model_name))
    return list(dict.fromkeys(found))


def registry_versions(uri: str, name: str) -> list[dict]:
    """Versions of registered model ``name`` at ``uri``; [] when there is no MLflow store to read.

    An embedded SQLite store is only read when its file exists, so listing never leaves a
    stray mlflow.db behind.
    """
    from lmcore.config import PipelineConfig
    from lmcore.tracking.client import sqlite_file
    from lmcore.tracking.registry import list_registry_versions

    db = sqlite_file(uri)
    if db is not None and not db.exists():
        return []
    return list_registry_versions(PipelineConfig.from_dict({"tracking": {"uri": uri, "registered_model_name": name}}))


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="List, inspect and delete registered models.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_models(
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
        config: Path = typer.Option(None, "--config", "-c", help="Also show this config's MLflow registry (the "
                                    "registries local models were registered in are always shown)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    ) -> None:
        """List local models (oldest first) and the MLflow registry's versions with their aliases."""
        from rich.console import Console
        from rich.table import Table

        from lmcore.models_dir import ModelManager

        rows = ModelManager(models_dir or default_models_dir()).list_models()
        versions = [v for uri, name in registries(rows, config) for v in registry_versions(uri, name)]
        aliases_by_model: dict[str, list[str]] = {}
        for v in versions:
            if v.get("model_id"):
                aliases_by_model.setdefault(v["model_id"], []).extend(v["aliases"])
        if as_json:
            typer.echo(json.dumps({"models": rows, "registry": versions}, indent=2, default=str))
            return
        # whole ids and names always (they are what other commands take); the other columns give way
        console = Console(width=max(Console().width, 160)) if not sys.stdout.isatty() else Console()
        table = Table(title="local models")
        table.add_column("id", no_wrap=True)
        for column in ("parameters", "size MB", "eval loss"):
            table.add_column(column, justify="right")
        table.add_column("aliases")
        table.add_column("created")
        for m in rows:
            loss = (m.get("eval_metrics") or {}).get("eval_loss")
            table.add_row(m["id"], f"{m.get('parameters', 0):,}", f"{m.get('size_mb', 0):.2f}",
                          f"{loss:.3f}" if isinstance(loss, (int, float)) else "-",
                          ", ".join(sorted(set(aliases_by_model.get(m["id"], [])))) or "-",
                          str(m.get("created", "")))
        console.print(table if rows else f"no models under {models_dir or default_models_dir()}")
        if versions:
            reg = Table(title="MLflow registry")
            reg.add_column("name", no_wrap=True)
            reg.add_column("version", justify="right")
            reg.add_column("aliases")
            reg.add_column("bits/byte", justify="right")
            reg.add_column("model id", no_wrap=True)
            reg.add_column("created")
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
