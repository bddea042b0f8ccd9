"""One verdict per input line: the single loop both the validate and the shard stage run.

Why one function: the report says what the shards will contain only if both
stages classify lines with the same code in the same order (deduplication
keeps the *first* occurrence, so order matters). :func:`iter_verdicts`
streams the files, parses each line with :class:`LineParser` and removes
exact duplicates, holding only 8-byte digests (:class:`DigestSet`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence

import numpy as np

from lmcore.data.formats import (InputFile, Progress, as_path_list, input_files, iter_lines, progress_counter,
                                 total_bytes)
from lmcore.data.records import BLANK, LineParser, Record, Rejection
from lmcore.errors import DataFormatError

if TYPE_CHECKING:
    from lmcore.config import DataConfig


class LineVerdict:
    """What happened to one line: ``reason`` is None for a kept record, ``"blank"``, or a rejection reason."""

    __slots__ = ("file", "line", "raw", "reason", "detail", "record")

    def __init__(self, file: InputFile, line: int, raw: bytes, reason: Optional[str], detail: str,
                 record: Optional[Record]):
        self.file = file
        self.line = line
        self.raw = raw
        self.reason = reason
        self.detail = detail
        self.record = record

    @property
    def where(self) -> str:
        return f"{self.file.path}:{self.line}"


class DigestSet:
    """Set of 64-bit digests in about 8 bytes each: a sorted numpy array plus a small pending Python set.

    Python sets cost ~70 bytes per int; at millions of records that would be
    the stage's largest allocation. Pending digests are merged into the sorted
    array every ``merge_every`` insertions (amortised O(n log n) overall).
    """

    def __init__(self, merge_every: int = 1 << 16):
        self._sorted = np.empty(0, dtype=np.uint64)
        self._pending: set[int] = set()
        self._merge_every = merge_every

    def __len__(self) -> int:
        return len(self._sorted) + len(self._pending)

    def add_if_new(self, digest: bytes) -> bool:
        """Insert ``digest``; False if it was already present."""
        key = int.from_bytes(digest, "big")
        if key in self._pending:
            return False
        arr = self._sorted
        if len(arr):
            i = int(arr.searchsorted(np.uint64(key)))
            if i < len(arr) and int(arr[i]) == key:
                return False
        self._pending.add(key)
        if len(self._pending) >= self._merge_every:
            self._merge()
        return True

    def _merge(self) -> None:
        fresh = np.fromiter(self._pending, dtype=np.uint64, count=len(self._pending))
        merged = np.concatenate([self._sorted, fresh])
        merged.sort(kind="stable")
        self._sorted = merged
        self._pending = set()


def iter_verdicts(files: Sequence[InputFile], text_fields: Sequence[str], use_conversation_format: bool,
                  min_text_length: int, deduplicate: bool = True,
                  progress: Optional[Progress] = None) -> Iterator[LineVerdict]:
    """Yield a :class:`LineVerdict` for every line of every file, in order. Never raises for a bad line."""
    parser = LineParser(text_fields, use_conversation_format, min_text_length)
    seen = DigestSet()
    on_bytes = progress_counter(total_bytes(files), progress)
    for file in files:
        source = file.path
        for number, raw in iter_lines(source, on_bytes):
            result = parser.parse(raw, source, number)
            if result is None:
                yield LineVerdict(file, number, raw, BLANK, "", None)
            elif isinstance(result, Rejection):
                yield LineVerdict(file, number, raw, result.reason, result.detail, None)
            elif deduplicate and not seen.add_if_new(result.digest):
                yield LineVerdict(file, number, raw, "duplicate",
                                  f"same content as an earlier record (id {result.id})", None)
            else:
                yield LineVerdict(file, number, raw, None, "", result)


def stage_inputs(paths: Optional[Iterable[str | Path]], data_cfg: "DataConfig") -> list[InputFile]:
    """The files a data stage reads: ``paths`` (None = ``data.training_data_path``) plus ``data.eval_data_path``.

    Eval files come first and are forced to the eval split (see :func:`input_files`).
    """
    train = as_path_list(paths) if paths is not None else list(data_cfg.training_data_path)
    files = input_files(train, data_cfg.eval_data_path)
    if not files:
        raise DataFormatError("no input files: set data.training_data_path (JSONL files or globs)")
    return files


def config_verdicts(files: Sequence[InputFile], data_cfg: "DataConfig",
                    progress: Optional[Progress] = None) -> Iterator[LineVerdict]:
    """:func:`iter_verdicts` with the rules of a ``data`` config section."""
    return iter_verdicts(files, data_cfg.text_fields, data_cfg.use_conversation_format, data_cfg.min_text_length,
                         data_cfg.deduplicate, progress)


def verdict_settings(data_cfg: "DataConfig") -> dict:
    """The config values that decide verdicts (recorded in reports and summaries)."""
    return {"text_fields": list(data_cfg.text_fields), "use_conversation_format": data_cfg.use_conversation_format,
            "min_text_length": data_cfg.min_text_length, "deduplicate": data_cfg.deduplicate,
            "max_invalid_fraction": data_cfg.max_invalid_fraction}
