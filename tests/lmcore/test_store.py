"""The store: content keys, atomic publication, manifests, refresh swaps, stale temp dirs."""

import json
import os
import subprocess
import sys
import time

import pytest

from lmcore.errors import StoreError
from lmcore.store import MANIFEST, Store, file_fingerprint, stage_key


def _writer(text="hello"):
    def fn(out):
        (out / "a.txt").write_text(text)
        (out / "sub").mkdir()
        (out / "sub" / "b.bin").write_bytes(b"\x00\x01")
        return {"records": 2}
    return fn


def test_stage_key_changes_with_each_ingredient_and_ignores_dict_order():
    base = stage_key("shard", ["k1"], {"a": 1, "b": 2}, "1")
    assert base == stage_key("shard", ["k1"], {"b": 2, "a": 1}, "1")
    assert base != stage_key("validate", ["k1"], {"a": 1, "b": 2}, "1")
    assert base != stage_key("shard", ["k2"], {"a": 1, "b": 2}, "1")
    assert base != stage_key("shard", ["k1"], {"a": 1, "b": 3}, "1")
    assert base != stage_key("shard", ["k1"], {"a": 1, "b": 2}, "2")


def test_file_fingerprint_follows_content_not_path_or_mtime(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"text": "x"}\n')
    b.write_text('{"text": "x"}\n')
    os.utime(b, (1, 1))
    assert file_fingerprint(a) == file_fingerprint(b)
    b.write_text('{"text": "y"}\n')  # same size, different bytes
    assert file_fingerprint(a) != file_fingerprint(b)


def test_build_writes_manifest_with_sha256_and_lineage_then_reuses_it(tmp_path):
    store = Store(tmp_path)
    out, computed = store.build("shard", "k" * 20, _writer(), inputs={"validate": "v1"},
                                config={"x": 1}, code_version="3")
    assert computed and out.dir == tmp_path / "shard" / ("k" * 20)
    manifest = json.loads((out.dir / MANIFEST).read_text())
    assert manifest["inputs"] == {"validate": "v1"} and manifest["code_version"] == "3"
    assert manifest["summary"] == {"records": 2}
    assert [f["name"] for f in manifest["files"]] == ["a.txt", "sub/b.bin"]
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])
    calls = []
    again, computed = store.build("shard", "k" * 20, lambda d: calls.append(d) or {})
    assert not computed and calls == [] and again.manifest == manifest
    assert store.verify("shard", "k" * 20) == []
    (out.dir / "a.txt").write_text("tampered")
    assert store.verify("shard", "k" * 20) == ["a.txt"]


def test_failing_stage_leaves_no_directory_that_looks_complete(tmp_path):
    store = Store(tmp_path)

    def boom(out):
        (out / "partial").write_text("x")
        raise ValueError("stage broke")

    with pytest.raises(ValueError, match="stage broke"):
        store.build("train", "abc", boom)
    assert store.get("train", "abc") is None
    assert [p.name for p in (tmp_path / "train").iterdir()] == []


def test_killed_writer_leaves_only_tmp_dir_which_next_run_cleans(tmp_path):
    code = ("import os, sys; from lmcore.store import Store\n"
            "def fn(out):\n    (out / 'half').write_text('x'); os._exit(9)\n"
            f"Store({str(tmp_path)!r}).build('tokens', 'kk', fn)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd())
    assert proc.returncode == 9
    left = [p.name for p in (tmp_path / "tokens").iterdir()]
    assert len(left) == 1 and left[0].startswith(".tmp-kk-")
    store = Store(tmp_path)
    assert store.get("tokens", "kk") is None
    out, computed = store.build("tokens", "kk", _writer())
    assert computed
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == ["kk"]


def test_live_writers_tmp_dir_is_kept_until_it_is_old(tmp_path):
    store = Store(tmp_path, stale_after=3600)
    tmp = tmp_path / "train" / ".tmp-x-1234"
    tmp.mkdir(parents=True)
    (tmp / ".owner.json").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                                 "started": time.time()}))
    assert store.clean_stale("train") == []
    os.utime(tmp, (time.time() - 7200, time.time() - 7200))
    assert store.clean_stale("train") == [tmp]


def test_refresh_replaces_existing_output_with_new_contents(tmp_path):
    store = Store(tmp_path)
    store.build("tokenizer", "same", _writer("old"))
    out, computed = store.build("tokenizer", "same", _writer("new"), refresh=True)
    assert computed and (out.dir / "a.txt").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "tokenizer").iterdir()) == ["same"]


def test_concurrent_finisher_wins_and_ours_is_discarded(tmp_path):
    store = Store(tmp_path)

    def racer(out):
        # Another run publishes the same key while we are still writing.
        Store(tmp_path).build("shard", "race", _writer("theirs"))
        (out / "a.txt").write_text("ours")
        return {}

    out, _ = store.build("shard", "race", racer)
    assert (out.dir / "a.txt").read_text() == "theirs"
    assert sorted(p.name for p in (tmp_path / "shard").iterdir()) == ["race"]


def test_unreadable_manifest_is_a_store_error_naming_the_file(tmp_path):
    (tmp_path / "eval" / "k").mkdir(parents=True)
    (tmp_path / "eval" / "k" / MANIFEST).write_text("{not json")
    with pytest.raises(StoreError, match="eval/k/manifest.json"):
        Store(tmp_path).get("eval", "k")
