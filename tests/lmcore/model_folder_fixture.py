"""A real, tiny ``models/<id>/`` folder (ModelManager layout) for tracking, pyfunc and export tests."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import pre_tokenizers, trainers

from lmcore.data import chat_template as chat
from lmcore.config import ModelConfig
from lmcore.model import Transformer
from lmcore.models_dir import ModelManager
from lmcore.data.tokenizer import LmcoreTokenizer, new_bpe_tokenizer

TINY = ModelConfig(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                   intermediate_size=64, seq_length=64)
TEXT = ["ROMEO: But soft, what light through yonder window breaks?",
        "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
        "HAMLET: To be, or not to be, that is the question."]


def tiny_tokenizer() -> LmcoreTokenizer:
    tok = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=TINY.vocab_size, special_tokens=list(chat.SPECIAL_TOKENS),
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT * 20, trainer=trainer)
    return LmcoreTokenizer(tok)


def make_model_folder(models_root: Path, seed: int = 0, name: str = "tiny") -> Path:
    """Save a randomly initialised tiny model + tokenizer with ModelManager; returns ``models/<id>``."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    model = Transformer(TINY.model_copy(update={"vocab_size": tokenizer.vocab_size}))
    model_id = ModelManager(models_root).save_model(model, tokenizer, {"name": name, "seed": seed})
    return Path(models_root) / model_id
