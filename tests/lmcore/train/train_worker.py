"""Subprocess entry for the kill-and-resume test: ``python train_worker.py TOKEN_DIR OUT_DIR``.

Runs ``run_train`` on one thread with deterministic kernels; each logged step sleeps a
little so the parent can SIGKILL it mid-run.  Prints the summary as JSON on the last line.
"""

import json
import sys
import time

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

from lmcore.config import PipelineConfig  # noqa: E402
from lmcore.train.stage import run_train  # noqa: E402
from train_fixtures import RESUME_CONFIG, RESUME_MODEL  # noqa: E402


class SlowSteps:
    def on_log(self, step, metrics):
        time.sleep(0.04)


if __name__ == "__main__":
    token_dir, out_dir = sys.argv[1], sys.argv[2]
    summary = run_train(PipelineConfig.from_dict(RESUME_CONFIG), RESUME_MODEL, [token_dir], None, out_dir, [SlowSteps()])
    print(json.dumps(summary))
