"""Byte-level BPE tokenizer: training from Parquet shards, and the ``LmcoreTokenizer`` wrapper.

Why byte-level BPE with HF ``tokenizers``: every string round-trips (no unknown
token), training takes seconds, and the saved ``tokenizer.json`` is what
``transformers.AutoTokenizer`` loads, so an exported model needs no conversion.

Training streams a sample of ``data.tokenizer_train_size`` train records, spread
evenly over the train shards (every k-th record), through
``train_from_iterator``: the corpus is never held in memory.  Chat records are
rendered with the chat template; special tokens are cut out of the training text
so the merges never learn pieces of ``<|user|>``.

The folder written by :func:`run_train_tokenizer` / :meth:`LmcoreTokenizer.save_pretrained`:
``tokenizer.json``, ``tokenizer_config.json`` (tokenizer_class
``PreTrainedTokenizerFast``, bos/eos/pad, ``chat_template``, ``model_max_length``) and
``special_tokens_map.json``.  Encoding with ``add_special_tokens=True`` prepends
``<|bos|>`` (a post-processor in ``tokenizer.json``, so transformers does the same);
pre-tokenisation adds bos/eos itself from ``tokenizer.add_bos/add_eos``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from lmcore.data import chat_template as chat
from lmcore.data.schema import reading_shard
from lmcore.config import DataConfig, TokenizerConfig
from lmcore.errors import DataFormatError, StoreError

STAGE_VERSION = "1"
UNLIMITED_LENGTH = int(1e30)  # what transformers writes for "no maximum length"
_SPECIAL_SPLIT = re.compile("|".join(re.escape(t) for t in chat.SPECIAL_TOKENS))


LMCORE_SPECIALS = {"bos": chat.BOS, "eos": chat.EOS, "pad": chat.PAD, "end_of_turn": chat.END_OF_TURN}
# End-of-turn markers of other model families, for a base model's own tokenizer (Llama 3, ChatML).
END_OF_TURN_MARKERS = (chat.END_OF_TURN, "<|eot_id|>", "<|im_end|>")


class LmcoreTokenizer:
    """A ``tokenizers.Tokenizer`` plus the chat template; the tokenizer every lmcore stage uses.

    ``specials`` names the bos/eos/pad/end-of-turn tokens: lmcore's own by default, a base model's
    (``<s>``, ``</s>`` ...) when the tokenizer came with it (:meth:`load` reads them from
    ``tokenizer_config.json``). bos and eos must exist; a missing pad is the eos, a missing
    end-of-turn marker is the eos.
    """

    def __init__(self, tokenizer: Tokenizer, chat_template: str | None = None,
                 model_max_length: int = UNLIMITED_LENGTH, specials: dict[str, str] | None = None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template or chat.DEFAULT_CHAT_TEMPLATE
        self.model_max_length = model_max_length
        self.specials = {**LMCORE_SPECIALS, **(specials or {})}
        missing = [self.specials[k] for k in ("bos", "eos") if tokenizer.token_to_id(self.specials[k]) is None]
        if missing:
            raise StoreError(f"tokenizer lacks the special tokens {missing}")

    def _id(self, role: str) -> int | None:
        return self.tokenizer.token_to_id(self.specials[role])

    # ------------------------------------------------------------------ ids
    @property
    def bos_id(self) -> int:
        return self._id("bos")

    @property
    def eos_id(self) -> int:
        return self._id("eos")

    @property
    def pad_id(self) -> int:
        found = self._id("pad")
        return self.eos_id if found is None else found

    @property
    def end_of_turn_id(self) -> int:
        for marker in (self.specials["end_of_turn"], *END_OF_TURN_MARKERS):
            found = self.tokenizer.token_to_id(marker)
            if found is not None:
                return found
        return self.eos_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> dict[str, int]:
        return {t: i for t in chat.SPECIAL_TOKENS if (i := self.tokenizer.token_to_id(t)) is not None}

    # ------------------------------------------------------------------ text <-> ids
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = False,
                            tokenize: bool = False) -> str | list[int]:
        text = chat.render(messages, self.chat_template, add_generation_prompt)
        return self.encode(text) if tokenize else text

    def chat_segments(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
        return chat.chat_segments(messages, self.chat_template, add_generation_prompt)

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, directory: str | Path) -> "LmcoreTokenizer":
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise StoreError(f"{path}: no tokenizer.json here")
        config_path = directory / "tokenizer_config.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        except ValueError as exc:
            raise StoreError(f"{config_path}: not valid JSON ({exc})") from None
        template = config.get("chat_template")
        jinja_file = directory / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        specials = {role: _token_text(config.get(f"{role}_token")) for role in ("bos", "eos", "pad")}
        return cls(read_tokenizer_file(path), template, int(config.get("model_max_length", UNLIMITED_LENGTH)),
                   {role: text for role, text in specials.items() if text})

    def save_pretrained(self, directory: str | Path) -> list[str]:
        """Write the transformers-loadable folder; returns the file names written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        pad = self.specials["pad"] if self._id("pad") is not None else self.specials["eos"]
        tokens = {"bos_token": self.specials["bos"], "eos_token": self.specials["eos"], "pad_token": pad}
        extra = [t for t in chat.SPECIAL_TOKENS if t not in tokens.values() and self.tokenizer.token_to_id(t) is not None]
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **tokens,
            "unk_token": None,
            "extra_special_tokens": extra,
            "chat_template": self.chat_template,
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": False,
            "padding_side": "right",
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                         encoding="utf-8")
        special_map = {**tokens, "additional_special_tokens": extra}
        (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
        return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def _token_text(value) -> str | None:
    """A special token as transformers writes it in tokenizer_config.json: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def read_tokenizer_file(path: str | Path) -> Tokenizer:
    """``tokenizers.Tokenizer.from_file`` with its parse errors as a :class:`StoreError` naming the file."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception with serde's message
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise StoreError(f"{path}: not a valid tokenizer.json ({first}); the file is damaged or not a "
                         "Hugging Face tokenizers file") from None


# ---------------------------------------------------------------------- training


def new_bpe_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE: ByteLevel pre-tokenizer (no prefix space) and decoder."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def record_text(kind: str, text: str | None, messages: str | None, template: str | None,
                source: str = "", line: int | None = None) -> str:
    """The text a Parquet record stands for: its ``text``, or its conversation rendered with the template."""
    if kind == "chat":
        try:
            parsed = json.loads(messages or "null")
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"messages is not JSON: {exc}", path=source, line=line) from None
        return chat.render(chat.check_messages(parsed, source, line), template)
    return text or ""


