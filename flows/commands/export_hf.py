"""``lmcore export-hf ID OUT_DIR``: a registered model as a Hugging Face transformers folder."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.models import MODELS_HELP, default_models_dir


def register(app: typer.Typer) -> None:
    @app.command("export-hf")
    def export_hf(
        model_id: str = typer.Argument(..., help="Model id, a unique prefix of one, or 'latest'."),
        out_dir: Path = typer.Argument(..., help="New (or empty) folder to write the transformers model into."),
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
    ) -> None:
        """Write a folder that AutoModelForCausalLM and AutoTokenizer.from_pretrained load."""
        from lmcore.hf.export import export_for_hf
        from lmcore.models_dir import ModelManager

        manager = ModelManager(models_dir or default_models_dir())
        full_id = manager.resolve_id(model_id)
        written = export_for_hf(manager.model_dir(full_id), out_dir)
        files = ", ".join(sorted(p.name for p in written.iterdir()))
        typer.echo(f"exported {full_id} to {written} ({files})")
