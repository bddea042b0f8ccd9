"""The Prefect API server process lmcore starts: ``python -m flows.api_server --port P [--exit-with PID]``.

Why lmcore starts it rather than letting Prefect start its temporary server:

* Prefect starts that server as a child in the same process group, so the terminal's Ctrl-C
  kills it together with the run, and the run then hangs reporting to a dead server. lmcore
  starts this process in its own session, so the run can stop cleanly and report.
* With ``--exit-with PID`` the server exits as soon as that process is gone, ``kill -9``
  included: a temporary server never outlives the command that needed it.
* ``--temporary`` serves the API alone (no UI, no background services: what Prefect's
  temporary server does); without it, this is a full server with the UI (``lmcore server start``).

Both use Prefect's own application factory (``prefect.server.api.server.create_app``) and the
database under ``PREFECT_HOME``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time


def _exit_with(pid: int) -> None:
    """Exit this process when ``pid`` no longer exists (checked twice a second)."""

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch, name="lmcore-exit-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.api_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--temporary", action="store_true", help="API only, no UI or background services")
    parser.add_argument("--exit-with", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args(argv)
    if args.exit_with:
        _exit_with(args.exit_with)
    if args.temporary:
        os.environ["PREFECT_UI_ENABLED"] = "false"
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app(ephemeral=args.temporary, final=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="error", lifespan="on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
