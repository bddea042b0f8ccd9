"""Shared helpers for the pipeline tests: a generated corpus and a tiny config.

The corpus is generated (no dependency on /work/shared): pseudo-verse from a
fixed word list, plus two broken lines so validation has something to report.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from lmcore.config import PipelineConfig

WORDS = ("thou art the king of night and day my lord good sir what light through yonder window breaks "
         "it is the east and juliet is the sun arise fair sun and kill the envious moon who is already "
         "sick and pale with grief that thou her maid art far more fair than she").split()


def write_corpus(path: Path, records: int = 120, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(records):
        speaker = rng.choice(["ROMEO", "JULIET", "NURSE", "FRIAR"])
        verse = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 90)))
        lines.append(json.dumps({"text": f"{speaker}:\n{verse}.", "chunk": i}))
    lines.insert(7, '{"text": "broken')
    lines.insert(40, '{"no_text": 1}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(corpus: Path, store: Path, models: Path, **sections: dict[str, Any]) -> PipelineConfig:
    raw: dict[str, Any] = {
        "data": {"training_data_path": [str(corpus)], "eval_split": 0.1},
        "tokenizer": {"vocab_size": 300},
        "model": {"config_preset": "custom",
                  "custom": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                             "intermediate_size": 64, "seq_length": 32}},
        "training": {"batch_size": 4, "max_steps": 3, "log_every": 1, "eval_every": 100, "eval_batches": 2,
                     "checkpoint_every": 100, "sample_max_new_tokens": 4},
        "precision": {"dtype": "fp32", "use_mixed_precision": False},
        "tracking": {"enabled": False},
        "paths": {"store": str(store), "models": str(models), "mlflow": str(store.parent / "mlflow")},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return PipelineConfig.from_dict(raw)


def statuses(records: dict[str, Any]) -> dict[str, str]:
    return {stage: rec["status"] for stage, rec in records.items() if not stage.startswith("_")}


def tiny_registered_model(models_dir: Path, name: str = "tiny") -> str:
    """Save an untrained tiny Transformer + a small BPE tokenizer with ModelManager; returns the id."""
    import torch
    from tokenizers import pre_tokenizers, trainers

    from lmcore import ModelManager
    from lmcore.data import chat_template as chat
    from lmcore.config import ModelConfig
    from lmcore.model import Transformer
    from lmcore.data.tokenizer import LmcoreTokenizer, new_bpe_tokenizer

    tok = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(chat.SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 5, trainer=trainer)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                    intermediate_size=64, seq_length=64))
    return ModelManager(models_dir).save_model(model, LmcoreTokenizer(tok), {"name": name})
