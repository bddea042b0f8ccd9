"""benchmarks/gpu_check.py: its CPU path (--device cpu --tiny) runs every section and reports figures."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

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
        assert run["step_path"].startswith("lmcore.train.trainer.Trainer")
    assert "tokens/s" in printed and "MFU" in printed and "auto picks: tiny" in printed


def test_gpu_check_batches_pack_the_requested_documents_per_row():
    """--docs-per-row 1 is the plain causal upper bound; 2+ exercises the document mask."""
    import torch

    check = load_script()
    for docs in (1, 2, 3):
        batch = check.RandomBatch(2, 12, 50, torch.device("cpu"), torch.Generator().manual_seed(0), docs)
        assert batch.doc_ids.shape == (2, 12)
        assert [len(row.unique()) for row in batch.doc_ids] == [docs, docs]
        assert (batch.doc_ids[:, 1:] >= batch.doc_ids[:, :-1]).all()  # contiguous runs, as the loader makes


def test_gpu_check_passes_docs_per_row_and_compile_mode_into_the_report(tmp_path):
    out = tmp_path / "figures.json"
    code = load_script().main(["--device", "cpu", "--tiny", "--steps", "2", "--warmup", "1", "--skip-fp16",
                               "--docs-per-row", "1", "--compile-mode", "max-autotune-no-cudagraphs",
                               "--json", str(out)])
    assert code == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["docs_per_row"] == 1 and run["compile_mode"] == "max-autotune-no-cudagraphs"
    assert run["finite"] and run["tokens_per_sec"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the refusal cannot happen")
def test_gpu_check_refuses_cuda_without_a_gpu(capsys):
    assert load_script().main(["--device", "cuda"]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().out


def test_gpu_check_sweep_covers_the_grid_and_checks_flex_against_math(tmp_path):
    out = tmp_path / "figures.json"
    code = load_script().main(["--device", "cpu", "--tiny", "--sweep", "--steps", "1", "--warmup", "1",
                               "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    flex = report["flex_vs_math"]
    if flex["available"]:
        assert flex["agree"] is True and flex["out_max_abs_diff"] <= flex["tolerance"]
    cells = {(r["docs_per_row"], r["batch"], r["compile_mode"]) for r in report["runs"]}
    assert cells == {(d, b, m) for d in (1, 2) for b in (16, 32) for m in ("eager", "default")} | \
        {(2, 16, "max-autotune-no-cudagraphs")}
    for row in report["runs"]:
        if row["compile_mode"] == "eager":
            assert row["tokens_per_sec"] > 0 and row["finite"] and row["batch"] in (16, 32)
        else:   # no compile in --tiny on CPU: listed, with the reason
            assert "torch.compile" in row["skipped"]


def test_gpu_check_sweep_stops_starting_runs_when_its_time_budget_is_spent(tmp_path):
    out = tmp_path / "figures.json"
    code = load_script().main(["--device", "cpu", "--tiny", "--sweep", "--budget-s", "0", "--json", str(out)])
    assert code == 0
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 9
    assert all("time budget" in r["skipped"] or "torch.compile" in r["skipped"] for r in runs)
    assert any("time budget" in r.get("skipped", "") for r in runs if r["compile_mode"] == "eager")
