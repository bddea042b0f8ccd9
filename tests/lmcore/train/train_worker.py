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

from lmcore.config import ModelConfig, PipelineConfig  # noqa: E402
from lmcore.train.trainer import run_train  # noqa: E402

MODEL = ModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, seq_length=32)
CONFIG = {"training": {"batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": 18, "learning_rate": 3e-3,
                       "warmup_steps": 3, "log_every": 1, "eval_every": 6, "eval_batches": 2,
                       "checkpoint_every": 3, "keep_last_checkpoints": 2, "seed": 7},
          "precision": {"dtype": "fp32"}}


class SlowSteps:
    def on_log(self, step, metrics):
        time.sleep(0.04)


if __name__ == "__main__":
    token_dir, out_dir = sys.argv[1], sys.argv[2]
    summary = run_train(PipelineConfig.from_dict(CONFIG), MODEL, [token_dir], None, out_dir, [SlowSteps()])
    print(json.dumps(summary))
