"""Stage ``pretokenize``: one Parquet text shard -> one token shard (ids, document offsets, loss mask).

One call per shard, so a Prefect task maps over shards and a task runner spreads
them over processes or machines.  Memory stays bounded: the Parquet file is read
in record batches, each batch is encoded with ``encode_batch_fast`` (no offsets
computed) and appended to the output files (:class:`TokenShardWriter`).

Speed: text documents never go through a Python loop per token.  The ids of a
batch are gathered with one ``np.fromiter`` over the chained id lists, and
``<|bos|>``/``<|eos|>`` are placed with vectorised index arithmetic.

Chat documents: the conversation is rendered once with the chat template and
encoded *whole*, with offsets; a token is trained when its first character lies
in a trained segment of :func:`lmcore.data.chat_template.chat_segments` (assistant content and
its ``<|end|>``).  Encoding the whole string, rather than each segment, keeps the
ids identical to ``tokenizer.encode(apply_chat_template(messages))`` even where
BPE merges across a segment boundary (``"\\n"`` + content starting with spaces
becomes one token ``"\\n "``; that token counts as untrained).
``<|bos|>`` is added only when the template has not rendered one; the added
``<|eos|>`` of a chat document is not trained.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmcore.data import chat_template as chat
from lmcore.config import PipelineConfig
from lmcore.data.schema import reading_shard
from lmcore.data.token_shards import TokenShardWriter
from lmcore.errors import DataFormatError
from lmcore.data.tokenizer import LmcoreTokenizer

STAGE_VERSION = "1"
BATCH_ROWS = 1024
#: Text per encode call.  Encodings cost ~35x their text in memory, so this bounds the peak (~50 MB).
BATCH_BYTES = 1 << 20
_COLUMNS = ["kind", "text", "messages", "source", "line"]


def shard_name(shard_file: str | Path) -> tuple[str, str]:
    """``.../train-00003.parquet`` -> (``train-00003``, ``train``)."""
    name = Path(shard_file).name.removesuffix(".parquet")
    return name, name.split("-", 1)[0]


def encode_text_docs(tok: LmcoreTokenizer, texts: list[str], add_bos: bool, add_eos: bool,
                     dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Encode plain-text documents; returns (ids laid end to end, tokens per document)."""
    encodings = tok.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    flat = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=dtype,
                       count=int(lengths.sum()))
    extra = int(add_bos) + int(add_eos)
    if not extra:
        return flat, lengths
    lengths = lengths + extra
    ends = np.cumsum(lengths)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=dtype)
    body = np.ones(len(out), dtype=bool)
    if add_bos:
        starts = ends - lengths
        out[starts] = tok.bos_id
        body[starts] = False
    if add_eos:
        out[ends - 1] = tok.eos_id
        body[ends - 1] = False
    out[body] = flat
    return out, lengths


def encode_chat_doc(tok: LmcoreTokenizer, messages: list[dict], add_bos: bool, add_eos: bool,
                    dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, str]:
    """Encode one conversation; returns (ids, loss mask, rendered text)."""
    segments = tok.chat_segments(messages)
    text = "".join(s for s, _ in segments)
    trained_chars = np.zeros(len(text) + 1, dtype=np.uint8)
    pos = 0
    for piece, trained in segments:
        if trained:
            trained_chars[pos:pos + len(piece)] = 1
        pos += len(piece)
    enc = tok.tokenizer.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=dtype)
    starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(enc.offsets))
    mask = trained_chars[starts]
    if add_bos and (not len(ids) or ids[0] != tok.bos_id):
        ids = np.concatenate([np.array([tok.bos_id], dtype=dtype), ids])
        mask = np.concatenate([np.zeros(1, np.uint8), mask])
    if add_eos:
        ids = np.concatenate([ids, np.array([tok.eos_id], dtype=dtype)])
        mask = np.concatenate([mask, np.zeros(1, np.uint8)])
    return ids, mask, text


def _append_chat_rows(writer: TokenShardWriter, tok: LmcoreTokenizer, rows: dict[str, list], add_bos: bool,
                      add_eos: bool) -> None:
    ids_parts, mask_parts, lengths, nbytes = [], [], [], 0
    for messages, source, line in zip(rows["messages"], rows["source"], rows["line"]):
        try:
            parsed = chat.check_messages(json.loads(messages or "null"), source, line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"messages is not JSON: {exc}", path=source, line=line) from None
        ids, mask, text = encode_chat_doc(tok, parsed, add_bos, add_eos, writer.dtype)
        ids_parts.append(ids)
        mask_parts.append(mask)
        lengths.append(len(ids))
        nbytes += len(text.encode("utf-8"))
    writer.append(np.concatenate(ids_parts), np.concatenate(mask_parts), np.asarray(lengths, np.int64), nbytes)


