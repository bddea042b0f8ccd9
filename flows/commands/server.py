"""``lmcore server start|stop|status``: one Prefect server in the background for every later command.

Why: without a server each ``lmcore`` command starts a temporary Prefect API, which is most of a
cached rerun's time. ``lmcore server start`` runs Prefect's own server (API and UI) under the
same ``PREFECT_HOME`` and records its URL in ``$PREFECT_HOME/lmcore-server.json``; every command
run with that ``PREFECT_HOME`` then uses it, and falls back to a temporary one when it is down.
"""

from __future__ import annotations

import json
import time
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    server_app = typer.Typer(help="Keep a Prefect server running in the background (faster commands, the UI).",
                             no_args_is_help=True)
    app.add_typer(server_app, name="server")

    @server_app.command("start")
    def start(port: Optional[int] = typer.Option(None, "--port", help="Port (default: a free one)."),
              ) -> None:
        """Start Prefect's server (API + UI) in the background under this PREFECT_HOME."""
        from flows import prefect_api as api

        home = api.prefect_home()
        running = api.recorded_server(home)
        if running:
            typer.echo(f"already running: {running['url']} (pid {running['pid']})")
            return
        port = port or api.free_port()
        url = f"http://127.0.0.1:{port}/api"
        typer.echo(f"starting the Prefect server on port {port} (PREFECT_HOME={home}) ...")
        proc = api.launch(home, port, temporary=False, exit_with=None)
        api.wait_healthy(url, proc, home)
        (home / api.SERVER_FILE).write_text(json.dumps({"url": url, "pid": proc.pid, "port": port,
                                                        "started": time.time()}), encoding="utf-8")
        typer.echo(f"running: {url} (pid {proc.pid}); UI at http://127.0.0.1:{port}\n"
                   f"lmcore commands with PREFECT_HOME={home} use it; stop it with `lmcore server stop`")

    @server_app.command("stop")
    def stop() -> None:
        """Stop the server `lmcore server start` started."""
        from flows import prefect_api as api

        home = api.prefect_home()
        path = home / api.SERVER_FILE
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            typer.echo("no lmcore server is recorded under this PREFECT_HOME")
            return
        if api.healthy(info.get("url", "")):
            api.stop_process(int(info["pid"]))
        path.unlink(missing_ok=True)
        typer.echo(f"stopped {info.get('url')}")

    @server_app.command("status")
    def status() -> None:
        """Say whether a server is up and which API the next command would use."""
        from flows import prefect_api as api

        home = api.prefect_home()
        running = api.recorded_server(home)
        if running:
            typer.echo(f"running: {running['url']} (pid {running['pid']}, PREFECT_HOME={home})")
        else:
            typer.echo(f"not running (PREFECT_HOME={home}); commands start a temporary Prefect API")
