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
        return {"epoch": self.epoch, "position": self.pos}

    def load_state_dict(self, state):
        self.epoch, self.pos = state["epoch"], state["position"]


def random_batches(n: int, batch: int = 2, seq: int = 16, vocab: int = 64, seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        out.append(make_batch(ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))
    return out




# --------------------------------------------------------------------------- a real tokenised corpus

WORDS = ("the king queen speaks loud soft night day sword crown love hate my lord lady good ill fair "
         "now then here there comes goes falls rises our your his her thy thee thou art hath doth").split()


def synthetic_texts(n_docs: int, seed: int, words_per_doc: int = 60) -> list[str]:
    """Pseudo-verse with strong regularities (a speaker line, then short sentences), so a tiny model learns."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        speaker = rng.choice(["ROMEO", "JULIET", "KING", "QUEEN"])
        lines = [f"{speaker}:"]
        for _ in range(words_per_doc // 6):
            lines.append(" ".join(rng.choice(WORDS) for _ in range(5)).capitalize() + ".")
        docs.append("\n".join(lines))
    return docs


def build_token_dir(root, train_texts, eval_texts, vocab_size: int = 300):
    """Run the real shard, tokenizer and pretokenize stages; return ``(token_dir, tokenizer_dir, cfg)``."""
    import json
    from pathlib import Path

    from lmcore.data.pretokenize import run_pretokenize_shard
    from lmcore.data.shard import run_shard
    from lmcore.data.tokenizer import run_train_tokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, texts in (("train", train_texts), ("eval", eval_texts)):
        paths[split] = root / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = PipelineConfig.from_dict({"data": {"training_data_path": [str(paths["train"])],
                                             "eval_data_path": [str(paths["eval"])] if eval_texts else [],
                                             "eval_split": 0.0},
                                    "tokenizer": {"vocab_size": vocab_size, "min_frequency": 1}})
    run_shard(None, cfg.data, root / "shards")
    run_train_tokenizer(root / "shards", cfg.tokenizer, cfg.data, vocab_size, root / "tokenizer")
    for shard in sorted((root / "shards").glob("*.parquet")):
        run_pretokenize_shard(shard, root / "tokenizer", cfg, root / "tokens")
    return root / "tokens", root / "tokenizer", cfg


# The run of the kill-and-resume test (train_worker.py runs it in a subprocess).
RESUME_MODEL = ModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, seq_length=32)
RESUME_CONFIG = {"training": {"batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": 18,
                              "learning_rate": 3e-3, "warmup_steps": 3, "log_every": 1, "eval_every": 6,
                              "eval_batches": 2, "checkpoint_every": 3, "keep_last_checkpoints": 2, "seed": 7},
                 "precision": {"dtype": "fp32"}}
