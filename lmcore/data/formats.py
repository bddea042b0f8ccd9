"""Reading raw JSONL inputs: plain, gzip or zstd files and globs, one line at a time.

Why bytes: a line is handed on as raw ``bytes`` (never decoded here) so that
the validator can decode each line strictly and report invalid UTF-8 on that
line alone instead of failing a whole file. Everything streams: a file is
never held in memory, only the current line (a single 4 MB record is fine).

Line handling: ``\\n`` ends a line; a trailing ``\\r`` (CRLF files) is
removed; a UTF-8 byte-order mark at the start of a file is removed. Line
numbers are 1-based physical lines of the decompressed stream. A line longer
than :data:`MAX_LINE_BYTES` (a binary or newline-free file) is not held in
memory: it is skipped and handed on as an :class:`OversizeLine` (its first
KiB, and its full size), which the validator rejects as ``line_too_long``.

Compression is chosen by magic bytes (gzip ``1f 8b``, zstd ``28 b5 2f fd``),
so a misnamed file still reads; ``.gz``/``.zst`` suffixes are the usual case.
A damaged compressed stream (truncated download, bad block) raises
:class:`DataFormatError` naming the file and the last line read: the lines
before it were seen, but the rest of the file cannot be trusted.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional

from lmcore.errors import DataFormatError

UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_BUFFER = 1 << 20  # 1 MiB reads: fast line splitting without holding much
MAX_LINE_BYTES = 256 << 20  # longer lines are skipped, not read into memory (read at call time: patchable)
ZSTD_READ = 1 << 17  # compressed bytes fed to the zstd decoder at a time
PROGRESS_EVERY = 1 << 20  # call the progress callback about once per MiB read from disk

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class InputFile:
    """One raw input file and the split its records are bound to (``None`` = decided by hash)."""

    path: str
    forced_split: Optional[str] = None  # "eval" for files from data.eval_data_path

    @property
    def size(self) -> int:
        return os.path.getsize(self.path)


# Not ``.json``: dataset folders hold metadata such as dataset_info.json that is not JSONL.
DIRECTORY_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


def expand_paths(patterns: Iterable[str]) -> list[str]:
    """Files named by ``patterns`` (paths, globs with ``**``, or directories), in order, each once.

    A glob's matches are sorted so the order (and so which duplicate is kept)
    does not depend on the file system. A directory stands for its files ending
    in one of :data:`DIRECTORY_SUFFIXES` (not recursive), sorted. A pattern
    that names nothing is an error.
    """
    out: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        pattern = str(pattern)
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        elif os.path.isdir(pattern):
            matches = sorted(os.path.join(pattern, n) for n in os.listdir(pattern)
                             if n.endswith(DIRECTORY_SUFFIXES) and os.path.isfile(os.path.join(pattern, n)))
        else:
            matches = [pattern] if os.path.isfile(pattern) else []
        if not matches:
            what = ("no file matches the glob" if glob.has_magic(pattern) else
                    "no .jsonl/.jsonl.gz/.jsonl.zst file in the directory" if os.path.isdir(pattern)
                    else "file not found")
            raise DataFormatError(f"{what} (data.training_data_path / data.eval_data_path)", path=pattern)
        for match in matches:
            key = os.path.realpath(match)
            if key not in seen:
                seen.add(key)
                out.append(match)
    return out


def input_files(paths: Optional[Iterable[str]], eval_paths: Iterable[str] = ()) -> list[InputFile]:
    """The files a data stage reads: ``eval_paths`` first (forced to eval), then ``paths``.

    Eval files come first so that a record present in both an eval file and a
    training file is kept in eval and dropped from train as a duplicate: held-out
    data never leaks into training. A file named in both lists counts as eval.
    """
    eval_list = expand_paths(eval_paths) if eval_paths else []
    eval_keys = {os.path.realpath(p) for p in eval_list}
    files = [InputFile(p, "eval") for p in eval_list]
    for p in expand_paths(paths or []):
        if os.path.realpath(p) not in eval_keys:
            files.append(InputFile(p))
    return files


def open_raw(path: str) -> tuple[BinaryIO, BinaryIO]:
    """``(decompressed buffered stream, underlying disk file)``; the disk file's position gives progress."""
    disk = open(path, "rb", buffering=0)  # raw file: one buffer (below), and tell() is the on-disk position
    head = disk.read(4)
    disk.seek(0)
    if head.startswith(GZIP_MAGIC):
        stream: BinaryIO = io.BufferedReader(gzip.GzipFile(fileobj=disk, mode="rb"), READ_BUFFER)
    elif head.startswith(ZSTD_MAGIC):
        stream = io.BufferedReader(ZstdFrames(disk), READ_BUFFER)
    else:
        stream = io.BufferedReader(disk, READ_BUFFER)  # type: ignore[arg-type]
    return stream, disk