def utf8_lengths(column: pa.Array) -> np.ndarray:
    """UTF-8 byte length of each string of ``column`` (0 for null), read from the Arrow buffers.

    Why buffers: pyarrow's ``to_numpy``, scalar conversion and ``fill_null(..., "")`` import pandas
    on first use (+0.5 s and +50 MB in every worker process).
    """
    n = len(column)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    validity, offsets = column.buffers()[:2]
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    ends = np.frombuffer(offsets, dtype=width)[column.offset:column.offset + n + 1]
    lengths = np.diff(ends).astype(np.int64)
    if column.null_count:
        bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
        lengths[bits[column.offset:column.offset + n] == 0] = 0
    return lengths


def _append_text_rows(writer: TokenShardWriter, tok: LmcoreTokenizer, texts: pa.Array, add_bos: bool,
                      add_eos: bool) -> None:
    nbytes = int(utf8_lengths(texts).sum())
    docs = texts.to_pylist()
    if texts.null_count:
        docs = [t if t is not None else "" for t in docs]
    ids, lengths = encode_text_docs(tok, docs, add_bos, add_eos, writer.dtype)
    writer.append(ids, np.ones(len(ids), dtype=np.uint8), lengths, nbytes)


def byte_bounded(batch: pa.RecordBatch, max_bytes: int) -> list[pa.RecordBatch]:
    """Cut ``batch`` into consecutive slices of at most ``max_bytes`` of text (at least one row each)."""
    ends = np.cumsum(utf8_lengths(batch.column("text")) + utf8_lengths(batch.column("messages")))
    slices, start, done = [], 0, 0
    while start < batch.num_rows:
        stop = max(int(np.searchsorted(ends, done + max_bytes, side="right")), start + 1)
        slices.append(batch.slice(start, stop - start))
        done, start = int(ends[stop - 1]), stop
    return slices


def pretokenize_file(shard_file: str | Path, tok: LmcoreTokenizer, out_dir: str | Path, add_bos: bool = True,
                     add_eos: bool = True, batch_rows: int = BATCH_ROWS,
                     batch_bytes: int = BATCH_BYTES) -> dict[str, Any]:
    """Encode one Parquet shard into ``out_dir``; returns the shard's metadata."""
    name, split = shard_name(shard_file)
    writer = TokenShardWriter(out_dir, name, tok.vocab_size, split)
    with reading_shard(shard_file, "pretokenize"):
        pf = pq.ParquetFile(shard_file)
        for record_batch in pf.iter_batches(batch_size=batch_rows, columns=_COLUMNS):
            for batch in byte_bounded(record_batch, batch_bytes):
                _append_batch(writer, tok, batch, add_bos, add_eos)
    return writer.close()


def _append_batch(writer: TokenShardWriter, tok: LmcoreTokenizer, batch: pa.RecordBatch, add_bos: bool,
                  add_eos: bool) -> None:
    kinds = batch.column("kind")
    if set(pc.unique(kinds).to_pylist()) <= {"text"}:
        _append_text_rows(writer, tok, batch.column("text"), add_bos, add_eos)
        return
    # Mixed batch: keep record order by handling runs of one kind at a time.
    kind_list = kinds.to_pylist()
    start = 0
    for kind, run in itertools.groupby(kind_list):
        n = len(list(run))
        part = batch.slice(start, n)
        if kind == "chat":
            _append_chat_rows(writer, tok, part.select(["messages", "source", "line"]).to_pydict(),
                              add_bos, add_eos)
        elif kind == "text":
            _append_text_rows(writer, tok, part.column("text"), add_bos, add_eos)
        else:
            rows = part.select(["source", "line"]).to_pydict()
            raise DataFormatError(f"unknown record kind {kind!r}", path=rows["source"][0], line=rows["line"][0])
        start += n


def run_pretokenize_shard(shard_file: str | Path, tokenizer_dir: str | Path, cfg: PipelineConfig,
                          out_dir: str | Path) -> dict[str, Any]:
    """Stage ``pretokenize`` for one shard: writes ``<name>.ids.npy/.docs.npy/.mask.npy/.json`` into ``out_dir``."""
    tok = LmcoreTokenizer.load(tokenizer_dir)
    meta = pretokenize_file(shard_file, tok, out_dir, cfg.tokenizer.add_bos, cfg.tokenizer.add_eos)
    meta["files"] = [f"{meta['name']}{s}" for s in (".ids.npy", ".docs.npy", ".mask.npy", ".json")]
    return meta
