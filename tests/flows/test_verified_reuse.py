"""A stored output changed after it was written is never used as it is: it is rebuilt, and said so.

The modifications keep each file's size, so only the content (and the modification time) tells:
a Parquet shard with a flipped byte, a token shard whose ids stay in range, a tokenizer with two
vocabulary entries swapped. A Prefect cache hit skips the task body, so these also check the
flow's own look at the store.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from flows import cli
from flows.pipeline import pipeline
from lmcore.store import Store
from tests.flows.pipeline_fixtures import statuses, tiny_config, write_corpus


@pytest.fixture
def trained(tmp_path):
    cfg = tiny_config(write_corpus(tmp_path / "corpus.jsonl", seed=11), tmp_path / "store", tmp_path / "models",
                      training={"max_steps": 2})
    return cfg, pipeline(cfg)


def test_modified_parquet_token_and_tokenizer_files_are_rebuilt_with_a_warning_naming_each(trained, caplog,
                                                                                         tmp_path):
    cfg, first = trained
    shard = Path(first["shard"]["dir"]) / "train-00000.parquet"
    [tokens] = [Path(d) / "train-00000.ids.npy" for d in first["pretokenize"]["dir"]
                if (Path(d) / "train-00000.ids.npy").is_file()]
    tokenizer = Path(first["tokenizer"]["dir"]) / "tokenizer.json"
    originals = {p: p.read_bytes() for p in (shard, tokens, tokenizer)}

    data = bytearray(originals[shard])
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a compressed page
    shard.write_bytes(bytes(data))
    ids = np.load(tokens)
    ids[:2] = ids[1::-1].copy()  # two ids swapped: still valid ids, no longer the text
    np.save(tokens, ids)
    by_id = {v: k for k, v in json.loads(originals[tokenizer])["model"]["vocab"].items()}
    text = originals[tokenizer].decode("utf-8")
    for token, old, new in ((by_id[100], 100, 101), (by_id[101], 101, 100)):  # two entries swap ids: same size
        entry = f"{json.dumps(token, ensure_ascii=False)}: {old},"
        assert text.count(entry) == 1, entry
        text = text.replace(entry, f"{json.dumps(token, ensure_ascii=False)}: {new},")
    tokenizer.write_text(text, encoding="utf-8")
    assert all(len(p.read_bytes()) == len(v) for p, v in originals.items())

    with caplog.at_level(logging.WARNING, logger="lmcore.store"):
        again = pipeline(cfg)
    for path in (shard, tokens, tokenizer):
        assert str(path) in caplog.text, f"no warning names {path}"
        assert path.read_bytes() == originals[path]  # rebuilt, byte for byte what was stored before
    assert statuses(again)["shard"] == "ran" and statuses(again)["tokenizer"] == "ran"
    assert statuses(again)["pretokenize"] == "ran"
    assert statuses(again)["train"] == "cached"  # the rebuilt inputs are the same: nothing below reruns


def test_store_verify_lists_a_change_the_cheap_check_cannot_see_and_verify_rebuilds_it(trained, capsys):
    cfg, first = trained
    shard = Path(first["shard"]["dir"]) / "eval-00000.parquet"
    original, stat = shard.read_bytes(), shard.stat()
    data = bytearray(original)
    data[-100] ^= 0x01
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # bit rot: same size, same mtime
    store = Store(cfg.paths.store)
    assert store.check("shards", first["shard"]["key"]) == []  # size and mtime cannot tell

    config = Path(cfg.paths.store).parent / "config.yaml"
    config.write_text(cfg.to_yaml())
    capsys.readouterr()
    assert cli.main(["store", "verify", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"CHANGED  {shard}" in out and "1 file(s) changed" in out

    assert statuses(pipeline(cfg))["shard"] == "cached"  # without --verify the cheap check trusts it
    assert statuses(pipeline(cfg, verify=True))["shard"] == "ran"
    assert shard.read_bytes() == original
    assert cli.main(["store", "verify", str(config)]) == 0
