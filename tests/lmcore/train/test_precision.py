import warnings

import pytest
import torch

from lmcore.config import PrecisionConfig
from lmcore.train.compile import CompiledWithFallback, maybe_compile
from lmcore.train.precision import resolve_precision

from train_fixtures import TinyLM


@pytest.mark.parametrize("dtype,mixed,expected", [
    ("bf16", True, "bf16"),
    ("fp16", True, "bf16"),      # no fp16 autocast on CPU
    ("bf16", False, "fp32"),     # use_mixed_precision false forces fp32
    ("fp32", True, "fp32"),
])
def test_cpu_dtype_resolution(dtype, mixed, expected):
    p = resolve_precision(PrecisionConfig(dtype=dtype, use_mixed_precision=mixed), "cpu")
    assert p.name == expected
    assert p.use_grad_scaler is False


def remember(tmp_path, monkeypatch, pays: bool) -> None:
    """This machine's probe answer, as a previous run left it in the cache."""
    import json

    from lmcore.hardware import bf16_probe

    monkeypatch.setenv("LMCORE_CACHE_DIR", str(tmp_path))
    (tmp_path / bf16_probe.CACHE_FILE).write_text(json.dumps({bf16_probe.machine_key(): {"bf16_pays": pays}}))


@pytest.mark.parametrize("pays, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_follows_this_machines_remembered_bf16_measurement(tmp_path, monkeypatch, pays, expected):
    remember(tmp_path, monkeypatch, pays)
    assert resolve_precision(PrecisionConfig(dtype="auto"), "cpu").name == expected


def test_the_bf16_probe_measures_once_and_remembers(tmp_path, monkeypatch):
    import json

    from lmcore.hardware import bf16_probe

    monkeypatch.setenv("LMCORE_CACHE_DIR", str(tmp_path / "cache"))
    first = bf16_probe.cpu_bf16_pays()
    [entry] = json.loads((tmp_path / "cache" / bf16_probe.CACHE_FILE).read_text()).values()
    assert entry["fp32_s"] > 0 and entry["bf16_s"] > 0 and entry["bf16_pays"] == first
    assert entry["bf16_pays"] == (entry["fp32_s"] / entry["bf16_s"] >= bf16_probe.MIN_SPEEDUP)
    calls = []
    monkeypatch.setattr(bf16_probe, "measure", lambda: calls.append(1) or {"bf16_pays": not first})
    assert bf16_probe.cpu_bf16_pays() == first and calls == []  # remembered, not measured again


def test_bf16_autocast_runs_matmuls_in_bf16_and_fp32_does_not():
    a = torch.randn(4, 4)
    with resolve_precision(PrecisionConfig(dtype="bf16"), "cpu").autocast():
        assert (a @ a).dtype == torch.bfloat16
    with resolve_precision(PrecisionConfig(dtype="fp32"), "cpu").autocast():
        assert (a @ a).dtype == torch.float32


def test_compile_failure_falls_back_to_eager_with_a_warning():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    model = TinyLM()
    wrapper = CompiledWithFallback(model, torch.compile(model, backend=broken_backend))
    ids = torch.arange(8)[None]
    with pytest.warns(RuntimeWarning, match="continuing uncompiled"):
        out = wrapper(ids)
    assert wrapper.compile_failed
    torch.testing.assert_close(out, model(ids))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapper(ids)                 # warns only once


def test_compile_disabled_returns_the_model_itself():
    model = TinyLM()
    assert maybe_compile(model, PrecisionConfig(use_compile=False)) is model
    wrapped = maybe_compile(model, PrecisionConfig(use_compile=True))
    assert wrapped.state_dict().keys() == {"module." + k for k in model.state_dict()}
