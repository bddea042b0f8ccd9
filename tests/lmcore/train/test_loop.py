"""The training loop (``fit``) with a tiny model and an in-memory loader: limits, evaluation,
checkpoints, divergence and in-process resume."""

import pytest
import torch

from lmcore.errors import TrainingDivergedError
from lmcore.train import checkpoint as ckpt
from lmcore.train.trainer import Trainer
from lmcore.train.loop import fit

from train_fixtures import ListLoader, TinyLM, random_batches


class Recorder:
    def __init__(self, crash_at_checkpoint=None):
        self.events = []
        self.crash_at = crash_at_checkpoint

    def on_train_start(self, info):
        self.events.append(("start", info["total_steps"]))

    def on_log(self, step, metrics):
        self.events.append(("log", step, metrics))

    def on_eval(self, step, metrics):
        self.events.append(("eval", step, metrics["eval_loss"]))

    def on_checkpoint(self, step, path):
        self.events.append(("checkpoint", step, path.name))
        if step == self.crash_at:
            raise KeyboardInterrupt("simulated crash after a checkpoint")

    def on_train_end(self, summary):
        self.events.append(("end", summary["steps"]))


def make(tiny_cfg, n_batches=8, **training):
    cfg = tiny_cfg.model_copy(update={"training": tiny_cfg.training.model_copy(update=training)})
    torch.manual_seed(0)
    return Trainer(TinyLM(), cfg), ListLoader(random_batches(n_batches)), ListLoader(random_batches(2, seed=99))


def weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_fit_stops_at_max_steps_with_checkpoints_final_and_callbacks(tmp_path, tiny_cfg, tiny_model_cfg):
    trainer, train, evaluation = make(tiny_cfg, max_steps=5)
    rec = Recorder()
    summary = fit(trainer, tiny_model_cfg, train, evaluation, tmp_path, [rec])
    assert summary["steps"] == 5 and summary["stopped_by"] == "max_steps"
    assert summary["tokens"] == 5 * 2 * 16
    assert summary["checkpoint"] == "final"  # relative: the run directory is renamed when published
    assert ckpt.verify_checkpoint(tmp_path / "final")["step"] == 5
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002", "step-00000004"]
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("log") == 5
    log = next(e[2] for e in rec.events if e[0] == "log")
    assert {"loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "tokens_seen", "epoch", "step"} <= log.keys()
    assert [e[1] for e in rec.events if e[0] == "eval"] == [2, 4, 5]
    assert summary["best_eval_loss"] == min(e[2] for e in rec.events if e[0] == "eval")


def test_an_evaluation_at_the_last_step_makes_final_a_best_checkpoint_candidate(tmp_path, tiny_cfg, tiny_model_cfg):
    """eval_every divides max_steps: the loop's own evaluation at the last step is the final checkpoint's."""
    trainer, train, evaluation = make(tiny_cfg, max_steps=4, eval_every=4, checkpoint_every=100)
    rec = Recorder()
    summary = fit(trainer, tiny_model_cfg, train, evaluation, tmp_path, [rec])
    assert [e[1] for e in rec.events if e[0] == "eval"] == [4]  # one evaluation, not repeated at the end
    assert summary["best_checkpoint"] == "final" and summary["best_eval_loss"] is not None


def test_loss_goes_down_on_repeated_data(tmp_path, tiny_cfg, tiny_model_cfg):
    trainer, train, evaluation = make(tiny_cfg, n_batches=4, max_epochs=10, checkpoint_every=100)
    rec = Recorder()
    fit(trainer, tiny_model_cfg, train, None, tmp_path, [rec])
    losses = [e[2]["loss"] for e in rec.events if e[0] == "log"]
    assert len(losses) == 40
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4])


def test_epochs_and_token_limits(tmp_path, tiny_cfg, tiny_model_cfg):
    trainer, train, _ = make(tiny_cfg, n_batches=3, max_epochs=2, checkpoint_every=100)
    summary = fit(trainer, tiny_model_cfg, train, None, tmp_path / "a")
    assert (summary["steps"], summary["epochs"], summary["stopped_by"]) == (6, 2, "max_epochs")
    trainer, train, _ = make(tiny_cfg, n_batches=10, max_tokens=100, checkpoint_every=100)
    summary = fit(trainer, tiny_model_cfg, train, None, tmp_path / "b")
    assert (summary["steps"], summary["stopped_by"]) == (4, "max_tokens")   # 32 tokens a step


def test_divergence_stops_with_an_error_and_the_last_good_checkpoint_intact(tmp_path, tiny_cfg, tiny_model_cfg):
    trainer, train, _ = make(tiny_cfg, max_steps=8, max_nonfinite_steps=3)
    calls = {"n": 0}

    def poison_after_three_updates(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] > 3 else output

    trainer.model.register_forward_hook(poison_after_three_updates)
    with pytest.raises(TrainingDivergedError, match="non-finite for 3 updates") as err:
        fit(trainer, tiny_model_cfg, train, None, tmp_path)
    good = ckpt.latest_good_checkpoint(tmp_path)
    assert good is not None and good.name == "step-00000002" and err.value.checkpoint == good
    assert trainer.progress.skipped_steps == 3
    fresh = TinyLM()
    ckpt.load_weights(good, fresh)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_crash_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_cfg, tiny_model_cfg):
    trainer, train, evaluation = make(tiny_cfg, max_steps=7)
    fit(trainer, tiny_model_cfg, train, evaluation, tmp_path / "straight")
    expected = weights(trainer)

    trainer, train, evaluation = make(tiny_cfg, max_steps=7)
    with pytest.raises(KeyboardInterrupt):
        fit(trainer, tiny_model_cfg, train, evaluation, tmp_path / "crashed", [Recorder(crash_at_checkpoint=4)])
    trainer, train, evaluation = make(tiny_cfg, max_steps=7)   # a fresh process would build these again
    source = ckpt.latest_good_checkpoint(tmp_path / "crashed")
    assert source.name == "step-00000004"
    loader_state = trainer.load(source)
    summary = fit(trainer, tiny_model_cfg, train, evaluation, tmp_path / "crashed", loader_state=loader_state,
                  resumed_from=source)
    assert summary["steps"] == 7 and summary["resumed_from"] == "checkpoints/step-00000004"
    assert summary["start_step"] == 4
    for name, tensor in weights(trainer).items():
        assert torch.equal(tensor, expected[name]), name


def test_time_budget_stops_the_run_and_the_lr_has_decayed_by_then(tmp_path, tiny_cfg, tiny_model_cfg):
    trainer, train, _ = make(tiny_cfg, max_epochs=1000, max_time=1.5, checkpoint_every=10_000, warmup_steps=None,
                             warmup_ratio=0.0, min_lr_ratio=0.0)
    trainer.train_step(train.batches[:1], lr=0.0)          # first-call overheads outside the budget
    rec = Recorder()
    summary = fit(trainer, tiny_model_cfg, train, None, tmp_path, [rec])
    lrs = [e[2]["lr"] for e in rec.events if e[0] == "log"]
    assert summary["stopped_by"] == "max_time" and summary["elapsed_s"] >= 1.5
    assert summary["steps"] < 1000 * len(train)             # the epochs would have allowed far more
    assert len(lrs) >= 2 and lrs[0] > 0.9 * 1e-2
    assert all(a > b for a, b in zip(lrs, lrs[1:]))         # cosine over elapsed time, not over steps
    assert lrs[-1] < 0.5 * 1e-2
