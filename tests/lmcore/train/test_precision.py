import warnings

import pytest
import torch

from lmcore.config import PrecisionConfig
from lmcore.train.compile import CompiledWithFallback, maybe_compile
from lmcore.train.precision import resolve_precision

from train_fixtures import TinyLM


@pytest.mark.parametrize("dtype,mixed,expected", [
    ("auto", True, "fp32"),      # CPU: auto is fp32
    ("bf16", True, "bf16"),
    ("fp16", True, "bf16"),      # no fp16 autocast on CPU
    ("bf16", False, "fp32"),     # use_mixed_precision false forces fp32
    ("fp32", True, "fp32"),
])
def test_cpu_dtype_resolution(dtype, mixed, expected):
    p = resolve_precision(PrecisionConfig(dtype=dtype, use_mixed_precision=mixed), "cpu")
    assert p.name == expected
    assert p.use_grad_scaler is False


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
