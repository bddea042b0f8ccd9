"""``lmcore chat ID``: an interactive chat through the model's chat template.

Reads stdin line by line (so it also works piped: ``printf 'hi\\n/exit\\n' | lmcore chat ID``);
``/exit`` or end of input quits, ``/reset`` forgets the conversation.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from flows.commands.models import MODELS_HELP, default_models_dir


def register(app: typer.Typer) -> None:
    @app.command()
    def chat(
        model_id: str = typer.Argument(..., help="Model id, a unique prefix of one, or 'latest'."),
        system: Optional[str] = typer.Option(None, "--system", help="System message to start the conversation."),
        max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="Tokens per reply at most."),
        temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Sampling temperature; 0 = greedy."),
        top_k: Optional[int] = typer.Option(50, "--top-k", min=0, help="Keep the k most likely tokens; 0 = off."),
        top_p: Optional[float] = typer.Option(None, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for reproducible replies."),
        models_dir: Path = typer.Option(None, "--models-dir", help=MODELS_HELP),
    ) -> None:
        """Chat with a registered model; type /exit to quit, /reset to start over."""
        from flows.commands._textgen import chat_reply, sampling_args
        from lmcore.models_dir import ModelManager

        model, tok, meta = ModelManager(models_dir or default_models_dir()).load_for_inference(model_id)
        sampling = sampling_args(max_new_tokens, temperature, top_k, top_p, seed)
        start = [{"role": "system", "content": system}] if system else []
        messages = list(start)
        interactive = sys.stdin.isatty()
        typer.echo(f"chatting with {meta['id']} (/exit to quit, /reset to start over)")
        while True:
            if interactive:
                typer.echo("you> ", nl=False)
            line = sys.stdin.readline()
            if not line:
                break
            text = line.strip()
            if text == "/exit":
                break
            if text == "/reset":
                messages = list(start)
                typer.echo("(conversation reset)")
                continue
            if not text:
                continue
            messages.append({"role": "user", "content": text})
            reply = chat_reply(model, tok, messages, **sampling)
            messages.append({"role": "assistant", "content": reply})
            typer.echo(f"assistant> {reply}")
