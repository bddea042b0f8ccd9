"""benchmarks/bench_optimizer.py runs both optimizers through the real Trainer and reports each."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_optimizer.py"


def test_bench_optimizer_times_adamw_and_muon_updates_on_the_recipe_shape(capsys):
    spec = importlib.util.spec_from_file_location("bench_optimizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ms = module.main(["--steps", "2", "--set", "training.batch_size=2"])
    printed = capsys.readouterr().out
    assert set(ms) == {"adamw", "muon"} and all(v > 0 for v in ms.values())
    assert "batch 2 x 128" in printed and "muon overhead" in printed
    overhead = ms["muon"] / ms["adamw"] - 1
    assert f"muon overhead: {overhead:+.1%} per update" in printed  # the figure printed is the one measured
