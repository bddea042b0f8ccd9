"""The fixed Parquet schema of text shards, shared by the shard and pretokenize stages."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from lmcore.errors import StoreError

RECORD_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),      # "text" | "chat"
    pa.field("text", pa.string()),                       # set when kind == "text"
    pa.field("messages", pa.string()),                   # JSON [{"role","content"}] when kind == "chat"
    pa.field("source", pa.string(), nullable=False),     # input file as given
    pa.field("line", pa.int64(), nullable=False),        # 1-based line number in source
])


def stable_fraction(record_id: str) -> float:
    """A number in [0, 1) fixed by the record id alone: adding data never moves a record between splits."""
    digest = hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@contextlib.contextmanager
def reading_shard(path: str | Path, stage: str) -> Iterator[None]:
    """pyarrow's errors reading a Parquet text shard (``ZSTD decompression failed``, a truncated footer)
    as one :class:`StoreError` that names the file, the stage and what to do."""
    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise StoreError(f"{path}: the {stage} stage cannot read this Parquet shard ({first}); the stored shard is "
                         "damaged: `lmcore store verify CONFIG` lists damaged entries and `lmcore run CONFIG "
                         "--verify` rebuilds them") from None
