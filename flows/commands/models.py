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


WHOLE = ("id", "name", "model id")  # never cut: other commands take them
NUMBERS = ("parameters", "size MB", "eval loss", "version", "bits/byte")


def _table(title: str, columns: tuple[str, ...]):
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column in WHOLE or column in NUMBERS, overflow="fold",
                         justify="right" if column in NUMBERS else "left")
    return table


def _number(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _when(iso: object) -> str:
    """``2026-11-29T16:44:51+00:00`` -> ``2026-11-29 16:44`` (UTC, as recorded)."""
    text = str(iso or "")
    return text[:16].replace("T", " ") if len(text) >= 16 else text


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
        """List local models (oldest first) with their MLflow versions and aliases."""
        from rich.console import Console

        from lmcore.models_dir import ModelManager

        rows = ModelManager(models_dir or default_models_dir()).list_models()
        versions = [v for uri, name in registries(rows, config) for v in registry_versions(uri, name)]
        if as_json:
            typer.echo(json.dumps({"models": rows, "registry": versions}, indent=2, default=str))
            return
        registered: dict[str, list[str]] = {}
        for v in versions:
            if v.get("model_id"):
                registered.setdefault(v["model_id"], []).append(
                    " ".join([f"{v['name']} v{v['version']}", *v["aliases"]]))
        # whole ids always (other commands take them); piped, as wide as they need; on a narrow terminal
        # the registry column wraps at its spaces and the least useful columns are left out
        console = Console(width=max(Console().width, 160)) if not sys.stdout.isatty() else Console()
        cells = {
            "id": lambda m: m["id"],
            "eval loss": lambda m: _number((m.get("eval_metrics") or {}).get("eval_loss"), ".3f"),
            "registry": lambda m: "\n".join(registered.get(m["id"], [])) or "-",
            "parameters": lambda m: _number(m.get("parameters"), ","),
            "size MB": lambda m: _number(m.get("size_mb"), ".2f"),
            "created": lambda m: _when(m.get("created")),
        }
        width = console.width
        columns = [c for c, fits in zip(cells, (True, True, True, width >= 100, width >= 120, width >= 120)) if fits]
        table = _table("local models", tuple(columns))
        for m in rows:
            table.add_row(*(cells[c](m) for c in columns))
        console.print(table if rows else f"no models under {models_dir or default_models_dir()}")
        local = {m["id"] for m in rows}
        elsewhere = [v for v in versions if v.get("model_id") not in local]
        if elsewhere:
            reg = _table("MLflow versions without a model folder here",
                         ("name", "version", "aliases", "bits/byte", "model id"))
            for v in elsewhere:
                reg.add_row(v["name"], v["version"], ", ".join(v["aliases"]) or "-",
                            _number(v.get("bits_per_byte"), ".3f"), v.get("model_id") or "-")
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
