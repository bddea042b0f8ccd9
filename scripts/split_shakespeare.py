"""Split a Shakespeare JSONL into training plays and held-out plays: ``data/shakespeare/``.

The shipped ``data/shakespeare/train.jsonl.gz`` and ``heldout.jsonl.gz`` were made with

    python scripts/split_shakespeare.py /path/shakespeare.jsonl

from the public-domain corpus (2,069 records ``{"text", "source", "chunk"}``, one ``source`` per
play or poem). Whole plays are held out, not random chunks, so the held-out bits per byte measure
text the model has never seen any part of (``examples/shakespeare-cpu.yaml``, README benchmarks).
Records keep their order; each goes to exactly one file. Running the script on the two shipped
files concatenated gives them back, which is how the tests check that script and data agree.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "shakespeare"
HELDOUT = ("comedy_of_errors", "julius_caesar", "twelfth_night")
TRAIN_FILE, HELDOUT_FILE = "train.jsonl.gz", "heldout.jsonl.gz"


def read_lines(paths: Iterable[Path]) -> Iterator[str]:
    """Non-blank lines of each file in turn (``.gz`` read as gzip)."""
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield line if line.endswith("\n") else line + "\n"


def split(lines: Iterable[str], heldout: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``(training lines, held-out lines)``: a line goes to held-out when its ``source`` is a held-out play."""
    train, held = [], []
    for number, line in enumerate(lines, 1):
        try:
            source = json.loads(line).get("source")
        except ValueError as exc:
            raise SystemExit(f"line {number}: not JSON ({exc})") from None
        (held if source in heldout else train).append(line)
    return train, held


def write_gzip(path: Path, lines: list[str]) -> None:
    """Gzip without a name or time in the header: the same lines give the same file on one zlib."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write("".join(lines).encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", type=Path, help="JSONL files (.gz ok) with text and source")
    ap.add_argument("--heldout", nargs="+", default=list(HELDOUT), help="plays (source values) to hold out")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for train.jsonl.gz and heldout.jsonl.gz")
    args = ap.parse_args(argv)
    train, held = split(read_lines(args.sources), tuple(args.heldout))
    missing = set(args.heldout) - {json.loads(line).get("source") for line in held}
    if missing:
        print(f"no records for held-out play(s): {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    write_gzip(args.out / TRAIN_FILE, train)
    write_gzip(args.out / HELDOUT_FILE, held)
    print(f"{len(train)} training records, {len(held)} held-out records ({', '.join(args.heldout)}) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
