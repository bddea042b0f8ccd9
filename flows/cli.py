"""The ``lmcore`` command.

Each subcommand lives in its own module under ``flows/commands/`` and
registers itself on ``app``; this file only builds the app and maps outcomes
to exit codes: 0 success, 1 failure of the work, 2 bad usage/config, and for a
signal the shell's convention, 128 + the signal (130 Ctrl-C, 143 SIGTERM).

Signals outside the training loop (which stops gracefully by itself, see
``lmcore.train.interrupt``): the first Ctrl-C or SIGTERM unwinds the command
(Prefect records the run as crashed, temporary servers are stopped); a second
one exits at once.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shlex
import signal
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
err_console = Console(stderr=True, soft_wrap=True, highlight=False)  # one line per error, never wrapped


def _register_commands() -> None:
    import flows.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"flows.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


def _print_version(value: bool) -> None:
    if value:
        import lmcore

        typer.echo(f"lmcore {lmcore.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print lmcore's version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Print full tracebacks on errors (they are always in the "
                               "log file the error names)."),
) -> None:
    """Train LLaMA-style language models from raw JSONL with cached Prefect flows."""


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted run: this one."""
    return shlex.join(["lmcore", *argv])


_signalled = False


def _on_signal(signum: int, _frame) -> None:
    global _signalled
    if _signalled:
        sys.stderr.write("\nlmcore: exiting now\n")
        sys.stderr.flush()
        os._exit(128 + signum)
    _signalled = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _install_signal_handlers() -> None:
    global _signalled
    _signalled = False
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)


def _interrupted(args: list[str], signum: int) -> int:
    name = signal.Signals(signum).name
    err_console.print(f"{name}: stopped; finished work is kept. Continue with: {resume_command(args)}",
                      highlight=False, soft_wrap=True)
    return 128 + signum


def _report(exc: BaseException, debug: bool) -> None:
    """The error in one line (what and where: the file, key or stage), then where the full traceback is."""
    from flows.run_logs import current_log_file, log_exception

    message = str(exc) if isinstance(exc, LmcoreError) else f"{type(exc).__name__}: {exc}"
    first, _, rest = message.partition("\n")
    err_console.print(f"[bold red]error:[/] {first}", highlight=False)
    if rest and isinstance(exc, LmcoreError):  # e.g. a torchrun child's output tail
        err_console.print(rest, highlight=False)
    if debug:
        import traceback

        err_console.print("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), highlight=False,
                          markup=False)
    if not isinstance(exc, LmcoreError) or current_log_file() is not None:
        err_console.print(f"full log: {log_exception(exc)}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted anywhere on the line, not only before the command
        args = ["--debug"] + [a for a in args if a != "--debug"]
    _register_commands()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _install_signal_handlers()
    try:
        app(args=args, prog_name="lmcore")  # standalone: click prints usage errors and exits 2
    except LmcoreError as exc:
        _report(exc, debug)
        if getattr(exc, "signum", None):
            err_console.print(f"resume with: {resume_command([a for a in args if a != '--debug'])}",
                              highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted(args, signal.SIGINT)
    except SystemExit as exc:
        code = int(exc.code or 0)
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # typer turns Ctrl-C into Exit(130)
            return _interrupted(args, code - 128)
        return code
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback in the log file
        _report(exc, debug)
        return 1
    except BaseException as exc:  # Prefect's TerminationSignal (SIGTERM during a flow) carries .signal
        signum = getattr(exc, "signal", None)
        if signum is None:
            raise
        return _interrupted(args, int(signum))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def entry() -> None:
    """The console script: :func:`main`, then a quiet exit. Prefect drains its logs to the API while
    the interpreter shuts down; a Ctrl-C there ends the process at once instead of printing a
    traceback from an exit hook (the command's work is done)."""
    code = main()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: os._exit(code))
    sys.exit(code)


if __name__ == "__main__":
    entry()
