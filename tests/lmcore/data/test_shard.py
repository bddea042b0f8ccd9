"""The shard stage: every kept record once, deterministic split, caps, rollover, eval files."""

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from lmcore.config import DataConfig
from lmcore.data.schema import RECORD_SCHEMA
from lmcore.data.shard import run_shard
from lmcore.errors import DataFormatError
from tests.fixtures.messy_corpus import MIN_TEXT_LENGTH, write_messy_corpus


def _rows(out_dir, split=None):
    rows = []
    for path in sorted(out_dir.glob(f"{split or '*'}-*.parquet")):
        table = pq.read_table(path)
        assert table.schema.equals(RECORD_SCHEMA)
        rows += [dict(r, file=path.name) for r in table.to_pylist()]
    return rows


def _write(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return write_messy_corpus(tmp_path_factory.mktemp("messy"))


def test_every_kept_record_reaches_the_shards_exactly_once(messy, tmp_path):
    cfg = DataConfig(min_text_length=MIN_TEXT_LENGTH, eval_split=0.2, shard_max_rows=64)
    summary = run_shard([str(p) for p in messy.paths], cfg, tmp_path)
    rows = _rows(tmp_path)
    got = Counter((r["kind"], r["text"] if r["kind"] == "text" else r["messages"]) for r in rows)
    assert got == Counter(messy.kept) and max(got.values()) == 1
    assert summary["splits"]["train"] + summary["splits"]["eval"] == len(messy.kept) == summary["totals"]["valid"]
    assert summary["splits"]["eval"] > 0 and summary["splits"]["train"] > 0
    on_disk = [(f.name, pq.read_metadata(f).num_rows) for f in sorted(tmp_path.glob("*.parquet"))]
    assert sorted((f["name"], f["rows"]) for f in summary["files"]) == on_disk
    big = [r for r in rows if r["text"] == messy.big_text][0]
    assert (big["source"], big["line"]) == (str(messy.paths[0]), 9)


def test_split_follows_the_record_id_and_does_not_move_when_data_is_added(tmp_path):
    first = [f"first batch record {i}" for i in range(300)]
    more = [f"added later {i}" for i in range(300)]
    cfg = DataConfig(eval_split=0.25)
    run_shard([_write(tmp_path / "a.jsonl", first)], cfg, tmp_path / "one")
    run_shard([_write(tmp_path / "b.jsonl", more + first[::-1])], cfg, tmp_path / "two")
    run_shard([str(tmp_path / "a.jsonl")], cfg, tmp_path / "again")
    split_of = {r["text"]: r["file"].split("-")[0] for r in _rows(tmp_path / "one")}
    split_later = {r["text"]: r["file"].split("-")[0] for r in _rows(tmp_path / "two")}
    assert all(split_later[t] == split_of[t] for t in first)
    assert 0.1 < sum(s == "eval" for s in split_of.values()) / len(first) < 0.4
    assert _rows(tmp_path / "one") == _rows(tmp_path / "again")


def test_max_samples_train_caps_train_records_but_not_eval(tmp_path):
    data = _write(tmp_path / "a.jsonl", [f"record {i}" for i in range(200)])
    summary = run_shard([data], DataConfig(max_samples_train=50, eval_split=0.2), tmp_path / "out")
    assert summary["splits"]["train"] == 50 == len(_rows(tmp_path / "out", "train"))
    assert summary["splits"]["eval"] == len(_rows(tmp_path / "out", "eval")) > 20
    assert summary["capped_train"] == 200 - 50 - summary["splits"]["eval"]


def test_eval_data_path_records_all_go_to_eval_and_win_over_training_duplicates(tmp_path):
    train = _write(tmp_path / "train.jsonl", [f"train {i}" for i in range(100)] + ["held out 3"])
    held = _write(tmp_path / "held.jsonl", [f"held out {i}" for i in range(10)])
    summary = run_shard([train], DataConfig(eval_data_path=[held], eval_split=0.0), tmp_path / "out")
    eval_texts = {r["text"] for r in _rows(tmp_path / "out", "eval")}
    train_texts = {r["text"] for r in _rows(tmp_path / "out", "train")}
    assert eval_texts == {f"held out {i}" for i in range(10)}
    assert train_texts == {f"train {i}" for i in range(100)}
    assert summary["reasons"]["duplicate"] == 1


def test_shards_roll_over_at_the_row_and_byte_limits(tmp_path):
    data = _write(tmp_path / "a.jsonl", [f"{i:04d}" + "x" * 196 for i in range(100)])  # 200 bytes each
    by_rows = run_shard([data], DataConfig(eval_split=0.0, shard_max_rows=30), tmp_path / "rows")
    assert [f["rows"] for f in by_rows["files"]] == [30, 30, 30, 10]
    assert [f["name"] for f in by_rows["files"]] == [f"train-0000{i}.parquet" for i in range(4)]
    by_bytes = run_shard([data], DataConfig(eval_split=0.0, shard_max_bytes=2000), tmp_path / "bytes")
    assert [f["rows"] for f in by_bytes["files"]] == [10] * 10
    texts = [r["text"][:4] for r in _rows(tmp_path / "bytes")]
    assert texts == [f"{i:04d}" for i in range(100)]  # input order kept across files


def test_train_file_always_exists_and_eval_files_only_when_there_are_eval_records(tmp_path):
    data = _write(tmp_path / "a.jsonl", ["only one record"])
    summary = run_shard([data], DataConfig(eval_split=0.0), tmp_path / "no-eval")
    assert [f["name"] for f in summary["files"]] == ["train-00000.parquet"]
    only_eval = run_shard([], DataConfig(eval_data_path=[data]), tmp_path / "all-eval")
    assert [(f["name"], f["rows"]) for f in only_eval["files"]] == [("train-00000.parquet", 0),
                                                                      ("eval-00000.parquet", 1)]
    assert only_eval["warnings"] and pq.read_table(tmp_path / "all-eval" / "train-00000.parquet").num_rows == 0


def test_no_usable_record_and_too_many_invalid_lines_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n\n')
    with pytest.raises(DataFormatError, match="no usable record"):
        run_shard([str(empty)], DataConfig(), tmp_path / "a")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": 7}\n')
    with pytest.raises(DataFormatError, match="wrong_type: 1"):
        run_shard([str(bad)], DataConfig(max_invalid_fraction=0.2), tmp_path / "b")


def test_chat_records_are_flattened_in_shards_when_conversation_format_is_off(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]})
                    + "\n")
    run_shard([str(data)], DataConfig(use_conversation_format=False, eval_split=0.0), tmp_path / "flat")
    run_shard([str(data)], DataConfig(eval_split=0.0), tmp_path / "chat")
    flat, chat = _rows(tmp_path / "flat")[0], _rows(tmp_path / "chat")[0]
    assert (flat["kind"], flat["text"], flat["messages"]) == ("text", "user: Hi\n\nassistant: Yo", None)
    assert (chat["kind"], chat["text"]) == ("chat", None)
    assert json.loads(chat["messages"]) == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]


def test_shard_counts_match_validate_and_progress_reaches_the_total(messy, tmp_path):
    from lmcore.data.validate import run_validate

    cfg = DataConfig(min_text_length=MIN_TEXT_LENGTH)
    paths = [str(p) for p in messy.paths]
    calls = []
    shard = run_shard(paths, cfg, tmp_path / "shards", progress=lambda done, total: calls.append((done, total)))
    validate = run_validate(paths, cfg, tmp_path / "validate")
    assert (shard["totals"], shard["reasons"]) == (validate["totals"], validate["reasons"])
    total = sum(p.stat().st_size for p in messy.paths)
    assert calls[-1] == (total, total)
