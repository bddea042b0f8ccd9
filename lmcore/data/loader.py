"""Packed training batches from memory-mapped token shards.

All documents of a split, over every token dir, with shards in name order, form
one virtual token stream.  It is cut into windows of ``seq_length + 1`` tokens that
start every ``seq_length`` tokens (neighbouring windows share their boundary
token, so every token is a target exactly once).  A batch is ``batch_size``
windows; input = window[:-1], targets = window[1:].

Choices, and why:

- Order: the window order is a permutation drawn from
  ``numpy.random.default_rng([seed, epoch])``, so it depends on nothing but
  (seed, epoch); the state to resume is just ``(epoch, position)``.
- Distributed: global batch ``g`` goes to rank ``g % world_size``, so ranks see
  disjoint windows.  With ``drop_last`` every rank gets ``batches // world_size``
  batches; in eval mode (``drop_last=False``) ranks get ``ceil(batches / world_size)``
  and a rank past the end gets an all-padding batch, so collectives stay in step.
- Padding: every batch is ``[batch_size, seq_length]`` (a fixed shape suits
  ``torch.compile``).  Padded positions have input ``pad_id``, target -100 and
  doc id -1; only the last window/batch of an eval pass is ever padded.
- Loss mask: ``targets[t] = -100`` where the loss mask of the target token is 0
  (non-assistant chat tokens).
- Document ids: ``doc_ids[b, t]`` numbers the documents inside the window from 0,
  so the model can mask attention block-diagonally.  A target that crosses into
  the next document (the last token of a document predicting the first of the
  next, normally ``<|eos|>`` -> ``<|bos|>``) is kept: it is cheap and harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from lmcore.data.token_shards import TokenShard, list_shards, open_shard
from lmcore.errors import StoreError

IGNORE_INDEX = -100


@dataclass
class Batch:
    input_ids: torch.Tensor     # [B, T] int64
    targets: torch.Tensor       # [B, T] int64, -100 = no loss
    doc_ids: torch.Tensor       # [B, T] int32, document index within the window, -1 = padding
    num_target_tokens: int      # targets that are not -100

    def to(self, device: Any, non_blocking: bool = False) -> "Batch":
        return Batch(self.input_ids.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking),
                     self.doc_ids.to(device, non_blocking=non_blocking), self.num_target_tokens)

    def repacked(self, seq_length: int) -> "Batch":
        """The same tokens as rows of ``seq_length`` (progressive training): ``[B, T]`` is read row after
        row and cut into ``B * T // seq_length`` rows; the last ``B * T % seq_length`` tokens are left out.

        Windows are not contiguous in the token stream, so document ids are made distinct per window
        before the cut: a new row that spans two windows never lets one attend to the other.
        """
        B, T = self.input_ids.shape
        if seq_length >= T:
            return self
        rows = B * T // seq_length
        keep = rows * seq_length
        windows = torch.arange(B, dtype=torch.int64)[:, None] * (T + 1)
        docs = torch.where(self.doc_ids >= 0, self.doc_ids.to(torch.int64) + windows, -1)
        targets = self.targets.reshape(-1)[:keep].view(rows, seq_length)
        return Batch(self.input_ids.reshape(-1)[:keep].view(rows, seq_length).contiguous(), targets.contiguous(),
                     docs.reshape(-1)[:keep].view(rows, seq_length).to(torch.int32).contiguous(),
                     int((targets != IGNORE_INDEX).sum()))


def attention_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor | None:
    """``doc_ids``, or None when every row lies inside one document.

    Document ids are contiguous runs, so a row whose first and last id agree holds one
    document; then plain causal attention is exact and takes the fast kernels (a mask
    pushes SDPA off its flash path). Check the CPU tensor, before any transfer.
    """
    if doc_ids.numel() == 0 or bool((doc_ids[:, 0] == doc_ids[:, -1]).all()):
        return None
    return doc_ids


class PackedLoader:
    """Iterate packed batches of one split; ``state_dict()``/``load_state_dict()`` resume exactly."""

    def __init__(self, token_dirs: Sequence[str | Path] | str | Path, split: str, seq_length: int, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 pad_id: int = 0):
        if isinstance(token_dirs, (str, Path)):
            token_dirs = [token_dirs]
        if seq_length < 1 or batch_size < 1:
            raise ValueError("seq_length and batch_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.split, self.seq_length, self.batch_size = split, seq_length, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.drop_last, self.pad_id = shuffle, drop_last, pad_id
        # One stream in shard-name order whatever the order of the dirs (the pretokenize stage writes
        # one dir per shard); equal names keep the order of token_dirs.
        named = [(n, i, d) for i, d in enumerate(token_dirs) for n in list_shards(d, split)]
        self.shards: list[TokenShard] = [open_shard(d, n) for n, _, d in sorted(named, key=lambda x: x[:2])]
        if not self.shards:
            raise StoreError(f"no '{split}' token shards in {[str(d) for d in token_dirs]}")
        sizes = np.array([s.num_tokens for s in self.shards], dtype=np.int64)
        self._shard_starts = np.concatenate([[0], np.cumsum(sizes)])
        self._doc_starts = np.concatenate(
            [np.asarray(s.docs[:-1], dtype=np.int64) + off for s, off in zip(self.shards, self._shard_starts)])
        n = self.num_tokens
        span = max(n - 1, 0)
        self.num_windows = span // seq_length if drop_last else -(-span // seq_length)
        if self.num_windows == 0:
            raise StoreError(f"split '{split}' has {n} tokens: too few for one window of {seq_length + 1}")
        batches = self.num_windows // batch_size if drop_last else -(-self.num_windows // batch_size)
        self.num_batches = batches  # all ranks together
        self._per_rank = batches // world_size if drop_last else -(-batches // world_size)
        self.epoch = 0
        self.position = 0
        self._order_epoch: int | None = None
        self._order = np.empty(0, dtype=np.int64)

    # ------------------------------------------------------------------ sizes
    @property
    def num_tokens(self) -> int:
        return int(self._shard_starts[-1])

    @property
    def utf8_bytes(self) -> int:
        return sum(int(s.meta["utf8_bytes"]) for s in self.shards)

    @property
    def num_docs(self) -> int:
        return len(self._doc_starts)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return self._per_rank

    # ------------------------------------------------------------------ state
    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "world_size": self.world_size, "num_windows": self.num_windows}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("num_windows", self.num_windows) != self.num_windows:
            raise StoreError(f"loader state is for {state['num_windows']} windows, the data has {self.num_windows}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Batch]:
        """The rest of the current epoch; afterwards the loader stands at the start of the next one."""
        if self.position >= self._per_rank:
            self.set_epoch(self.epoch + 1)
        while self.position < self._per_rank:
            k = self.position
            self.position = k + 1
            yield self.batch(self.epoch, k)
        self.set_epoch(self.epoch + 1)

    def window_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
            else:
                self._order = np.arange(self.num_windows)
            self._order_epoch = epoch
        return self._order

    def batch(self, epoch: int, k: int) -> Batch:
        """This rank's ``k``-th batch of ``epoch``."""
        B, T = self.batch_size, self.seq_length
        g = k * self.world_size + self.rank
        windows = self.window_order(epoch)[g * B:(g + 1) * B]
        ids = np.full((B, T + 1), self.pad_id, dtype=np.int64)
        inputs = np.full((B, T), self.pad_id, dtype=np.int64)
        trained = np.zeros((B, T + 1), dtype=bool)
        doc_ids = np.full((B, T), -1, dtype=np.int32)
        for row, w in enumerate(windows):
            start = int(w) * T
            end = min(start + T + 1, self.num_tokens)
            n = end - start
            tok, mask = self._read(start, end)
            ids[row, :n] = tok
            inputs[row, :n - 1] = tok[:n - 1]
            trained[row, :n] = mask != 0
            first = np.searchsorted(self._doc_starts, start, side="right")
            doc_ids[row, :n - 1] = np.searchsorted(self._doc_starts, np.arange(start, end - 1), side="right") - first
        targets = np.where(trained[:, 1:], ids[:, 1:], IGNORE_INDEX)
        return Batch(torch.from_numpy(inputs), torch.from_numpy(targets),
                     torch.from_numpy(doc_ids), int(np.count_nonzero(trained[:, 1:])))

    def _read(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and loss mask of the virtual stream in [start, end), across shard boundaries."""
        i = int(np.searchsorted(self._shard_starts, start, side="right")) - 1
        ids, masks = [], []
        while start < end:
            shard, base = self.shards[i], int(self._shard_starts[i])
            stop = min(end, int(self._shard_starts[i + 1]))
            ids.append(shard.ids[start - base:stop - base])
            masks.append(shard.mask[start - base:stop - base])
            start = stop
            i += 1
        if len(ids) == 1:
            return ids[0], masks[0]
        return np.concatenate(ids), np.concatenate(masks)