def train_shard_files(shard_dir: str | Path) -> list[Path]:
    files = sorted(Path(shard_dir).glob("train-*.parquet"))
    if not files:
        raise StoreError(f"{shard_dir}: no train-*.parquet shards to train the tokenizer on")
    return files


def sample_texts(shard_dir: str | Path, sample_size: int, template: str | None = None,
                 batch_rows: int = 2048, stats: dict[str, int] | None = None) -> Iterator[list[str]]:
    """Stream at most ``sample_size`` train records (every k-th, spread over all shards) as text batches.

    Special tokens are cut out: each batch holds the pieces of text between them.  ``stats``, when
    given, receives ``records`` (records taken) and ``utf8_bytes`` (their text size).
    """
    stats = stats if stats is not None else {}
    stats.update(records=0, utf8_bytes=0)
    files = train_shard_files(shard_dir)
    total = 0
    for f in files:
        with reading_shard(f, "tokenizer"):
            total += pq.ParquetFile(f).metadata.num_rows
    stride = max(1, -(-total // sample_size))
    taken = 0
    index = 0  # of the first row of the batch, over all shards
    for path in files:
        for batch in _batches(path, batch_rows):
            first = (-index) % stride  # rows index+first, +stride, ... are in the sample
            picked = np.arange(first, batch.num_rows, stride)[: sample_size - taken]
            index += batch.num_rows
            if not len(picked):
                continue
            out: list[str] = []
            for i in picked:  # row by row: batch.take/pa.array would import pandas in every worker
                row = batch.slice(int(i), 1).to_pydict()
                kind, text, messages, source, line = (row[c][0] for c in ("kind", "text", "messages", "source", "line"))
                rendered = record_text(kind, text, messages, template, source, line)
                stats["utf8_bytes"] += len(rendered.encode("utf-8"))
                out.extend(p for p in _SPECIAL_SPLIT.split(rendered) if p)
            taken += len(picked)
            stats["records"] = taken
            if out:
                yield out
            if taken >= sample_size:
                return


def _batches(path: Path, batch_rows: int) -> Iterator:
    """The shard's record batches; a damaged shard is a StoreError naming it (see ``reading_shard``)."""
    with reading_shard(path, "tokenizer"):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["kind", "text", "messages", "source", "line"])


def train_tokenizer(shard_dir: str | Path, vocab_size: int, min_frequency: int = 2, sample_size: int = 100_000,
                    chat_template: str | None = None, model_max_length: int = UNLIMITED_LENGTH,
                    stats: dict[str, int] | None = None) -> LmcoreTokenizer:
    """Train a byte-level BPE of ``vocab_size`` (special tokens included) on a streamed sample."""
    tok = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(chat.SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(sample_texts(shard_dir, sample_size, chat_template, stats=stats), trainer=trainer)
    bos = tok.token_to_id(chat.BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{chat.BOS} $A", pair=f"{chat.BOS} $A {chat.BOS} $B:1", special_tokens=[(chat.BOS, bos)])
    return LmcoreTokenizer(tok, chat_template, model_max_length)


def run_train_tokenizer(shard_dir: str | Path, tok_cfg: TokenizerConfig, data_cfg: DataConfig, vocab_size: int,
                        out_dir: str | Path, model_max_length: int | None = None) -> dict[str, Any]:
    """Stage ``tokenizer``: train on ``shard_dir``'s train shards and save the folder into ``out_dir``.

    ``vocab_size`` is the target (``tok_cfg.vocab_size`` wins when set); the returned summary holds the
    actual size, which is smaller when the sample has too few distinct merges.
    """
    target = tok_cfg.vocab_size or vocab_size
    stats: dict[str, int] = {}
    tok = train_tokenizer(shard_dir, target, tok_cfg.min_frequency, data_cfg.tokenizer_train_size,
                          tok_cfg.chat_template, model_max_length or UNLIMITED_LENGTH, stats)
    files = tok.save_pretrained(out_dir)
    return {"vocab_size": tok.vocab_size, "target_vocab_size": target, "special_tokens": tok.special_ids,
            "sample_records": stats["records"], "sample_utf8_bytes": stats["utf8_bytes"], "files": files}


def run_copy_tokenizer(base_dir: str | Path, tok_cfg: TokenizerConfig, model_vocab_size: int,
                       out_dir: str | Path) -> dict[str, Any]:
    """Stage ``tokenizer`` for a fine-tuning run: the base model's own tokenizer, trained on nothing.

    The base's tokenizer files are loaded (which checks them) and saved again; a configured
    ``tokenizer.chat_template`` replaces the base's. A tokenizer with more tokens than the model's
    embedding has rows is an error.
    """
    tok = LmcoreTokenizer.load(base_dir)
    if tok_cfg.chat_template:
        tok.chat_template = tok_cfg.chat_template
    if tok.vocab_size > model_vocab_size:
        raise StoreError(f"{Path(base_dir) / 'tokenizer.json'}: the base's tokenizer has {tok.vocab_size} tokens, "
                         f"its model {model_vocab_size} embedding rows")
    files = tok.save_pretrained(out_dir)
    return {"vocab_size": tok.vocab_size, "source": str(base_dir), "special_tokens": tok.special_ids, "files": files}
