"""The data stages in parts (``lmcore.data.parts``): whatever the division, the same bytes out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmcore.config import DataConfig
from lmcore.data.formats import iter_lines, line_ranges
from lmcore.data.parts import parse_part, parse_settings, plan_parts, write_plan
from lmcore.data.shard import run_shard
from lmcore.data.validate import run_validate
from lmcore.data.verdicts import stage_inputs
from lmcore.errors import StoreError
from tests.fixtures.messy_corpus import MIN_TEXT_LENGTH, write_messy_corpus


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def parsed(tmp: Path, data_cfg: DataConfig, part_bytes: int, order=lambda n: range(n)) -> Path:
    """Plan and run every part (in the given order, as workers would finish them); the parts folder."""
    parts = plan_parts(stage_inputs(None, data_cfg), part_bytes)
    folder = tmp / f"parts-{part_bytes}"
    write_plan(folder, parts, parse_settings(data_cfg))
    for index in order(len(parts)):
        parse_part(folder, index)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    messy = write_messy_corpus(root, big_record_chars=200_000)
    extra = root / "more.jsonl"  # a second plain file repeating records of the first: cross-file duplicates
    first = messy.paths[0].read_bytes().splitlines(keepends=True)
    extra.write_bytes(b"".join(first[5:40] + first[:5]) * 3)
    return messy, [str(p) for p in messy.paths] + [str(extra)]


@pytest.mark.parametrize("part_bytes", [1 << 30, 4096])  # one part per file; many byte ranges per plain file
def test_validate_and_shard_from_parts_write_the_same_bytes(tmp_path, corpus, part_bytes):
    messy, paths = corpus
    data_cfg = DataConfig(training_data_path=paths, min_text_length=MIN_TEXT_LENGTH, eval_split=0.2,
                          shard_max_rows=50)
    parts_dir = parsed(tmp_path, data_cfg, part_bytes, order=lambda n: reversed(range(n)))
    if part_bytes == 4096:
        assert len(json.loads((parts_dir / "plan.json").read_text())["parts"]) > 2 * len(paths)
    run_validate(None, data_cfg, tmp_path / "v1")
    run_validate(None, data_cfg, tmp_path / "v2", parts_dir=parts_dir)
    assert files_in(tmp_path / "v2") == files_in(tmp_path / "v1")
    report = json.loads((tmp_path / "v1" / "report.json").read_text())
    assert report["reasons"]["duplicate"] > messy.expected.get("duplicate", 0)  # the second file's copies
    one = run_shard(None, data_cfg, tmp_path / "s1")
    two = run_shard(None, data_cfg, tmp_path / "s2", parts_dir=parts_dir)
    assert one == two and len(one["files"]) > 2
    assert files_in(tmp_path / "s2") == files_in(tmp_path / "s1")


def test_byte_ranges_start_at_line_starts_and_cover_every_line_once(tmp_path):
    path = tmp_path / "lines.jsonl"
    lines = [f'{{"text": "{"x" * (i % 37)}"}}'.encode() for i in range(500)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    ranges = line_ranges(str(path), 1000)
    assert len(ranges) > 5 and ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    pieces = [raw for start, end in ranges for _, raw in iter_lines(str(path), start=start, end=end)]
    assert pieces == lines


def test_a_worker_that_cannot_see_the_parts_folder_says_so(tmp_path):
    with pytest.raises(StoreError, match="cannot see the store: .*plan.json"):
        parse_part(tmp_path / "not-here", 0)


def test_a_finished_part_is_reused_not_parsed_again(tmp_path, corpus):
    _, paths = corpus
    data_cfg = DataConfig(training_data_path=paths[:1], min_text_length=MIN_TEXT_LENGTH)
    folder = parsed(tmp_path, data_cfg, 1 << 30)
    arrow = folder / "part-00000.arrow"
    before = arrow.stat().st_mtime_ns
    assert parse_part(folder, 0)["lines"] > 0 and arrow.stat().st_mtime_ns == before
