"""torchrun worker for test_distributed.py: ``distributed_worker.py fail OUT``: rank 1 raises.

It fails before any process group exists so that the error-reporting test costs only
torchrun's start-up.
"""

import os
import sys

if __name__ == "__main__":
    if sys.argv[1] == "fail" and os.environ["RANK"] == "1":
        raise RuntimeError("rank 1 refuses to train")
