"""``lmcore train-node CONFIG``: one more machine for a multi-node training run.

Node 0 runs the pipeline as usual (``lmcore run CONFIG`` with ``training.nnodes`` > 1 and
``training.rdzv_endpoint``); its train stage writes a ticket into the shared store and starts
torchrun's c10d rendezvous. Every other node runs this command with the same config: it waits
for that ticket (the train stage's inputs are ready when it appears), then joins the rendezvous
with ``training.nproc_per_node`` local ranks and returns when training ends. No Prefect here: the
flow runs on node 0 only, which also alone logs to MLflow and registers the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train-node")
    def train_node(
        config: Path = typer.Argument(..., help="The pipeline config node 0 runs (same training section)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.path=value."),
        node_rank: Optional[int] = typer.Option(None, "--node-rank", min=1, help="This machine's number (1.."
                                                "nnodes-1), for the log; torchrun's rendezvous assigns the ranks."),
        wait: float = typer.Option(3600.0, "--wait", min=0, help="Seconds to wait for node 0's train stage."),
    ) -> None:
        """Join a multi-node training run that node 0's pipeline starts (training.nnodes > 1)."""
        from rich.console import Console

        from flows.commands.run import load_config
        from lmcore.errors import UsageError
        from lmcore.train.launch import join_training

        cfg = load_config(config, set_)
        if node_rank is not None and node_rank >= cfg.training.nnodes:
            raise UsageError(f"--node-rank {node_rank} but training.nnodes is {cfg.training.nnodes}: "
                             f"nodes are numbered 1..{cfg.training.nnodes - 1} here (node 0 runs the pipeline)")
        console = Console(stderr=False, highlight=False, soft_wrap=True)
        name = f"node {node_rank}" if node_rank is not None else "this node"
        join_training(cfg, wait_s=wait, on_line=lambda line: console.print(line, markup=False),
                      on_wait=lambda where: console.print(
                          f"{name}: waiting for node 0's train stage in {where} (rendezvous "
                          f"{cfg.training.rdzv_endpoint}, {cfg.training.nnodes} nodes) ..."))
        console.print(f"{name}: training finished")
