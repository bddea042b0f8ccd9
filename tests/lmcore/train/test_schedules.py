
import pytest

from lmcore.train.schedules import ScheduleSpec, lr_multiplier, run_progress


def curve(spec, total):
    return [lr_multiplier(spec, step / total, step, total) for step in range(total)]


def test_cosine_warms_up_linearly_then_decays_to_the_floor():
    spec = ScheduleSpec("cosine_with_warmup", warmup_steps=10, min_lr_ratio=0.1)
    lrs = curve(spec, 100)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert max(lrs) == pytest.approx(1.0, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))          # monotone decay
    assert lr_multiplier(spec, 1.0, 100, 100) == pytest.approx(0.1)  # ends on the floor
    assert min(lrs) >= 0.1


def test_warmup_ratio_gives_a_nonzero_first_step():
    spec = ScheduleSpec("cosine_with_warmup", warmup_ratio=0.1)
    lrs = curve(spec, 100)
    assert 0 < lrs[0] <= 0.1 + 1e-9
    assert lrs[9] == pytest.approx(1.0)


def test_restarts_return_to_peak_num_cycles_times():
    spec = ScheduleSpec("cosine_with_restarts", num_cycles=3, min_lr_ratio=0.0)
    lrs = curve(spec, 300)
    peaks = [i for i in range(1, 299) if lrs[i] > lrs[i - 1] + 0.5]
    assert len(peaks) == 2                       # two jumps back up -> three cycles
    assert lr_multiplier(spec, 1.0, 300, 300) == 0.0


def test_linear_and_constant_schedules():
    lin = ScheduleSpec("linear", min_lr_ratio=0.2)
    assert lr_multiplier(lin, 0.5, 50, 100) == pytest.approx(0.6)
    const = ScheduleSpec("constant_with_warmup", warmup_steps=4, min_lr_ratio=0.2)
    assert lr_multiplier(const, 0.99, 99, 100) == 1.0
    assert lr_multiplier(const, 0.0, 1, 100) == pytest.approx(0.5)


def test_time_budget_drives_progress_so_the_decay_finishes_when_time_is_up():
    # 10 of an estimated 1000 steps done, but 100% of the wall-clock budget spent.
    assert run_progress(10, 1000, elapsed_s=60.0, max_time_s=60.0) == 1.0
    assert run_progress(10, None, elapsed_s=30.0, max_time_s=60.0) == pytest.approx(0.5)
    spec = ScheduleSpec("cosine_with_warmup", warmup_ratio=0.0, min_lr_ratio=0.0)
    assert lr_multiplier(spec, run_progress(10, None, 60.0, 60.0), 10, None) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(spec, 0.5, 10, None) == pytest.approx(0.5)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="scheduler_type"):
        lr_multiplier(ScheduleSpec("exponential"), 0.5, 1, 10)
