"""``lmcore generate ID --prompt ...``: sample a continuation from a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.commands.models import MODELS_HELP, default_models_dir


def register(app: typer.Typer) -> None:
    @app.command()
    def generate(
        model_id: str = typer.Argument(..., help="Model id, a unique prefix of one, or 'latest'."),
        prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue."),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Tokens to generate at most."),
        temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="Sampling temperature; 0 = greedy."),
        top_k: Optional[int] = typer.Option(50, "--top-k", min=0, help="Keep the k most likely tokens; 0 = off."),
        top_p: Optional[float] = typer.Option(None, "--top-p", min=0.0, max=1.0,
                                              help="Nucleus sampling: keep tokens up to this probability mass."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for reproducible samples."),
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
    ) -> None:
        """Continue PROMPT with a registered model and print the result."""
        from flows.commands._textgen import complete, sampling_args
        from lmcore.models_dir import ModelManager

        model, tok, _ = ModelManager(models_dir or default_models_dir()).load_for_inference(model_id)
        text = complete(model, tok, prompt, **sampling_args(max_new_tokens, temperature, top_k, top_p, seed))
        typer.echo(prompt + text)
