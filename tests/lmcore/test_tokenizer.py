"""The byte-level BPE trains deterministically from shards and loads identically in transformers."""

import json

import pytest

from lmcore.data import chat_template as chat
from lmcore.config import DataConfig, TokenizerConfig
from lmcore.errors import StoreError
from lmcore.data.tokenizer import LmcoreTokenizer, run_train_tokenizer, sample_texts
from tests.fixtures.text_shards import CONVERSATIONS, write_corpus

VOCAB = 400
SAMPLES = [
    "Hello world",
    "  leading spaces, trailing spaces  ",
    "tabs\tand\nnew\n\nlines\r\n",
    "ünïcödé café naïve — 日本語 😀",
    "<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n",
    "text<|eos|><|bos|>more",
    "",
]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    write_corpus(d, docs_per_shard=80, shards=2)
    return d


@pytest.fixture(scope="module")
def tok_dir(shard_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    summary = run_train_tokenizer(shard_dir, TokenizerConfig(), DataConfig(), VOCAB, out, model_max_length=128)
    assert summary["vocab_size"] == VOCAB
    assert summary["sample_records"] == 160  # tokenizer_train_size (100k) > records: all of them
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    return LmcoreTokenizer.load(tok_dir)


@pytest.fixture(scope="module")
def hf(tok_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tok_dir))


def test_special_tokens_have_fixed_ids_and_are_special(tok):
    assert tok.special_ids == {t: i for i, t in enumerate(chat.SPECIAL_TOKENS)}
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.end_of_turn_id) == (0, 1, 2, 3)
    ids = tok.encode("<|user|>\nHi<|end|>")
    assert ids[0] == tok.special_ids[chat.USER] and ids[-1] == tok.end_of_turn_id
    assert tok.decode(ids) == "\nHi"
    assert tok.decode(ids, skip_special_tokens=False) == "<|user|>\nHi<|end|>"


def test_vocab_has_no_merges_learned_from_special_token_text(tok):
    vocab = tok.tokenizer.get_vocab()
    leaked = [t for t in vocab if ("<|" in t or "|>" in t) and t not in chat.SPECIAL_TOKENS]
    assert leaked == []


@pytest.mark.parametrize("text", SAMPLES)
def test_encode_decode_round_trips_every_string(tok, text):
    assert tok.decode(tok.encode(text), skip_special_tokens=False) == text


def test_add_special_tokens_prepends_bos_only(tok):
    assert tok.encode("Hello", add_special_tokens=True) == [tok.bos_id] + tok.encode("Hello")


def test_encode_batch_matches_encode(tok):
    assert tok.encode_batch(SAMPLES) == [tok.encode(s) for s in SAMPLES]


def test_training_is_deterministic(shard_dir, tok_dir, tmp_path):
    run_train_tokenizer(shard_dir, TokenizerConfig(), DataConfig(), VOCAB, tmp_path, model_max_length=128)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).read_bytes() == (tok_dir / name).read_bytes()


def test_config_vocab_size_wins_over_the_model_vocab(shard_dir, tmp_path):
    summary = run_train_tokenizer(shard_dir, TokenizerConfig(vocab_size=300), DataConfig(tokenizer_train_size=15),
                                  VOCAB, tmp_path)
    assert summary["vocab_size"] == 300 == LmcoreTokenizer.load(tmp_path).vocab_size
    assert summary["sample_records"] == 15


def test_sample_is_bounded_and_spread_over_all_shards(shard_dir):
    batches = list(sample_texts(shard_dir, sample_size=10, batch_rows=16))
    assert all(isinstance(b, list) for b in batches)
    pieces = [p for b in batches for p in b]
    # 160 records, every 16th: 10 records, 5 from each shard; chat records are split at special tokens.
    assert 10 <= len(pieces) < 10 * 12
    assert not any(t in p for p in pieces for t in chat.SPECIAL_TOKENS)
    full = [p for b in sample_texts(shard_dir, sample_size=1000) for p in b]
    assert set(pieces) <= set(full)
    assert pieces[-1] in full[len(full) // 2:]  # the sample reaches the second shard


def test_training_without_train_shards_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no train"):
        run_train_tokenizer(tmp_path, TokenizerConfig(), DataConfig(), VOCAB, tmp_path / "out")


def test_folder_declares_what_transformers_needs(tok_dir):
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (chat.BOS, chat.EOS, chat.PAD)
    assert config["chat_template"] == chat.DEFAULT_CHAT_TEMPLATE
    assert config["model_max_length"] == 128


@pytest.mark.parametrize("text", SAMPLES)
def test_transformers_encodes_identically(tok, hf, text):
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf.encode(text) == tok.encode(text, add_special_tokens=True)
    ids = tok.encode(text)
    assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids)
    assert hf.decode(ids) == tok.decode(ids, skip_special_tokens=False)


def test_transformers_knows_the_special_tokens(tok, hf):
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    assert set(hf.all_special_tokens) == set(chat.SPECIAL_TOKENS)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_transformers_renders_the_chat_template_exactly(tok, hf, conversation, generation_prompt):
    mine = tok.apply_chat_template(conversation, add_generation_prompt=generation_prompt)
    theirs = hf.apply_chat_template(conversation, add_generation_prompt=generation_prompt, tokenize=False)
    assert mine == theirs
    ids = hf.apply_chat_template(conversation, add_generation_prompt=generation_prompt, tokenize=True,
                                 return_dict=False)
    assert list(ids) == tok.apply_chat_template(conversation, add_generation_prompt=generation_prompt, tokenize=True)


def test_custom_chat_template_from_config_is_saved_and_rendered_by_transformers(shard_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    template = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
    run_train_tokenizer(shard_dir, TokenizerConfig(chat_template=template), DataConfig(tokenizer_train_size=20),
                        300, tmp_path)
    tok = LmcoreTokenizer.load(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    rendered = tok.apply_chat_template(CONVERSATIONS[1], add_generation_prompt=True)
    assert rendered.startswith("<|system|>Be brief.<|end|>")
    assert rendered == hf.apply_chat_template(CONVERSATIONS[1], add_generation_prompt=True, tokenize=False)


def test_save_pretrained_round_trips(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = LmcoreTokenizer.load(tmp_path)
    assert again.encode(SAMPLES[3]) == tok.encode(SAMPLES[3])
    assert again.chat_template == tok.chat_template and again.vocab_size == tok.vocab_size


def test_loading_a_folder_without_tokenizer_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="tokenizer.json"):
        LmcoreTokenizer.load(tmp_path)


def test_sample_takes_every_kth_record_across_shards(shard_dir):
    import re

    import pyarrow.parquet as pq

    from lmcore.data.tokenizer import record_text

    rows = [r for f in sorted(shard_dir.glob("train-*.parquet")) for r in pq.read_table(f).to_pylist()]
    stats = {}
    pieces = [p for b in sample_texts(shard_dir, sample_size=5, batch_rows=7, stats=stats) for p in b]
    expected = [record_text(r["kind"], r["text"], r["messages"], None) for r in rows[::32]]  # 160 rows / 5
    specials = re.compile("|".join(re.escape(t) for t in chat.SPECIAL_TOKENS))
    assert stats["records"] == 5
    assert "".join(pieces) == "".join(specials.sub("", t) for t in expected)
