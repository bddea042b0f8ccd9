"""Small real pieces for trainer tests (imported by conftest.py and the tests): a tiny language model and an in-memory loader.

They let the engine, checkpoint and loop tests run in milliseconds without the data
stages; ``test_trainer.py`` runs the real ``Transformer`` and ``PackedLoader`` end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmcore.config import ModelConfig, PipelineConfig


@dataclass
class Batch:
    input_ids: torch.Tensor
    targets: torch.Tensor
    doc_ids: torch.Tensor
    num_target_tokens: int


def make_batch(ids: torch.Tensor, targets: torch.Tensor) -> Batch:
    return Batch(ids, targets, torch.zeros_like(ids, dtype=torch.int32), int((targets != -100).sum()))


class TinyLM(nn.Module):
    """Embedding -> causal mean of the prefix -> MLP -> tied head. Enough to learn bigrams."""

    def __init__(self, vocab: int = 64, hidden: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, input_ids, doc_ids=None):
        x = self.embed(input_ids)
        counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]
        x = x + torch.cumsum(x, dim=1) / counts
        x = x + self.mlp(self.norm(x))
        return x @ self.embed.weight.T


class ListLoader:
    """A resumable loader over a fixed list of batches (same protocol as PackedLoader)."""

    def __init__(self, batches: list[Batch]):
        self.batches = batches
        self.epoch = 0
        self.pos = 0

    def __len__(self):
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.pos = epoch, 0

    def __iter__(self):
        while self.pos < len(self.batches):
            self.pos += 1
            yield self.batches[self.pos - 1]

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state):
        self.epoch, self.pos = state["epoch"], state["pos"]


def random_batches(n: int, batch: int = 2, seq: int = 16, vocab: int = 64, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        out.append(make_batch(ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))
    return out


