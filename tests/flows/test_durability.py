"""What survives what: ``lmcore run`` as a real subprocess, stopped by real signals at real moments.

Each test kills, interrupts or races a run the way a user, a scheduler or a second run would,
then checks that nothing finished was lost, that the same command continues from the last
checkpoint (not from step 0), and that nothing outside lmcore's folders was touched.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from lmcore.train import checkpoint as ckpt
from tests.flows.durable_runs import (MAX_STEPS, checkpoint_steps, make_workspace, no_server_outlives, registry,
                                      stopped_step, wait_for)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    return tmp_path_factory.mktemp("prefect-home")


def _final_weights(ws) -> bytes:
    [out] = ws.outputs("train")
    return (out / "final" / "model.safetensors").read_bytes()


def test_ctrl_c_checkpoints_exits_130_and_the_same_command_resumes_there_to_the_same_weights(tmp_path,
                                                                                               prefect_home):
    ws = make_workspace(tmp_path / "a", prefect_home)
    proc = ws.start(LMCORE_TEST_STEP_SLEEP="0.03")
    wait_for(lambda: any(checkpoint_steps(w) for w in ws.work_dirs()), proc, what="the first checkpoint")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 15  # one step, one checkpoint and a clean exit: never a hang
    step = stopped_step(err)
    assert 20 <= step < MAX_STEPS
    assert f"resume with: lmcore run {ws.config} --no-sample" in err
    [work] = ws.work_dirs()
    assert step in checkpoint_steps(work)
    ckpt.verify_checkpoint(work / "checkpoints" / ckpt.step_dir_name(step))
    assert no_server_outlives(proc.pid)

    resumed = ws.run()
    assert resumed.returncode == 0, resumed.stderr
    summary = ws.train_summary()
    # Not a retrain from step 0: this session started at the stopped step and made only the rest.
    assert summary["resumed_from"] == f"checkpoints/{ckpt.step_dir_name(step)}"
    assert summary["start_step"] == step and summary["steps"] == MAX_STEPS
    assert "resumed at step" in resumed.stdout
    assert ws.work_dirs() == []

    straight = make_workspace(tmp_path / "b", prefect_home, corpus=ws.root / "corpus.jsonl")
    assert straight.run().returncode == 0
    assert straight.train_summary()["resumed_from"] is None
    assert _final_weights(ws) == _final_weights(straight)  # bitwise: the interruption changed nothing


def test_sigterm_exits_143_after_a_checkpoint_and_a_second_ctrl_c_exits_at_once(tmp_path, prefect_home):
    ws = make_workspace(tmp_path, prefect_home, tracking=False)
    proc = ws.start(LMCORE_TEST_STEP_SLEEP="0.03")
    wait_for(lambda: any(checkpoint_steps(w) for w in ws.work_dirs()), proc, what="the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    step = stopped_step(err)
    [work] = ws.work_dirs()
    assert step in checkpoint_steps(work)

    proc = ws.start(LMCORE_TEST_STEP_SLEEP="0.2")  # slow steps: the second signal must not wait for one
    wait_for(lambda: checkpoint_steps(work)[-1] > step, proc, what="training to go past the last stop")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - sent < 3, err
    assert "exiting now" in err
    assert ckpt.latest_good_checkpoint(work) is not None  # the last complete checkpoint is kept
    assert no_server_outlives(proc.pid)


def test_sigkill_anywhere_then_the_same_command_finishes_with_one_model_and_one_version(tmp_path, prefect_home):
    ws = make_workspace(tmp_path, prefect_home)
    rng = random.Random(20261129)
    # Moments a kill from outside would hit only by luck, then moments drawn at random.
    for kill_at in ("checkpoint:3", "model-copy", "register-alias"):
        proc = ws.start(LMCORE_TEST_STEP_SLEEP="0.01", LMCORE_TEST_KILL_AT=kill_at)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == -signal.SIGKILL, f"{kill_at}: {out}\n{err}"
        assert no_server_outlives(proc.pid), f"a Prefect API server outlived the kill at {kill_at}"
        if kill_at == "checkpoint:3":  # killed while writing step 60: 20 and 40 are complete
            [work] = ws.work_dirs()
            assert checkpoint_steps(work) == [20, 40]
        if kill_at == "model-copy":  # the run that followed resumed from step 40, not from 0
            summary = ws.train_summary()
            assert summary["resumed_from"] == "checkpoints/step-00000040" and summary["start_step"] == 40
    for _ in range(2):
        proc = ws.start(LMCORE_TEST_STEP_SLEEP="0.01")
        time.sleep(rng.uniform(0.5, 6.0))
        proc.kill()
        proc.wait()
        assert no_server_outlives(proc.pid)

    done = ws.run()
    assert done.returncode == 0, done.stderr
    models = [p.name for p in ws.models.iterdir() if not p.name.startswith(".")]
    assert len(models) == 1
    versions, aliases, runs = registry(ws)
    assert versions == ["1"] and aliases == {"champion": "1"}
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the killed runs were closed
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED", "FAILED"}

    gc = _lmcore(ws, "store", "gc", str(ws.config))
    assert gc.returncode == 0 and "half-written model copy" in gc.stdout  # the model-copy kill's orphan
    assert sorted(p.name for p in ws.models.iterdir()) == models
    again = ws.run()
    assert again.returncode == 0 and "ran" not in " ".join(ln.split()[1] for ln in again.stdout.splitlines()
                                                           if ln.split()[:1] and ln.split()[0] == "register")
    assert registry(ws)[0] == ["1"]


def test_a_second_run_never_touches_a_live_runs_work_even_aged_seven_hours(tmp_path, prefect_home):
    ws = make_workspace(tmp_path, prefect_home, tracking=False)
    first = ws.start(LMCORE_TEST_STEP_SLEEP="0.01")
    wait_for(lambda: any(checkpoint_steps(w) for w in ws.work_dirs()), first, what="the first checkpoint")
    first.send_signal(signal.SIGSTOP)  # alive (its lock held) but frozen for as long as the second run takes
    [work] = ws.work_dirs()
    seven_hours_ago = time.time() - 7 * 3600
    for path in [work, *work.rglob("*")]:
        os.utime(path, (seven_hours_ago, seven_hours_ago))
    try:
        second = ws.run("--set", "training.learning_rate=1e-3")  # another train key, same store and stage folder
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 0, second.stderr
    assert work.is_dir() and checkpoint_steps(work)
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    assert len(ws.outputs("train")) == 2 and ws.work_dirs() == []


def test_two_cold_runs_at_once_both_succeed_with_one_version_and_mlflow_usable(tmp_path):
    cold = tmp_path / "empty"
    ws = make_workspace(cold, cold / ".prefect-home")  # nothing exists yet: Prefect and MLflow start cold
    procs = [ws.start(LMCORE_TEST_STEP_SLEEP="0.01")]
    time.sleep(0.5)
    procs.append(ws.start(LMCORE_TEST_STEP_SLEEP="0.01"))
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{out}\n{err}"
    versions, aliases, runs = registry(ws)
    assert versions == ["1"] and aliases == {"champion": "1"}
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    assert len([p for p in ws.models.iterdir() if not p.name.startswith(".")]) == 1
    third = ws.run()
    assert third.returncode == 0 and "untracked" not in third.stderr


def _lmcore(ws, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ws.root, env=ws.env(),
                          capture_output=True, text=True, timeout=120)
