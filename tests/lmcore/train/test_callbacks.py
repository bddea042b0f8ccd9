import logging

from rich.console import Console

from lmcore.train.callbacks import CallbackList, LoggingCallback, RichProgressCallback


class Partial:
    def __init__(self):
        self.seen = []

    def on_log(self, step, metrics):
        self.seen.append(step)


def test_callback_list_calls_only_defined_methods_and_only_on_the_main_rank():
    cb = Partial()
    CallbackList([cb])("on_log", 3, {"loss": 1.0})
    CallbackList([cb])("on_eval", 3, {})               # Partial has no on_eval: skipped
    CallbackList([cb], is_main=False)("on_log", 4, {})
    assert cb.seen == [3]


def test_logging_callback_writes_one_line_per_event_with_an_eta_from_the_pace(caplog, monkeypatch):
    import lmcore.train.callbacks as callbacks

    clock = iter([100.0, 130.0])  # start, then 30 s for 10 steps: 50 steps left take 150 s
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    cb = LoggingCallback()
    with caplog.at_level(logging.INFO, logger="lmcore.train"):
        cb.on_train_start({"total_steps": 60, "start_step": 0})
        cb.on_log(10, {"loss": 2.5, "lr": 1e-3, "tokens_per_sec": 1234.0, "ignored": 1})
        cb.on_checkpoint(10, "/x/step-00000010")
    assert caplog.messages[1:] == ["step 10/60  loss 2.5000  lr 1.00e-03  1,234 tok/s  ETA 2:30",
                                   "checkpoint step 10 -> /x/step-00000010"]


def test_the_eta_is_the_time_max_time_leaves_when_that_ends_training_first(monkeypatch):
    """``max_epochs: 20, max_time: 300``: the step total is 20 epochs away, but training stops at 300 s."""
    import lmcore.train.callbacks as callbacks

    now = [100.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    clock = callbacks.StepClock()
    clock.start_from({"total_steps": 15_000, "start_step": 100, "max_time": 300, "elapsed_s": 60.0})
    now[0] = 120.0  # 20 s for 50 steps: 14,850 steps at that pace would take 99 minutes
    assert clock.eta(150) == 300 - 60 - 20
    clock.start_from({"total_steps": 200, "start_step": 100, "max_time": 300, "elapsed_s": 60.0})
    now[0] = 140.0  # 20 s for 50 steps: the last 50 take 20 s, before the time limit
    assert clock.eta(150) == 20


def test_rich_progress_shows_step_loss_and_throughput():
    console = Console(record=True, width=160, force_terminal=False)
    cb = RichProgressCallback(console=console)
    cb.on_train_start({"total_steps": 20, "start_step": 0})
    cb.on_log(5, {"loss": 3.25, "lr": 2e-4, "tokens_per_sec": 4321.0})
    cb.on_train_end({"steps": 20})
    text = console.export_text()
    assert "20/20" in text and "loss 3.2500" in text and "4,321 tok/s" in text
