"""The task modules' key functions: each key follows exactly what its stage depends on."""

from __future__ import annotations

import os
import shutil

from tasks import _common, evaluate, register, tokenizer, train, validate
from tests.flows.pipeline_fixtures import tiny_config, write_corpus


def _cfg(tmp_path, **sections) -> dict:
    corpus = tmp_path / "c.jsonl"
    if not corpus.exists():
        write_corpus(corpus, records=10)
    return tiny_config(corpus, tmp_path / "store", tmp_path / "models", **sections).model_dump(mode="json")


def test_validate_key_follows_file_content_not_its_name_or_mtime(tmp_path):
    config = _cfg(tmp_path)
    a = tmp_path / "c.jsonl"
    b = tmp_path / "renamed.jsonl"
    shutil.copy(a, b)
    os.utime(b, (1, 1))
    key = validate.key({"files": [str(a)], "eval_files": [], "config": config})
    assert key == validate.key({"files": [str(b)], "eval_files": [], "config": config})
    b.write_text(b.read_text().replace("thou", "you", 1))
    assert key != validate.key({"files": [str(b)], "eval_files": [], "config": config})
    assert key != validate.key({"files": [str(a)], "eval_files": [], "config": _cfg(tmp_path, data={"eval_split": 0.2})})


def test_train_key_ignores_tracking_and_paths_but_follows_training_and_the_tokenizer(tmp_path):
    def key(config, tok="t1"):
        return train.key({"tokens": [{"key": "k1"}], "tokenizer": {"key": tok}, "model_config": {"hidden_size": 32},
                          "config": config})

    base = key(_cfg(tmp_path))
    assert base == key(_cfg(tmp_path, tracking={"enabled": True, "registered_model_name": "other"}))
    assert base == key(_cfg(tmp_path, paths={"models": str(tmp_path / "elsewhere")}))
    assert base != key(_cfg(tmp_path, training={"learning_rate": 1e-2}))
    assert base != key(_cfg(tmp_path), tok="t2")


def test_train_key_ignores_what_only_logging_and_evaluate_read(tmp_path):
    """A new sample prompt or log interval must not retrain; evaluate's key still follows the prompts."""
    def keys(**training):
        cfg = _cfg(tmp_path, training=training)
        params = {"tokens": [{"key": "k1"}], "tokenizer": {"key": "t1"}, "model_config": {"hidden_size": 32},
                  "config": cfg}
        return train.key(params), evaluate.key({**params, "train": {"key": train.key(params)}})

    train_base, eval_base = keys()
    train_new, eval_new = keys(log_every=3, sample_prompts=["HAMLET."], sample_max_new_tokens=9)
    assert train_new == train_base
    assert eval_new != eval_base
    assert keys(eval_every=7)[0] != train_base  # when to evaluate decides the best checkpoint


def test_tokenizer_key_follows_vocab_size_and_register_key_the_model_name(tmp_path):
    shards = {"key": "s1"}
    cfg = _cfg(tmp_path)
    assert tokenizer.key({"shards": shards, "vocab_size": 300, "config": cfg}) != \
        tokenizer.key({"shards": shards, "vocab_size": 400, "config": cfg})
    lineage = {"train": "k"}
    named = _cfg(tmp_path, tracking={"registered_model_name": "b"})
    assert register.key({"lineage": lineage, "models_dir": "/m", "config": cfg}) != \
        register.key({"lineage": lineage, "models_dir": "/m", "config": named})


def test_prefect_cache_key_is_the_store_key_scoped_to_the_store_root(tmp_path):
    params = {"shards": {"key": "s1"}, "vocab_size": 300, "config": _cfg(tmp_path), "store": str(tmp_path / "a")}
    cache_key = _common.cache_key_fn(tokenizer.key, "tokenizer")
    first = cache_key(None, params)
    assert first.startswith(f"tokenizer-{tokenizer.key(params)}-")
    assert first != cache_key(None, {**params, "store": str(tmp_path / "b")})
    assert first == cache_key(None, {**params, "refresh": True})


def test_stage_version_is_read_from_source_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; from tasks._common import stage_version; v = stage_version('lmcore.train.stage'); "
            "print(v, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False" and out[0] == __import__("lmcore.train.stage", fromlist=["x"]).STAGE_VERSION
