"""``lmcore version``: print the installed version."""

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def version() -> None:
        """Print lmcore's version."""
        import lmcore

        typer.echo(lmcore.__version__)
