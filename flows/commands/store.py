"""``lmcore store gc|verify [CONFIG]``: free abandoned partial work; check every stored file.

Why explicit commands: lmcore never deletes work on its own (a training run's checkpoints are
worth hours), so reclaiming the space of abandoned work is something a person asks for, and is
told exactly what it frees. ``gc`` never touches work whose writer is alive (it holds an OS
lock), finished outputs, or anything outside ``paths.store`` and ``paths.models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

CONFIG_HELP = "Pipeline config whose paths.store and paths.models to use (default: ./lmcore-store, ./models)."


def _paths(config: Optional[Path], store: Optional[Path], models_dir: Optional[Path]) -> tuple[Path, Path]:
    from lmcore.config import PipelineConfig

    cfg = PipelineConfig.from_yaml(config) if config else PipelineConfig()
    return Path(store or cfg.paths.store), Path(models_dir or cfg.paths.models)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def register(app: typer.Typer) -> None:
    store_app = typer.Typer(help="Inspect and tidy the store: free abandoned work, verify every file.",
                            no_args_is_help=True)
    app.add_typer(store_app, name="store")

    @store_app.command("gc")
    def gc(config: Optional[Path] = typer.Argument(None, help=CONFIG_HELP),
           store: Optional[Path] = typer.Option(None, "--store", help="Store folder (overrides the config)."),
           models_dir: Optional[Path] = typer.Option(None, "--models-dir", help="Models folder (overrides the config)."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be freed."),
           ) -> None:
        """Free partial work no live process holds: abandoned training runs, half-written outputs and models."""
        from lmcore.models_dir import ModelManager
        from lmcore.store import Abandoned, Store

        store_root, models_root = _paths(config, store, models_dir)
        st, manager = Store(store_root), ModelManager(models_root)
        found = [(entry, st.remove_abandoned) for entry in st.abandoned()]
        found += [(Abandoned(p, n, "models: half-written model copy"), lambda e: manager.remove_abandoned(e.path))
                  for p, n in manager.abandoned()]
        if not found:
            typer.echo(f"nothing to free in {store_root} or {models_root}")
            return
        freed = 0
        for entry, remove in found:
            if dry_run:
                typer.echo(f"would free {_size(entry.bytes):>9}  {entry.path}  ({entry.what})")
                continue
            if remove(entry):
                freed += entry.bytes
                typer.echo(f"freed {_size(entry.bytes):>9}  {entry.path}  ({entry.what})")
            else:
                typer.echo(f"kept             {entry.path}  (a writer took it up meanwhile)")
        total = sum(e.bytes for e, _ in found)
        typer.echo(f"{'would free' if dry_run else 'freed'} {_size(total if dry_run else freed)} in {len(found)} "
                   f"item(s)")

    @store_app.command("verify")
    def verify(config: Optional[Path] = typer.Argument(None, help=CONFIG_HELP),
               store: Optional[Path] = typer.Option(None, "--store", help="Store folder (overrides the config)."),
               models_dir: Optional[Path] = typer.Option(None, "--models-dir", help="Models folder (overrides the "
                                                         "config)."),
               ) -> None:
        """Check the sha256 of every file of every stored output and registered model; exit 1 if any changed."""
        from lmcore.errors import CheckpointError, StoreError
        from lmcore.models_dir import ModelManager
        from lmcore.store import Store

        store_root, models_root = _paths(config, store, models_dir)
        st = Store(store_root)
        bad = 0
        entries = st.entries()
        for stage, key in entries:
            try:
                changed = st.verify(stage, key)
            except StoreError as exc:
                changed = [str(exc)]
            for name in changed:
                bad += 1
                typer.echo(f"CHANGED  {st.path(stage, key) / name}  ({stage} {key}; the next run rebuilds it)")
        manager = ModelManager(models_root)
        models = manager.list_models()
        for meta in models:
            try:
                manager.verify(meta["id"])
            except CheckpointError as exc:
                bad += 1
                typer.echo(f"CHANGED  {exc}")
        typer.echo(f"{len(entries)} store entries and {len(models)} models checked: "
                   + (f"{bad} file(s) changed" if bad else "all intact"))
        if bad:
            raise typer.Exit(1)
