"""Token shards on disk: write them as a stream, read them as memory maps.

One shard ``<name>`` (the Parquet shard's stem, e.g. ``train-00000``) is four files:

- ``<name>.ids.npy``  token ids, uint16 when the vocabulary fits (<= 65535), else uint32
- ``<name>.docs.npy`` int64 document start offsets into ids, length docs + 1 (last = tokens)
- ``<name>.mask.npy`` uint8 loss mask, 1 = train on this token (zeros only in chat documents)
- ``<name>.json``     docs, tokens, trained_tokens, utf8_bytes, dtype, split, vocab_size

Why plain ``.npy``: ``np.load(path, mmap_mode="r")`` maps them with no copy and any
tool can read them.  Why streaming: a shard can hold far more tokens than fit in
memory, so :class:`TokenShardWriter` appends raw arrays to files opened with a
``.npy`` header for length 0 and rewrites the header in place once the final
length is known (numpy pads headers so the shape can grow without moving data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lmcore.errors import StoreError

SUFFIXES = (".ids.npy", ".docs.npy", ".mask.npy", ".json")


def ids_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


class _NpyAppender:
    """A 1-D ``.npy`` file grown by appending arrays; :meth:`close` writes the final length."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.length = 0
        self.file: BinaryIO = open(path, "wb")
        self.header_len = self._write_header()

    def _write_header(self) -> int:
        self.file.seek(0)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.length,)}
        np.lib.format.write_array_header_1_0(self.file, header)
        return self.file.tell()

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        self.file.write(array.data)
        self.length += array.size

    def close(self) -> None:
        end = self.file.tell()
        if self._write_header() != self.header_len:  # cannot happen with numpy's growth padding
            raise StoreError(f"{self.path}: .npy header changed size")
        self.file.seek(end)
        self.file.close()


class TokenShardWriter:
    """Streams documents into one token shard; memory is bounded by the largest appended batch."""

    def __init__(self, out_dir: str | Path, name: str, vocab_size: int, split: str):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.name, self.vocab_size, self.split = name, vocab_size, split
        self.dtype = ids_dtype(vocab_size)
        self.ids = _NpyAppender(self.out_dir / f"{name}.ids.npy", self.dtype)
        self.mask = _NpyAppender(self.out_dir / f"{name}.mask.npy", np.uint8)
        self.docs = _NpyAppender(self.out_dir / f"{name}.docs.npy", np.int64)
        self.docs.append(np.zeros(1, dtype=np.int64))
        self.num_docs = 0
        self.trained_tokens = 0
        self.utf8_bytes = 0

    def append(self, ids: np.ndarray, mask: np.ndarray, doc_lengths: np.ndarray, utf8_bytes: int) -> None:
        """Append documents laid end to end in ``ids``/``mask``, with their token counts."""
        if len(ids) != len(mask) or int(np.sum(doc_lengths)) != len(ids):
            raise StoreError(f"{self.name}: ids, mask and document lengths disagree")
        if len(ids) and int(ids.max()) >= self.vocab_size:
            raise StoreError(f"{self.name}: token id {int(ids.max())} outside the vocabulary ({self.vocab_size})")
        starts = self.ids.length + np.cumsum(doc_lengths, dtype=np.int64)
        self.ids.append(ids)
        self.mask.append(mask)
        self.docs.append(starts)
        self.num_docs += len(doc_lengths)
        self.trained_tokens += int(np.count_nonzero(mask))
        self.utf8_bytes += utf8_bytes

    def close(self) -> dict[str, Any]:
        for f in (self.ids, self.mask, self.docs):
            f.close()
        meta = {"name": self.name, "split": self.split, "docs": self.num_docs, "tokens": self.ids.length,
                "trained_tokens": self.trained_tokens, "utf8_bytes": self.utf8_bytes, "dtype": self.dtype.name,
                "vocab_size": self.vocab_size}
        (self.out_dir / f"{self.name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return meta


@dataclass
class TokenShard:
    """One shard opened read-only: memory-mapped arrays plus its metadata."""

    name: str
    ids: np.ndarray
    docs: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any]

    @property
    def split(self) -> str:
        return self.meta["split"]

    @property
    def num_tokens(self) -> int:
        return int(self.meta["tokens"])


def open_shard(directory: str | Path, name: str) -> TokenShard:
    """Map ``<directory>/<name>.*``; checks the files agree with the metadata."""
    directory = Path(directory)
    meta_path = directory / f"{name}.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ids = np.load(directory / f"{name}.ids.npy", mmap_mode="r")
        docs = np.load(directory / f"{name}.docs.npy", mmap_mode="r")
        mask = np.load(directory / f"{name}.mask.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise StoreError(f"{directory / name}: unreadable token shard ({exc})") from None
    if len(ids) != meta["tokens"] or len(mask) != len(ids) or len(docs) != meta["docs"] + 1:
        raise StoreError(f"{directory / name}: token shard files disagree with {meta_path.name}")
    return TokenShard(name, ids, docs, mask, meta)


def list_shards(directory: str | Path, split: str | None = None) -> list[str]:
    """Names of the complete shards in ``directory`` (optionally of one split), sorted."""
    names = []
    for meta_path in sorted(Path(directory).glob("*.json")):
        name = meta_path.name[: -len(".json")]
        if name == "manifest" or not all((meta_path.parent / f"{name}{s}").is_file() for s in SUFFIXES):
            continue
        if split is not None and json.loads(meta_path.read_text(encoding="utf-8")).get("split") != split:
            continue
        names.append(name)
    return names
