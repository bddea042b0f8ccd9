"""``lmcore`` with test-only fault injection: the subprocess the durability tests start and kill.

Usage: ``python tests/flows/lmcore_under_test.py run CONFIG ...`` (the same arguments as ``lmcore``).
Environment knobs, all optional:

* ``LMCORE_TEST_STEP_SLEEP=0.02``: every optimizer update also sleeps this long, so a test can
  send a signal in the middle of training rather than after it.
* ``LMCORE_TEST_KILL_AT``: the process SIGKILLs itself at a named moment, which a kill from
  outside could only hit by luck:

  - ``checkpoint:N``: inside the N-th checkpoint write, after its files are written and before
    the directory is renamed into place;
  - ``model-copy``: after copying the trained model into ``models/.tmp-*``, before it is renamed;
  - ``register-alias``: after MLflow created the model version, before it got its alias.

Nothing here is imported by lmcore itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _patch() -> None:
    sleep = float(os.environ.get("LMCORE_TEST_STEP_SLEEP", "0") or 0)
    kill_at = os.environ.get("LMCORE_TEST_KILL_AT", "")
    if sleep:
        from lmcore.train import trainer

        step = trainer.Trainer.train_step

        def slow_step(self, *args, **kwargs):
            time.sleep(sleep)
            return step(self, *args, **kwargs)

        trainer.Trainer.train_step = slow_step
    if kill_at.startswith("checkpoint:"):
        from lmcore.train import checkpoint

        nth, seen = int(kill_at.split(":")[1]), []
        fsync = checkpoint._fsync_dir

        def fsync_then_die(path):
            fsync(path)
            seen.append(path)
            if len(seen) == nth:
                _die()

        checkpoint._fsync_dir = fsync_then_die
    elif kill_at == "model-copy":
        from lmcore import models_dir

        publish = models_dir.ModelManager._publish

        def publish_then_die(self, write, metadata, model_id):
            def copy_then_die(tmp):
                write(tmp)
                _die()  # files copied into models/.tmp-*, never renamed into place

            return publish(self, copy_then_die, metadata, model_id)

        models_dir.ModelManager._publish = publish_then_die
    elif kill_at == "register-alias":
        import mlflow

        mlflow.MlflowClient.set_registered_model_alias = lambda *a, **k: _die()


if __name__ == "__main__":
    _patch()
    from flows.cli import entry

    sys.argv[0] = "lmcore"
    entry()
