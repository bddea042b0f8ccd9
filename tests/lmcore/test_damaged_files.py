"""Damaged files give one line naming the file (and the stage), never a raw library traceback."""

from __future__ import annotations

import pickle

import pytest

from flows import cli
from lmcore.data.pretokenize import pretokenize_file
from lmcore.errors import CheckpointError, StoreError
from lmcore.models_dir import ModelManager
from lmcore.data.tokenizer import LmcoreTokenizer
from tests.fixtures.text_shards import write_corpus
from tests.lmcore.model_folder_fixture import make_model_folder, tiny_tokenizer


def test_a_corrupt_parquet_shard_names_the_file_and_the_stage(tmp_path):
    shard = write_corpus(tmp_path / "shards", shards=1, with_chat=False)[0]
    data = bytearray(shard.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0x5A  # garbage in the middle of the compressed column data
    shard.write_bytes(bytes(data))
    tok_dir = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(tok_dir)
    with pytest.raises(StoreError) as caught:
        pretokenize_file(shard, LmcoreTokenizer.load(tok_dir), tmp_path / "out")
    message = str(caught.value)
    assert message.startswith(f"{shard}: the pretokenize stage cannot read this Parquet shard")
    assert "\n" not in message and "--verify" in message


def test_a_corrupt_tokenizer_json_names_the_file(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path)
    path = tmp_path / "tokenizer.json"
    path.write_text(path.read_text()[: len(path.read_text()) // 2])  # cut in half
    with pytest.raises(StoreError) as caught:
        LmcoreTokenizer.load(tmp_path)
    assert str(caught.value).startswith(f"{path}: not a valid tokenizer.json") and "\n" not in str(caught.value)


class Payload:  # what an attacker (or an old tool) might pickle into optimizer.pt
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickled_optimizer_state_is_refused_by_name_and_generation_never_opens_it(tmp_path, capsys):
    folder = make_model_folder(tmp_path / "models")
    (folder / "optimizer.pt").write_bytes(pickle.dumps({"state": Payload()}))
    manager = ModelManager(tmp_path / "models")
    with pytest.raises(CheckpointError) as caught:
        manager.load_model(folder.name, verify=False)
    message = str(caught.value)
    assert message.startswith(f"{folder / 'optimizer.pt'}: refused to load") and "\n" not in message
    assert "pwned" not in capsys.readouterr().out
    model, tokenizer, meta = manager.load_for_inference(folder.name, verify=False)
    assert meta["id"] == folder.name
    assert cli.main(["generate", folder.name, "--prompt", "ROMEO:", "--max-new-tokens", "3", "--seed", "0",
                     "--models-dir", str(tmp_path / "models")]) == 0
    assert "pwned" not in capsys.readouterr().out
