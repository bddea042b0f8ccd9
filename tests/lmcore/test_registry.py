"""ModelManager: save/load round trip, listing, ids, integrity checks, deletion."""

import json
import re

import pytest
import torch
from tokenizers import pre_tokenizers, trainers

from lmcore import ModelManager
from lmcore.data import chat_template as chat
from lmcore.config import ModelConfig
from lmcore.errors import CheckpointError, ModelNotFoundError
from lmcore.model import Transformer
from lmcore.data.tokenizer import LmcoreTokenizer, new_bpe_tokenizer

TINY = ModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                   intermediate_size=64, seq_length=32)


@pytest.fixture(scope="module")
def tokenizer():
    tok = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(chat.SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["to be or not to be, that is the question"] * 20, trainer=trainer)
    return LmcoreTokenizer(tok)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Transformer(TINY)


def test_save_then_load_returns_identical_logits_tokenizer_and_optimizer_state(tmp_path, model, tokenizer):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 300, (1, 8))).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    manager = ModelManager(tmp_path / "models")
    model_id = manager.save_model(model, tokenizer, {"name": "shakes", "eval_metrics": {"eval_loss": 3.2}},
                                  optimizer=opt, scheduler=sched)
    assert re.fullmatch(r"shakes-\d{8}-\d{6}-[0-9a-f]{6}", model_id)
    loaded, tok, meta, opt_state, sched_state = manager.load_model(model_id)
    ids = torch.randint(0, 300, (2, 10))
    torch.testing.assert_close(loaded(ids), model.eval()(ids))
    assert tok.encode("to be or not") == tokenizer.encode("to be or not")
    assert meta["parameters"] == TINY.num_parameters() and meta["eval_metrics"] == {"eval_loss": 3.2}
    assert set(opt_state) == {"state", "param_groups"} and sched_state["last_epoch"] == 0
    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    opt2.load_state_dict(opt_state)  # a state dict the caller can restore


def test_list_models_reports_id_name_parameters_size_created_in_creation_order(tmp_path, model, tokenizer):
    manager = ModelManager(tmp_path)
    first = manager.save_model(model, tokenizer, {"name": "a"}, model_id="a-20260101-000000-aaaaaa")
    second = manager.save_model(model, None, {"name": "b"})
    rows = manager.list_models()
    assert [r["id"] for r in rows] == [first, second]
    for row in rows:
        assert {"id", "name", "parameters", "size_mb", "created"} <= set(row)
        assert row["size_mb"] > 0 and row["parameters"] == TINY.num_parameters()
    assert manager.resolve_id("latest") == second and manager.resolve_id("a-2026") == first


def test_corrupted_weights_raise_checkpoint_error_naming_the_file(tmp_path, model, tokenizer):
    manager = ModelManager(tmp_path)
    model_id = manager.save_model(model, tokenizer, {})
    weights = tmp_path / model_id / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors.*sha256 mismatch"):
        manager.load_model(model_id)


def test_metadata_is_readable_json_with_lineage_and_version(tmp_path, model, tokenizer):
    manager = ModelManager(tmp_path)
    model_id = manager.save_model(model, tokenizer, {"lineage": {"train": "k1"}, "config": {"x": 1}})
    meta = json.loads((tmp_path / model_id / "metadata.json").read_text())
    assert meta["lineage"] == {"train": "k1"} and meta["lmcore_version"]
    assert set(meta["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}


def test_delete_removes_the_model_and_unknown_ids_are_model_not_found(tmp_path, model):
    manager = ModelManager(tmp_path)
    model_id = manager.save_model(model, None, {})
    manager.delete_model(model_id)
    assert manager.list_models() == []
    with pytest.raises(ModelNotFoundError, match="no model 'nope'"):
        manager.load_model("nope")
