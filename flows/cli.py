"""The ``lmcore`` command.

Each subcommand lives in its own module under ``flows/commands/`` and
registers itself on ``app``; this file only builds the app and maps lmcore's
errors to exit codes: 0 success, 1 failure of the work, 2 bad usage/config.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console

from lmcore.errors import LmcoreError

app = typer.Typer(
    name="lmcore",
    help="Train LLaMA-style language models from raw JSONL with cached Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register_commands() -> None:
    import flows.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"flows.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


@app.callback()
def _root() -> None:
    """Train LLaMA-style language models from raw JSONL with cached Prefect flows."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    _register_commands()
    try:
        app(args=argv, prog_name="lmcore")  # standalone: click prints usage errors and exits 2
    except LmcoreError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
