"""The store: content keys, atomic publication, manifests, refresh swaps, work that survives, verified reuse."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def _kill_mid_build(root, stage, key, resumable=False):
    code = ("import os; from lmcore.store import Store\n"
            "def fn(out):\n    (out / 'half').write_text('x'); os._exit(9)\n"
            f"Store({str(root)!r}).build({stage!r}, {key!r}, fn, resumable={resumable})\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd())
    assert proc.returncode == 9


def test_killed_writer_leaves_its_work_dir_and_a_plain_stage_starts_it_afresh(tmp_path):
    _kill_mid_build(tmp_path, "tokens", "kk")
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == [".work-kk", ".work-kk.lock"]
    store = Store(tmp_path)
    assert store.get("tokens", "kk") is None
    seen = []
    out, computed = store.build("tokens", "kk", lambda d: seen.append(sorted(os.listdir(d))) or _writer()(d))
    assert computed and seen == [[]]  # not resumable: the dead writer's half file is not handed on
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == ["kk"]


def test_a_resumable_stage_gets_its_killed_predecessors_work_back(tmp_path):
    _kill_mid_build(tmp_path, "train", "kk", resumable=True)
    seen = []
    out, computed = Store(tmp_path).build("train", "kk", lambda d: seen.append(sorted(os.listdir(d))) or {},
                                          resumable=True)
    assert computed and seen == [["half"]]
    assert (out.dir / "half").read_text() == "x"


def test_a_failing_resumable_stage_keeps_its_work_and_refresh_starts_afresh(tmp_path):
    store = Store(tmp_path)
    seen = []

    def boom(out):
        seen.append(sorted(os.listdir(out)))
        (out / "checkpoint").write_text("step 20")
        raise ValueError("diverged")

    for refresh in (False, False, True):
        with pytest.raises(ValueError):
            store.build("train", "k1", boom, resumable=True, refresh=refresh)
    assert seen == [[], ["checkpoint"], []]  # kept for the retry; --refresh starts from nothing
    assert (tmp_path / "train" / ".work-k1" / "checkpoint").read_text() == "step 20"


HOLDER = """
import sys, time
from lmcore.locks import FileLock
lock = FileLock(sys.argv[1]); lock.acquire(); print("held", flush=True); time.sleep(600)
"""


def _hold(lock_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_writers_work_is_never_abandoned_whatever_its_age(tmp_path):
    store = Store(tmp_path)
    work = store.work_path("train", "old")
    (work / "checkpoints" / "step-00000020").mkdir(parents=True)
    (work / "checkpoints" / "step-00000020" / "model.safetensors").write_bytes(b"w" * 100)
    seven_hours_ago = time.time() - 7 * 3600
    for p in (work, work / "checkpoints", work / "checkpoints" / "step-00000020"):
        os.utime(p, (seven_hours_ago, seven_hours_ago))
    holder = _hold(store.lock_path("train", "old"))
    try:
        assert store.abandoned() == []
        store.build("train", "other", _writer())  # another key's build removes nothing
        assert work.is_dir()
    finally:
        holder.kill()
        holder.wait()
    [entry] = store.abandoned()  # its writer is dead now: abandoned, and says what it holds
    assert entry.path == work and entry.bytes == 100 and "1 checkpoint(s), newest step-00000020" in entry.what
    assert store.remove_abandoned(entry) and not work.exists()
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["other"]


def test_parsed_parts_of_a_live_run_are_kept_and_of_a_dead_one_freed(tmp_path):
    store = Store(tmp_path)
    parts = store.parts_path("validate", "k1")
    parts.mkdir(parents=True)
    (parts / "part-00000.arrow").write_bytes(b"p" * 64)
    holder = _hold(Path(f"{parts}.lock"))  # the run that orchestrates them
    try:
        assert store.abandoned() == []
    finally:
        holder.kill()
        holder.wait()
    [entry] = store.abandoned()
    assert entry.path == parts and entry.bytes == 64 and "parsed parts" in entry.what
    assert store.remove_abandoned(entry) and not parts.exists()


def test_a_second_builder_waits_for_the_live_writer_and_uses_its_output(tmp_path):
    store = Store(tmp_path)
    holder = _hold(store.lock_path("tokenizer", "kk"))
    messages, calls = [], []

    def finish_theirs():  # the other process finishes while we wait, then lets go of the lock
        time.sleep(0.5)
        Store(tmp_path)._publish("tokenizer", "kk", _prepared(tmp_path, "theirs"))
        holder.kill()
        holder.wait()

    import threading

    threading.Thread(target=finish_theirs).start()
    out, computed = store.build("tokenizer", "kk", lambda d: calls.append(d) or {}, on_wait=messages.append)
    assert not computed and calls == [] and (out.dir / "a.txt").read_text() == "theirs"
    assert len(messages) == 1 and f"pid {holder.pid}" in messages[0]


def _prepared(root, text):
    work = Store(root).work_path("tokenizer", "kk")
    work.mkdir(parents=True, exist_ok=True)
    (work / "a.txt").write_text(text)
    from lmcore.store import list_files

    (work / MANIFEST).write_text(json.dumps({"stage": "tokenizer", "key": "kk", "files": list_files(work)}))
    return work


def test_a_modified_output_is_rebuilt_and_the_warning_names_the_file(tmp_path, caplog):
    store = Store(tmp_path)
    out, _ = store.build("shards", "k", _writer("hello"))
    (out.dir / "a.txt").write_text("HELLO")  # same size, new bytes (and a new mtime)
    with caplog.at_level("WARNING", logger="lmcore.store"):
        again, computed = store.build("shards", "k", _writer("fresh"))
    assert computed and (again.dir / "a.txt").read_text() == "fresh"
    assert str(out.dir / "a.txt") in caplog.text
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["k"]


def test_a_modified_resumable_output_becomes_its_work_again(tmp_path):
    store = Store(tmp_path)
    out, _ = store.build("train", "k", _writer("final weights"), resumable=True)
    (out.dir / "sub" / "b.bin").write_bytes(b"\x09\x09")
    seen = []
    again, computed = store.build("train", "k", lambda d: seen.append((d / "a.txt").read_text()) or {},
                                  resumable=True)
    assert computed and seen == ["final weights"]  # handed back to continue from, not thrown away


def test_cheap_check_trusts_size_and_mtime_deep_check_reads_every_byte(tmp_path):
    store = Store(tmp_path)
    out, _ = store.build("tokens", "k", _writer("hello"))
    path = out.dir / "a.txt"
    st = path.stat()
    path.write_text("HELLO")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # someone restored the mtime
    assert store.check("tokens", "k") == []
    assert store.check("tokens", "k", deep=True) == ["a.txt"]
    calls = []
    _, computed = store.build("tokens", "k", lambda d: calls.append(1) or _writer()(d), deep_verify=True)
    assert computed and calls == [1]


def test_a_copied_store_with_new_mtimes_is_reused_and_its_manifest_learns_them(tmp_path):
    store = Store(tmp_path)
    out, _ = store.build("tokens", "k", _writer("hello"))
    later = time.time() + 100
    os.utime(out.dir / "a.txt", (later, later))
    assert store.check("tokens", "k") == []  # the sha256 still matches: not modified
    recorded = {f["name"]: f["mtime_ns"] for f in store.get("tokens", "k").manifest["files"]}
    assert recorded["a.txt"] == (out.dir / "a.txt").stat().st_mtime_ns
    _, computed = store.build("tokens", "k", lambda d: 1 / 0)
    assert not computed


def test_refresh_replaces_existing_output_with_new_contents(tmp_path):
    store = Store(tmp_path)
    store.build("tokenizer", "same", _writer("old"))
    out, computed = store.build("tokenizer", "same", _writer("new"), refresh=True)
    assert computed and (out.dir / "a.txt").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "tokenizer").iterdir()) == ["same"]


def test_two_threads_building_one_key_compute_it_once(tmp_path):
    import threading

    calls, results = [], []

    def slow(out):
        calls.append(1)
        time.sleep(0.3)
        return _writer()(out)

    threads = [threading.Thread(target=lambda: results.append(Store(tmp_path).build("shards", "k", slow)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and sorted(c for _, c in results) == [False, True]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["k"]


def test_unreadable_manifest_is_a_store_error_naming_the_file(tmp_path):
    (tmp_path / "eval" / "k").mkdir(parents=True)
    (tmp_path / "eval" / "k" / MANIFEST).write_text("{not json")
    with pytest.raises(StoreError, match="eval/k/manifest.json"):
        Store(tmp_path).get("eval", "k")


def test_a_clean_pipeline_run_leaves_no_work_dirs_or_lock_files_and_every_file_verifies(tmp_path):
    from flows.pipeline import pipeline
    from tests.flows.pipeline_fixtures import tiny_config, write_corpus

    cfg = tiny_config(write_corpus(tmp_path / "c.jsonl", seed=3), tmp_path / "store", tmp_path / "models")
    pipeline(cfg)
    leftovers = [p.name for stage in (tmp_path / "store").iterdir() for p in stage.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    store = Store(tmp_path / "store")
    assert len(store.entries()) >= 7 and all(store.verify(stage, key) == [] for stage, key in store.entries())
