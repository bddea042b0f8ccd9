"""The loss curve as a PNG: training loss per step, validation loss per eval.

Why a picture as well as MLflow's own charts: it travels with the run as a
plain artifact (README, reports, a run copied to another server) and shows
train and validation loss on one set of axes with the learning rate beside
them, which is the first thing a person checks. A bare ``Figure`` renders
with the Agg canvas and never touches pyplot's global state or a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

Points = Sequence[tuple[int, float]]


def plot_loss_curve(train: Points, out_path: str | Path, val: Points = (), lr: Points = (),
                    title: str = "lmcore training loss") -> Path:
    """Write a PNG of (step, loss) series to ``out_path`` and return the path.

    ``val`` is drawn as markers over the training curve; ``lr`` (if given) on a
    second y axis. Empty series are skipped; with no points at all the figure
    says so instead of failing.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7.0, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if train:
        steps, values = zip(*train)
        ax.plot(steps, values, color="#1f77b4", linewidth=1.4, label="train loss")
    if val:
        steps, values = zip(*val)
        ax.plot(steps, values, color="#d62728", marker="o", linewidth=1.0, label="validation loss")
    if not train and not val:
        ax.text(0.5, 0.5, "no loss values were logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if lr:
        ax2 = ax.twinx()
        steps, values = zip(*lr)
        ax2.plot(steps, values, color="#7f7f7f", linestyle="--", linewidth=1.0, label="learning rate")
        ax2.set_ylabel("learning rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right")
    fig.tight_layout()
    fig.savefig(out_path, format="png")
    return out_path
