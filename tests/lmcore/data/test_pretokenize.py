"""Pre-tokenisation writes memory-mappable token shards whose ids and loss masks are exactly right."""

import json

import numpy as np
import pytest

from lmcore.data import chat_template as chat
from lmcore.config import DataConfig, PipelineConfig, TokenizerConfig
from lmcore.data.pretokenize import pretokenize_file, run_pretokenize_shard
from lmcore.data.token_shards import TokenShardWriter, ids_dtype, list_shards, open_shard
from lmcore.errors import DataFormatError, StoreError
from lmcore.data.tokenizer import LmcoreTokenizer, run_train_tokenizer
from tests.fixtures.text_shards import CONVERSATIONS, chat_record, text_record, write_corpus, write_shard


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    files = write_corpus(d, docs_per_shard=50, shards=2)
    tok_dir = tmp_path_factory.mktemp("tok")
    run_train_tokenizer(d, TokenizerConfig(), DataConfig(), 400, tok_dir)
    return files, tok_dir, LmcoreTokenizer.load(tok_dir)


def records_of(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def docs_of(shard):
    return [(np.asarray(shard.ids[a:b]), np.asarray(shard.mask[a:b])) for a, b in zip(shard.docs[:-1], shard.docs[1:])]


def test_run_pretokenize_shard_writes_the_four_files_and_metadata(corpus, tmp_path):
    files, tok_dir, tok = corpus
    summary = run_pretokenize_shard(files[1], tok_dir, PipelineConfig(), tmp_path)
    assert summary["name"] == "train-00001" and summary["split"] == "train"
    assert sorted(summary["files"]) == sorted(p.name for p in tmp_path.iterdir())
    meta = json.loads((tmp_path / "train-00001.json").read_text())
    assert {k: meta[k] for k in ("docs", "tokens", "dtype", "vocab_size")} == {
        "docs": 50, "tokens": summary["tokens"], "dtype": "uint16", "vocab_size": tok.vocab_size}
    shard = open_shard(tmp_path, "train-00001")
    assert isinstance(shard.ids, np.memmap) and shard.ids.dtype == np.uint16
    assert shard.docs.dtype == np.int64 and shard.docs[0] == 0 and shard.docs[-1] == len(shard.ids)
    assert shard.mask.dtype == np.uint8 and len(shard.mask) == len(shard.ids)
    assert np.array_equal(np.load(tmp_path / "train-00001.ids.npy"), shard.ids)  # a valid .npy, not only a map
    assert list_shards(tmp_path, "train") == ["train-00001"] and list_shards(tmp_path, "eval") == []


def test_text_documents_are_bos_text_eos_and_fully_trained(corpus, tmp_path):
    files, _, tok = corpus
    pretokenize_file(files[0], tok, tmp_path)
    shard = open_shard(tmp_path, "train-00000")
    records = records_of(files[0])
    for record, (ids, mask) in zip(records, docs_of(shard)):
        if record["kind"] == "text":
            assert ids.tolist() == [tok.bos_id] + tok.encode(record["text"]) + [tok.eos_id]
            assert mask.all()


def test_chat_document_ids_equal_encoding_the_rendered_whole(corpus, tmp_path):
    files, _, tok = corpus
    pretokenize_file(files[0], tok, tmp_path)
    shard = open_shard(tmp_path, "train-00000")
    chats = [(r, d) for r, d in zip(records_of(files[0]), docs_of(shard)) if r["kind"] == "chat"]
    assert len(chats) == 5
    for record, (ids, _) in chats:
        rendered = tok.apply_chat_template(json.loads(record["messages"]))
        assert ids.tolist() == tok.encode(rendered) + [tok.eos_id]  # the template's <|bos|> is not doubled
        assert ids[0] == tok.bos_id and (ids == tok.bos_id).sum() == 1


@pytest.mark.parametrize("conversation", [CONVERSATIONS[0], CONVERSATIONS[2]])
def test_chat_mask_trains_exactly_assistant_content_and_end_of_turn(corpus, tmp_path, conversation):
    _, _, tok = corpus
    path = write_shard(tmp_path / "train-00000.parquet", [chat_record(0, conversation)])
    pretokenize_file(path, tok, tmp_path / "tokens")
    ids, mask = docs_of(open_shard(tmp_path / "tokens", "train-00000"))[0]
    expected = "".join(m["content"] + chat.END_OF_TURN for m in conversation if m["role"] == "assistant")
    assert tok.decode(ids[mask == 1].tolist(), skip_special_tokens=False) == expected
    assert tok.decode(ids[mask == 0].tolist(), skip_special_tokens=False).startswith(chat.BOS + chat.USER)


def test_token_merged_across_a_segment_boundary_is_untrained_and_ids_stay_whole(tmp_path):
    # a tokenizer that has learned the merge "\n " (text full of indented lines)
    write_shard(tmp_path / "shards" / "train-00000.parquet",
                [text_record(i, "line\n  indented\n  more\n") for i in range(20)])
    run_train_tokenizer(tmp_path / "shards", TokenizerConfig(), DataConfig(), 300, tmp_path / "tok")
    tok = LmcoreTokenizer.load(tmp_path / "tok")
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  spaced"}]
    path = write_shard(tmp_path / "train-00000.parquet", [chat_record(0, conversation)])
    pretokenize_file(path, tok, tmp_path / "tokens", add_bos=False, add_eos=False)
    ids, mask = docs_of(open_shard(tmp_path / "tokens", "train-00000"))[0]
    assert ids.tolist() == tok.encode(tok.apply_chat_template(conversation))
    # encoding the segments one by one would split "\n" | "  spaced"; the whole string merges "\n " into one token
    segment_ids = [i for text, _ in tok.chat_segments(conversation) for i in tok.encode(text)]
    assert segment_ids != ids.tolist()
    boundary = ids.tolist().index(tok.special_ids[chat.ASSISTANT]) + 1
    assert tok.decode([int(ids[boundary])]) == "\n " and mask[boundary] == 0
    assert tok.decode(ids[mask == 1].tolist(), skip_special_tokens=False) == " spaced<|end|>"


def test_add_bos_and_add_eos_switches_are_respected(corpus, tmp_path):
    files, _, tok = corpus
    pretokenize_file(files[1], tok, tmp_path, add_bos=False, add_eos=False)
    shard = open_shard(tmp_path, "train-00001")
    for record, (ids, _) in zip(records_of(files[1]), docs_of(shard)):
        if record["kind"] == "text":
            assert ids.tolist() == tok.encode(record["text"])


@pytest.mark.parametrize("batch_rows, batch_bytes", [(7, 1 << 20), (1024, 300), (1024, 1)])
def test_small_record_and_byte_batches_give_identical_output(corpus, tmp_path, batch_rows, batch_bytes):
    files, _, tok = corpus
    pretokenize_file(files[0], tok, tmp_path / "big")
    pretokenize_file(files[0], tok, tmp_path / "small", batch_rows=batch_rows, batch_bytes=batch_bytes)
    for suffix in (".ids.npy", ".docs.npy", ".mask.npy", ".json"):
        assert (tmp_path / "big" / f"train-00000{suffix}").read_bytes() == \
            (tmp_path / "small" / f"train-00000{suffix}").read_bytes()


def test_byte_bounded_slices_cover_the_batch_in_order():
    import pyarrow as pa

    from lmcore.data.pretokenize import byte_bounded
    from lmcore.data.schema import RECORD_SCHEMA

    records = [text_record(i, "x" * n) for i, n in enumerate([5, 5, 20, 1, 1, 1, 0])]
    batch = pa.RecordBatch.from_pylist(records, schema=RECORD_SCHEMA)
    slices = byte_bounded(batch, 10)
    assert [s.num_rows for s in slices] == [2, 1, 4]  # a record larger than the bound gets a slice of its own
    assert sum((s.column("text").to_pylist() for s in slices), []) == batch.column("text").to_pylist()


def test_utf8_bytes_counts_text_and_rendered_conversations(corpus, tmp_path):
    files, _, tok = corpus
    meta = pretokenize_file(files[0], tok, tmp_path)
    expected = 0
    for r in records_of(files[0]):
        text = r["text"] if r["kind"] == "text" else tok.apply_chat_template(json.loads(r["messages"]))
        expected += len(text.encode("utf-8"))
    assert meta["utf8_bytes"] == expected
    assert meta["trained_tokens"] == int(np.asarray(open_shard(tmp_path, "train-00000").mask).sum())


def test_eval_shard_is_named_by_its_split(corpus, tmp_path):
    _, _, tok = corpus
    path = write_shard(tmp_path / "eval-00000.parquet", [text_record(0, "a b c"), text_record(1, "")])
    meta = pretokenize_file(path, tok, tmp_path / "tokens")
    assert meta["split"] == "eval" and meta["docs"] == 2
    ids, _ = docs_of(open_shard(tmp_path / "tokens", "eval-00000"))[1]
    assert ids.tolist() == [tok.bos_id, tok.eos_id]  # an empty document still marks its boundary


def test_unknown_record_kind_names_source_and_line(corpus, tmp_path):
    _, _, tok = corpus
    bad = dict(text_record(4, "x"), kind="image")
    path = write_shard(tmp_path / "train-00000.parquet", [text_record(3, "ok"), bad])
    with pytest.raises(DataFormatError, match=r"gen.jsonl:5: unknown record kind 'image'"):
        pretokenize_file(path, tok, tmp_path / "tokens")


def test_large_vocabularies_are_stored_as_uint32(tmp_path):
    assert ids_dtype(65535) == np.uint16 and ids_dtype(65536) == np.uint32
    writer = TokenShardWriter(tmp_path, "train-00000", 70_000, "train")
    writer.append(np.array([69_999, 5], dtype=np.int64), np.ones(2, np.uint8), np.array([2]), 3)
    writer.close()
    shard = open_shard(tmp_path, "train-00000")
    assert shard.ids.dtype == np.uint32 and shard.ids.tolist() == [69_999, 5]


def test_writer_rejects_ids_outside_the_vocabulary(tmp_path):
    writer = TokenShardWriter(tmp_path, "train-00000", 100, "train")
    with pytest.raises(StoreError, match="outside the vocabulary"):
        writer.append(np.array([100]), np.ones(1, np.uint8), np.array([1]), 1)


def test_opening_a_truncated_shard_is_a_store_error(tmp_path):
    writer = TokenShardWriter(tmp_path, "train-00000", 100, "train")
    writer.append(np.arange(10), np.ones(10, np.uint8), np.array([4, 6]), 10)
    writer.close()
    meta = json.loads((tmp_path / "train-00000.json").read_text())
    (tmp_path / "train-00000.json").write_text(json.dumps(dict(meta, tokens=11)))
    with pytest.raises(StoreError, match="disagree"):
        open_shard(tmp_path, "train-00000")


def test_empty_shard_gives_an_empty_token_shard(corpus, tmp_path):
    _, _, tok = corpus
    path = write_shard(tmp_path / "train-00000.parquet", [])
    meta = pretokenize_file(path, tok, tmp_path / "tokens")
    assert (meta["docs"], meta["tokens"], meta["utf8_bytes"]) == (0, 0, 0)
    shard = open_shard(tmp_path / "tokens", "train-00000")
    assert len(shard.ids) == 0 and shard.docs.tolist() == [0]


def test_utf8_lengths_read_from_buffers_handle_nulls_and_slices():
    import pyarrow as pa

    from lmcore.data.pretokenize import utf8_lengths

    column = pa.array(["ab", None, "ünï", "", "😀", None, "xyz"], type=pa.string())
    assert utf8_lengths(column).tolist() == [2, 0, 5, 0, 4, 0, 3]
    assert utf8_lengths(column.slice(2, 4)).tolist() == [5, 0, 4, 0]
    assert utf8_lengths(pa.array(["é", None], type=pa.large_string())).tolist() == [2, 0]
    assert utf8_lengths(column.slice(0, 0)).tolist() == []
