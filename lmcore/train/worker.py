"""The process torchrun starts for each rank: ``python -m lmcore.train.worker SPEC.json``.

It reads the run's inputs from the spec :mod:`lmcore.train.launch` wrote, runs the train
stage in this rank, and (local rank 0 of the pipeline's node) prints every callback event for the
parent to relay.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lmcore.base_model import BaseModel
from lmcore.config import ModelConfig, PipelineConfig
from lmcore.train.distributed import destroy_process_group
from lmcore.train.launch import EventPrinter
from lmcore.train.stage import run_train


def main(argv: list[str]) -> int:
    """Child entry (under torchrun)."""
    spec = json.loads(Path(argv[0]).read_text())
    cfg = PipelineConfig.model_validate(spec["cfg"])
    model_cfg = ModelConfig.model_validate(spec["model_cfg"])
    # local rank 0 of the node whose parent listens (the pipeline's node) relays the events
    relay = spec.get("relay_events", True) and int(os.environ.get("LOCAL_RANK", "0")) == 0
    try:
        run_train(cfg, model_cfg, [Path(d) for d in spec["token_dirs"]],
                  Path(spec["tokenizer_dir"]) if spec["tokenizer_dir"] else None, Path(spec["out_dir"]),
                  [EventPrinter()] if relay else [],
                  resume_from=Path(spec["resume_from"]) if spec["resume_from"] else None,
                  base=BaseModel(**spec["base"]) if spec.get("base") else None)
    finally:
        destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
