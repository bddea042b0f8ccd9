"""Screenshots of the MLflow UI for the README: a registered model and a run with its loss curve.

    .venv/bin/python scripts/screenshot_mlflow.py                 # runs the demo pipeline into a temp dir
    .venv/bin/python scripts/screenshot_mlflow.py --workdir /tmp/shot --skip-run   # reuse a finished run

What it does: (1) unless ``--skip-run``, runs ``lmcore run examples/demo.yaml``
twice (the second with another learning rate, so the registry shows a champion
and a challenger) with the store, models and MLflow folder under ``--workdir``;
(2) starts ``mlflow server --workers 1`` on a loopback port over that SQLite
store; (3) opens the registered model page, the run's overview and the run's
loss-curve artifact in headless Chromium and writes PNGs to ``docs/img/``;
(4) copies the run's ``plots/loss_curve.png`` to ``docs/img/loss_curve.png``.

Not part of the test suite: it needs Debian's ``chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.servers import BIN, free_port, start_mlflow_server, stop  # noqa: E402  (one copy of the server helpers)

MAX_PNG_BYTES = 300_000


def run_pipeline(workdir: Path, overrides: list[str]) -> None:
    env = {**os.environ, "LMCORE_STORE": str(workdir / "store"), "LMCORE_MODELS": str(workdir / "models"),
           "LMCORE_MLFLOW_DIR": str(workdir / "mlflow"), "PREFECT_HOME": str(workdir / "prefect")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "lmcore"), "run", str(ROOT / "examples" / "demo.yaml")]
    for item in overrides:
        cmd += ["--set", item]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, cwd=workdir, check=True)


def start_mlflow(workdir: Path, port: int) -> subprocess.Popen:
    """The UI over what ``lmcore run`` logged locally (SQLite + the local artifact folder)."""
    mlflow_dir = workdir / "mlflow"
    return start_mlflow_server(port, mlflow_dir / "mlflow.db", workdir / "mlflow-server.log",
                               ["--default-artifact-root", (mlflow_dir / "mlartifacts").resolve().as_uri()])


def screenshot(url: str, out: Path, profile: Path, size: str = "1600,1000", budget_ms: int = 25000) -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not found: apt-get install chromium")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={out}", f"--window-size={size}",
           f"--virtual-time-budget={budget_ms}", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    shrink(out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB) from {url}", flush=True)
    return out


def shrink(png: Path) -> None:
    """Quantise to a 256-colour palette if the screenshot is over the README's size budget."""
    if png.stat().st_size <= MAX_PNG_BYTES:
        return
    from PIL import Image

    Image.open(png).convert("RGB").quantize(colors=256).save(png, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the demo store and MLflow live")
    parser.add_argument("--skip-run", action="store_true", help="reuse the runs already in --workdir")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNGs")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra key=value overrides for the demo run (e.g. training.max_steps=60)")
    args = parser.parse_args(argv)

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="lmcore-shot-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_run:
        run_pipeline(workdir, args.overrides)
        run_pipeline(workdir, args.overrides + ["training.learning_rate=1e-3"])

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["LMCORE_MLFLOW_DIR"] = str(workdir / "mlflow")
    from mlflow import MlflowClient

    from lmcore.config import PipelineConfig
    from lmcore.tracking.registry import list_registry_versions

    cfg = PipelineConfig.from_yaml(ROOT / "examples" / "demo.yaml")
    versions = list_registry_versions(cfg)
    if not versions:
        raise SystemExit(f"no registered versions of {cfg.tracking.registered_model_name} in {cfg.tracking_uri()}")
    champion = next((v for v in versions if "champion" in v["aliases"]), versions[-1])
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    run = client.get_run(champion["run_id"])
    exp_id = run.info.experiment_id
    local_png = client.download_artifacts(run.info.run_id, "plots/loss_curve.png", str(workdir / "dl"))
    shutil.copy(local_png, args.out / "loss_curve.png")
    print(f"wrote {args.out / 'loss_curve.png'}")

    port = free_port()
    server = start_mlflow(workdir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        profile = workdir / "chromium-profile"
        screenshot(f"{base}/#/models/{cfg.tracking.registered_model_name}", args.out / "mlflow-registered-model.png",
                   profile)
        screenshot(f"{base}/#/experiments/{exp_id}/runs/{run.info.run_id}", args.out / "mlflow-run.png", profile)
        screenshot(f"{base}/#/experiments/{exp_id}/runs/{run.info.run_id}/model-metrics",
                   args.out / "mlflow-run-metrics.png", profile)
    finally:
        stop(server)


if __name__ == "__main__":
    main()