class ZstdFrames(io.RawIOBase):
    """Decompressed bytes of every zstd frame in a file; a truncated last frame raises ``EOFError``.

    Why not ``ZstdDecompressor().stream_reader``: it stops silently after the
    first frame (concatenated ``.zst`` files lose data) and does not notice a
    file cut off mid-frame.
    """

    def __init__(self, disk: BinaryIO):
        import zstandard

        self._disk = disk
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not len(self._pending):
            chunk = self._disk.read(ZSTD_READ)  # small: one call's output is this times the compression ratio
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame (truncated file?)")
                return 0
            self._pending = memoryview(self._decompress(chunk))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self._in_frame = True
            out.append(self._frame.decompress(data))
            if not self._frame.eof:
                break
            data = self._frame.unused_data
            self._frame = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(out)


class OversizeLine(bytes):
    """The first KiB of a line longer than the limit; ``size`` is the full line's length in bytes."""

    size: int = 0
    limit: int = 0


def _skip_rest_of_line(stream: BinaryIO, head: bytes, limit: int) -> OversizeLine:
    size = len(head)
    line = head
    while not line.endswith(b"\n"):
        line = stream.readline(1 << 20)
        if not line:
            break
        size += len(line)
    out = OversizeLine(head[:1024])
    out.size = size - (2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0)  # no terminator
    out.limit = limit
    return out


def iter_lines(path: str, on_bytes: Optional[Callable[[int], None]] = None,
               max_line_bytes: Optional[int] = None, start: int = 0,
               end: Optional[int] = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_line)`` for every line of ``path``, terminators and BOM removed.

    ``on_bytes(n)`` is called with the number of on-disk (compressed) bytes
    consumed since its previous call, about once per MiB and at the end.
    A line over ``max_line_bytes`` (default :data:`MAX_LINE_BYTES`) comes as an :class:`OversizeLine`.
    ``start``/``end``: only the lines that start in that byte range of an uncompressed file
    (``start`` must be a line start; see :func:`line_ranges`), numbered from 1 within the range.
    """
    max_bytes = max_line_bytes or MAX_LINE_BYTES
    limit = max_bytes + 2  # room for "\r\n"
    stream, disk = open_raw(path)
    ranged = bool(start) or end is not None
    if ranged:
        if getattr(stream, "raw", None) is not disk:
            stream.close()
            disk.close()
            raise ValueError(f"{path}: byte ranges need an uncompressed file")
        stream.seek(start)
    readline = stream.readline
    reported = start
    since_check = 0  # decompressed bytes since the last look at the disk position
    number = 0
    try:
        try:
            while True:
                if end is not None and stream.tell() >= end:
                    break
                line = readline(limit)
                if not line:
                    break
                number += 1
                if len(line) == limit and not line.endswith(b"\n"):
                    yield number, _skip_rest_of_line(stream, line, max_bytes)
                    continue
                if line.endswith(b"\n"):
                    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                elif line.endswith(b"\r"):
                    line = line[:-1]
                if number == 1 and start == 0 and line.startswith(UTF8_BOM):
                    line = line[len(UTF8_BOM):]
                yield number, line
                if on_bytes is not None:
                    since_check += len(line)
                    if since_check >= PROGRESS_EVERY:
                        since_check = 0
                        pos = disk.tell()
                        if pos - reported >= PROGRESS_EVERY:
                            on_bytes(pos - reported)
                            reported = pos
        except (EOFError, OSError, zlib.error) as exc:
            raise DataFormatError(f"cannot read compressed stream after line {number}: {exc}", path=path) from None
        except Exception as exc:  # zstandard.ZstdError
            if type(exc).__name__ == "ZstdError":
                raise DataFormatError(f"cannot read zstd stream after line {number}: {exc}", path=path) from None
            raise
        if on_bytes is not None:
            last = end if end is not None else os.fstat(disk.fileno()).st_size
            if last > reported:
                on_bytes(last - reported)
    finally:
        stream.close()
        disk.close()


def is_compressed(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith(GZIP_MAGIC) or head.startswith(ZSTD_MAGIC)


def line_ranges(path: str, target_bytes: int) -> list[tuple[int, int]]:
    """``path`` cut into byte ranges of about ``target_bytes`` that each start at a line start (one range
    for a compressed or small file). The same file and target always give the same ranges."""
    size = os.path.getsize(path)
    if size <= target_bytes or is_compressed(path):
        return [(0, size)]
    cuts = [0]
    with open(path, "rb") as fh:
        while cuts[-1] + target_bytes < size:
            fh.seek(cuts[-1] + target_bytes - 1)  # the byte before the nominal cut: a newline there cuts there
            fh.readline()
            position = fh.tell()
            if position >= size:
                break
            cuts.append(position)
    return [(a, b) for a, b in zip(cuts, cuts[1:] + [size])]


def total_bytes(files: Iterable[InputFile]) -> int:
    """On-disk size of all inputs: the denominator of progress."""
    return sum(f.size for f in files)


def progress_counter(total: int, progress: Optional[Progress]) -> Optional[Callable[[int], None]]:
    """Turn per-file byte increments into ``progress(done, total)`` calls (``None`` if no callback)."""
    if progress is None:
        return None
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(min(done, total), total)

    return advance


def as_path_list(paths: Optional[Iterable[str | Path]]) -> list[str]:
    """Normalise a str / Path / list argument to a list of strings."""
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [str(paths)]
    return [str(p) for p in paths]
