import importlib
import os
import warnings

import pytest
import torch

from lmcore.config import PrecisionConfig
from lmcore.train.compile import CompiledWithFallback, compile_cache, compile_pays, maybe_compile
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


def test_auto_on_a_cpu_keeps_narrow_models_in_fp32_even_where_bf16_matmuls_are_faster(tmp_path, monkeypatch):
    remember(tmp_path, monkeypatch, True)
    assert resolve_precision(PrecisionConfig(dtype="auto"), "cpu", hidden_size=128).name == "fp32"
    assert resolve_precision(PrecisionConfig(dtype="auto"), "cpu", hidden_size=256).name == "bf16"
    assert resolve_precision(PrecisionConfig(dtype="bf16"), "cpu", hidden_size=64).name == "bf16"  # as asked


def test_the_trainer_weighs_its_models_width(tmp_path, monkeypatch):
    from lmcore.config import ModelConfig, PipelineConfig
    from lmcore.model import Transformer
    from lmcore.train.trainer import Trainer

    remember(tmp_path, monkeypatch, True)
    for hidden, expected in ((64, "fp32"), (256, "bf16")):
        model = Transformer(ModelConfig(vocab_size=64, hidden_size=hidden, num_layers=1, num_heads=4, seq_length=8))
        assert Trainer(model, PipelineConfig()).precision.name == expected


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
    assert maybe_compile(model, False) is model
    wrapped = maybe_compile(model, True)
    assert wrapped.state_dict().keys() == {"module." + k for k in model.state_dict()}


def test_auto_compile_only_where_it_earns_back_its_compile_time(monkeypatch):
    detect = importlib.import_module("lmcore.hardware.detect")  # the package re-exports a function of that name

    monkeypatch.setattr(detect, "compile_available", lambda kind: True)   # a machine with a C compiler
    assert compile_pays("auto", "cuda", 10, None)                         # GPUs: always
    assert not compile_pays("auto", "cpu", 60, None)                      # a test-sized CPU run: never
    assert not compile_pays("auto", "cpu", None, 60)
    assert not compile_pays("auto", "cpu", 10_000, 300)                   # the time budget ends it first
    assert not compile_pays("auto", "cpu", 60, 3600)                      # the step limit ends it first
    assert compile_pays("auto", "cpu", 500, None) and compile_pays("auto", "cpu", 10_000, 600)
    assert compile_pays("auto", "cpu", None, None)                        # no limit at all: a long run
    assert not compile_pays("auto", "meta", 10_000, None)
    assert compile_pays(True, "cpu", 1, None) and not compile_pays(False, "cuda", 10_000, None)
    monkeypatch.setattr(detect, "compile_available", lambda kind: False)  # no C compiler: inductor cannot
    assert not compile_pays("auto", "cpu", 10_000, None)


def test_auto_compile_is_decided_by_the_run_length_in_fit(tmp_path, tiny_cfg, tiny_model_cfg, monkeypatch):
    import functools

    import lmcore.train.compile as compile_module
    from lmcore.train.loop import fit
    from lmcore.train.trainer import Trainer
    from train_fixtures import ListLoader, random_batches

    # real dynamo with its eager backend: the decision and the wrapping, without a C compile
    monkeypatch.setattr(compile_module.torch, "compile", functools.partial(torch.compile, backend="eager"))
    monkeypatch.setattr(compile_module, "CPU_MIN_STEPS", 3)

    def run(max_steps):
        cfg = tiny_cfg.model_copy(update={"training": tiny_cfg.training.model_copy(update={"max_steps": max_steps})})
        assert cfg.precision.use_compile == "auto"                        # the default
        trainer = Trainer(TinyLM(), cfg)
        return trainer, fit(trainer, tiny_model_cfg, ListLoader(random_batches(4)), ListLoader(random_batches(1)),
                            tmp_path / str(max_steps))

    short, summary = run(2)
    assert not summary["compiled"] and short.train_model is short.model
    long, summary = run(3)
    assert summary["compiled"] and isinstance(long.train_model, CompiledWithFallback)
    assert not summary["compile_failed"]


def test_the_compile_cache_goes_under_the_given_folder_unless_the_user_set_one(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with compile_cache(tmp_path / "cache"):
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/users/own/cache")
    with compile_cache(tmp_path / "cache2"):
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/users/own/cache"
    assert not (tmp_path / "cache2").exists()
