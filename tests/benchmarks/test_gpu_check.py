"""benchmarks/gpu_check.py: its CPU path (--device cpu --tiny) runs every section and reports figures."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_tiny_cpu_run_reports_throughput_mfu_attention_and_preset(tmp_path, capsys):
    out = tmp_path / "figures.json"
    code = load_script().main(["--device", "cpu", "--tiny", "--steps", "2", "--warmup", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    assert report["hardware"]["device_type"] == "cpu"
    assert report["auto_preset"]["preset"] == "tiny"
    assert report["attention"]["agree"] is True and "sdpa_vs_math_max_abs_diff" in report["attention"]
    dtypes = [r["dtype"] for r in report["runs"]]
    assert dtypes == ["bf16", "fp16"]
    for run in report["runs"]:
        assert run["tokens_per_sec"] > 0 and run["finite"]
        assert run["mfu"] is not None and 0 < run["mfu"] < 1
        assert run["step_path"].startswith("lmcore.train.engine.Trainer")
    assert "tokens/s" in printed and "MFU" in printed and "auto picks: tiny" in printed


def test_gpu_check_refuses_cuda_without_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert load_script().main(["--device", "cuda"]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().out
