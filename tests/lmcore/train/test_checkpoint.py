import json

import pytest
import torch

from lmcore.config import ModelConfig
from lmcore.errors import CheckpointError
from lmcore.train import checkpoint as ckpt
from lmcore.train.optim import build_optimizer
from lmcore.config import TrainingConfig

from train_fixtures import TinyLM

MODEL_CFG = ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, seq_length=16)


def write(dest, step, model=None, eval_loss=None):
    model = model or TinyLM()
    opt = build_optimizer(model, TrainingConfig(), "cpu")
    meta = {"step": step, "metrics": {"eval_loss": eval_loss} if eval_loss is not None else {}}
    return ckpt.save_checkpoint(dest, model=model, model_cfg=MODEL_CFG, optimizer=opt,
                                trainer_state={"progress": {"step": step}}, metadata=meta)


def test_checkpoint_round_trips_weights_and_lists_sha256_of_every_file(tmp_path):
    torch.manual_seed(0)
    model = TinyLM()
    path = write(tmp_path / "step-00000002", 2, model)
    meta = ckpt.verify_checkpoint(path)
    assert set(meta["files"]) == {"model.safetensors", "optimizer.pt", "trainer_state.pt", "config.json"}
    assert all(len(info["sha256"]) == 64 for info in meta["files"].values())
    fresh = TinyLM()
    ckpt.load_weights(path, fresh)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert ckpt.load_trainer_state(path) == {"progress": {"step": 2}}
    assert not list(tmp_path.glob(".tmp-*"))  # temp dir renamed away


def test_truncated_weights_fail_naming_the_file_and_resume_falls_back(tmp_path):
    root = tmp_path / "checkpoints"
    good = write(root / ckpt.step_dir_name(2), 2)
    bad = write(root / ckpt.step_dir_name(4), 4)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors") as err:
        ckpt.verify_checkpoint(bad)
    assert err.value.path == str(weights)
    assert ckpt.latest_good_checkpoint(tmp_path) == good


def test_flipped_byte_is_caught_by_sha256(tmp_path):
    path = write(tmp_path / "c", 1)
    target = path / "optimizer.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="optimizer.pt.*sha256"):
        ckpt.verify_checkpoint(path)


def test_missing_metadata_means_incomplete(tmp_path):
    path = write(tmp_path / "c", 1)
    (path / "metadata.json").unlink()
    with pytest.raises(CheckpointError, match="metadata.json"):
        ckpt.verify_checkpoint(path)
    assert ckpt.latest_good_checkpoint(tmp_path) is None


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path, capsys):
    path = write(tmp_path / "c", 1)
    evil = path / "trainer_state.pt"
    torch.save({"progress": Payload()}, evil)
    meta = json.loads((path / "metadata.json").read_text())
    meta["files"]["trainer_state.pt"] = {"bytes": evil.stat().st_size, "sha256": ckpt.sha256_file(evil)}
    (path / "metadata.json").write_text(json.dumps(meta))
    ckpt.verify_checkpoint(path)  # checksums are fine: the content is the problem
    with pytest.raises(CheckpointError, match="trainer_state.pt.*weights_only"):
        ckpt.load_trainer_state(path)
    assert "pickled code ran" not in capsys.readouterr().out


def test_prune_keeps_the_newest_and_the_best(tmp_path):
    root = tmp_path / "checkpoints"
    paths = [write(root / ckpt.step_dir_name(s), s) for s in (1, 2, 3, 4, 5)]
    removed = ckpt.prune_checkpoints(root, keep_last=2, best=paths[1])
    assert sorted(p.name for p in ckpt.list_checkpoints(root)) == ["step-00000002", "step-00000004", "step-00000005"]
    assert len(removed) == 2


def test_newest_is_chosen_by_step_and_final_counts(tmp_path):
    write(tmp_path / "checkpoints" / ckpt.step_dir_name(3), 3)
    final = write(tmp_path / "final", 7)
    assert ckpt.latest_good_checkpoint(tmp_path) == final
    assert ckpt.latest_good_checkpoint(tmp_path / "checkpoints").name == "step-00000003"


def test_rewriting_a_checkpoint_replaces_it_whole(tmp_path):
    first = write(tmp_path / "final", 1)
    write(tmp_path / "final", 2)
    assert ckpt.verify_checkpoint(first)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
