"""Reading raw inputs: compression, line endings, BOM, globs, progress, damaged streams."""

import gzip
import os

import pytest
import zstandard

from lmcore.data.formats import expand_paths, input_files, iter_lines
from lmcore.errors import DataFormatError

LINES = [b'{"text": "one"}', b"", b'{"text": "caf\xc3\xa9"}', b"\xff not utf8", b'{"text": "last"}']


def _write_all_formats(tmp_path, payload: bytes):
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(payload)
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(payload))
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(payload))
    return [plain, gz, zst]


def test_plain_gzip_and_zstd_yield_the_same_numbered_raw_lines(tmp_path):
    payload = b"\n".join(LINES) + b"\n"
    for path in _write_all_formats(tmp_path, payload):
        assert list(iter_lines(str(path))) == list(enumerate(LINES, start=1)), path


def test_crlf_endings_and_a_leading_bom_are_removed_and_a_missing_final_newline_is_fine(tmp_path):
    payload = b"\xef\xbb\xbf" + b"\r\n".join(LINES)  # no final newline
    for path in _write_all_formats(tmp_path, payload):
        assert [raw for _, raw in iter_lines(str(path))] == LINES


def test_a_bom_after_the_first_line_is_kept_as_data(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(b"a\n\xef\xbb\xbfb\n")
    assert [raw for _, raw in iter_lines(str(path))] == [b"a", b"\xef\xbb\xbfb"]


def test_compression_is_detected_by_content_not_by_file_name(tmp_path):
    path = tmp_path / "misnamed.jsonl"
    path.write_bytes(gzip.compress(b'{"text": "x"}\n'))
    assert list(iter_lines(str(path))) == [(1, b'{"text": "x"}')]


def test_a_four_megabyte_line_is_read_whole(tmp_path):
    big = b'{"text": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    for path in _write_all_formats(tmp_path, b"small\n" + big + b"\nafter\n"):
        lines = [raw for _, raw in iter_lines(str(path))]
        assert lines == [b"small", big, b"after"]


def test_progress_reports_on_disk_bytes_and_ends_at_the_file_size(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    noise = os.urandom(1_500_000).hex().encode()  # incompressible: about 3 MB on disk
    path.write_bytes(gzip.compress(b"\n".join(noise[i:i + 100] for i in range(0, len(noise), 100)), compresslevel=1))
    seen = []
    for _ in iter_lines(str(path), on_bytes=seen.append):
        pass
    assert sum(seen) == path.stat().st_size
    assert len(seen) >= 2  # called along the way, not only at the end


def test_truncated_gzip_raises_data_format_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(b'{"text": "a line"}\n' * 10_000)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="cut.jsonl.gz"):
        list(iter_lines(str(path)))


def test_globs_expand_sorted_each_file_once_and_a_missing_path_is_named(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.jsonl.gz"):
        (tmp_path / name).write_text("")
    got = expand_paths([str(tmp_path / "*.jsonl*"), str(tmp_path / "a.jsonl")])
    assert [p.rsplit("/", 1)[-1] for p in got] == ["a.jsonl", "b.jsonl", "c.jsonl.gz"]
    with pytest.raises(DataFormatError, match="nope.jsonl"):
        expand_paths([str(tmp_path / "nope.jsonl")])
    with pytest.raises(DataFormatError, match="glob"):
        expand_paths([str(tmp_path / "*.parquet")])


def test_eval_files_come_first_and_a_file_named_twice_counts_as_eval(tmp_path):
    for name in ("train.jsonl", "held.jsonl"):
        (tmp_path / name).write_text("")
    files = input_files([str(tmp_path / "*.jsonl")], [str(tmp_path / "held.jsonl")])
    assert [(f.path.rsplit("/", 1)[-1], f.forced_split) for f in files] == [("held.jsonl", "eval"),
                                                                           ("train.jsonl", None)]


def test_a_directory_stands_for_its_jsonl_files_sorted(tmp_path):
    for name in ("b.jsonl.zst", "a.jsonl", "notes.txt", "dataset_info.json"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    assert [p.rsplit("/", 1)[-1] for p in expand_paths([str(tmp_path)])] == ["a.jsonl", "b.jsonl.zst"]
    with pytest.raises(DataFormatError, match="directory"):
        expand_paths([str(tmp_path / "sub")])


def test_zstd_files_with_several_frames_are_read_to_the_end(tmp_path):
    c = zstandard.ZstdCompressor()
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(c.compress(b"a\nb\n") + c.compress(b"c\n") + c.compress(b""))
    assert list(iter_lines(str(path))) == [(1, b"a"), (2, b"b"), (3, b"c")]


def test_truncated_zstd_raises_data_format_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.jsonl.zst"
    data = zstandard.ZstdCompressor().compress(os.urandom(200_000).hex().encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="cut.jsonl.zst.*truncated"):
        list(iter_lines(str(path)))


def test_a_line_over_the_limit_comes_as_an_oversize_marker_with_its_size(tmp_path):
    from lmcore.data.formats import OversizeLine

    payload = b"short\r\n" + b"y" * 5000 + b"\r\nafter\r\n" + b"z" * 3000
    for path in _write_all_formats(tmp_path, payload):
        lines = list(iter_lines(str(path), max_line_bytes=1000))
        assert [n for n, _ in lines] == [1, 2, 3, 4]
        assert (lines[0][1], lines[2][1]) == (b"short", b"after")
        assert type(lines[1][1]) is OversizeLine and (lines[1][1].size, len(lines[1][1])) == (5000, 1002)  # kept: the bytes read before giving up
        assert lines[3][1].size == 3000  # the last line, without a terminator
