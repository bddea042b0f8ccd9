"""The fixed Parquet schema of text shards, shared by the shard and pretokenize stages."""

from __future__ import annotations

import hashlib

import pyarrow as pa

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
