"""lmcore.hardware: detection on this machine, memory estimates, the auto preset, FLOPs and MFU.

Machines we are not on (a 24 GB or an 80 GB GPU) are described by constructing
``HardwareInfo`` by hand: the preset logic is a pure function of that record.
"""

import dataclasses
import importlib.util

import pytest
import torch

from lmcore.config import PRESETS, ModelConfig, PipelineConfig
from lmcore.hardware import (
    GiB,
    HardwareInfo,
    choose,
    choose_preset,
    detect,
    estimate_training_memory,
    measure_cpu_matmul_peak,
    mfu,
    model_flops_per_token,
    peak_flops,
    plan_presets,
    resolve_model_config,
    training_dtype,
)


def gpu(gib: float, name: str = "NVIDIA Test GPU") -> HardwareInfo:
    return HardwareInfo(device_type="cuda", name=name, count=1, total_memory=int(gib * GiB),
                        free_memory=int((gib - 0.5) * GiB), bf16=True, fp16=True, compile=True, cpu_cores=16)


PRESET_MODELS = {name: ModelConfig(**shape) for name, shape in PRESETS.items()}


# --------------------------------------------------------------------------- detect


def test_detect_reports_this_cpu_machine_with_its_memory_and_cores():
    hw = detect("cpu")
    assert hw.device_type == "cpu"
    assert hw.count == 1
    assert hw.cpu_cores >= 1
    assert 0 < hw.free_memory <= hw.total_memory
    assert hw.total_memory > 256 * 1024 ** 2
    assert hw.flash_attn is False
    assert hw.name


def test_detect_probes_bf16_autocast_and_compile_like_torch_does():
    hw = detect("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        works = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert hw.bf16 is works
    assert isinstance(hw.compile, bool)
    assert hw.to_dict()["device_type"] == "cpu"


def test_detect_finds_flash_attn_without_importing_it():
    import sys

    hw = detect()
    assert "flash_attn" not in sys.modules
    if hw.device_type == "cpu":
        assert hw.flash_attn is False
    else:
        assert hw.flash_attn == (importlib.util.find_spec("flash_attn") is not None)


# --------------------------------------------------------------------------- memory


def test_memory_estimate_grows_with_batch_and_sequence_length():
    m = PRESET_MODELS["tiny"]
    base = estimate_training_memory(m, 4, 256, "bf16").total
    assert estimate_training_memory(m, 8, 256, "bf16").total > base
    assert estimate_training_memory(m, 4, 512, "bf16").total > base
    assert estimate_training_memory(m, 4, 256, "bf16").model_states == \
        estimate_training_memory(m, 64, 2048, "bf16").model_states


def test_memory_estimate_grows_from_preset_to_preset():
    totals = [estimate_training_memory(PRESET_MODELS[n], 4, 1024, "bf16").total
              for n in ("tiny", "small", "medium", "research")]
    assert totals == sorted(totals) and len(set(totals)) == 4


def test_gradient_checkpointing_reduces_activations_but_not_model_states():
    m = PRESET_MODELS["small"]
    plain = estimate_training_memory(m, 8, 1024, "bf16", gradient_checkpointing=False)
    ckpt = estimate_training_memory(m, 8, 1024, "bf16", gradient_checkpointing=True)
    assert ckpt.activations < plain.activations / 4
    assert ckpt.model_states == plain.model_states
    assert ckpt.logits == plain.logits


def test_memory_estimate_counts_adamw_states_and_master_weights():
    m = PRESET_MODELS["tiny"]
    n = m.num_parameters()
    fp32 = estimate_training_memory(m, 1, 64, "fp32")
    assert fp32.weights == 4 * n and fp32.gradients == 4 * n and fp32.optimizer == 8 * n
    mixed = estimate_training_memory(m, 1, 64, "bf16")
    assert mixed.weights == 4 * n + 2 * n  # fp32 params + autocast's bf16 copies
    pure_half = estimate_training_memory(m, 1, 64, "bf16", param_dtype="bf16")
    assert pure_half.weights == 2 * n and pure_half.optimizer == 12 * n  # m, v and fp32 master weights
    assert estimate_training_memory(m, 1, 64, "bf16", shards=4).optimizer == 2 * n


def test_memory_estimate_matches_the_korthikanti_scale_for_a_gpt_block():
    # A GPT-shaped block in half precision keeps ~34*s*b*h bytes (Korthikanti et al., ~30 without
    # dropout masks). lmcore's block, with an MLP 4h wide, lands within 1.5x of that: its RMSNorms keep
    # fp32 tensors (the residual stream is fp32 under autocast), which the paper counts at 2 bytes.
    one = ModelConfig(vocab_size=256, hidden_size=1024, num_layers=1, num_heads=16, intermediate_size=2048,
                      attention_backend="sdpa")
    two = one.model_copy(update={"num_layers": 2})
    s, b = 1024, 2
    per_layer = estimate_training_memory(two, b, s, "fp16").activations - \
        estimate_training_memory(one, b, s, "fp16").activations
    assert 34 * 0.75 * s * b * one.hidden_size < per_layer < 34 * 1.5 * s * b * one.hidden_size


def test_math_attention_backend_adds_the_quadratic_score_memory():
    fused = ModelConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, attention_backend="sdpa")
    math_ = fused.model_copy(update={"attention_backend": "math"})
    s, b = 512, 2
    extra = estimate_training_memory(math_, b, s, "bf16").activations - \
        estimate_training_memory(fused, b, s, "bf16").activations
    assert extra == 2 * fused.num_heads * s * s * b * (4 + 2)  # layers * heads * s^2 * b * (fp32 softmax + bf16 copy)


def _saved_activation_bytes(model_cfg, batch, seq, dtype):
    """Bytes of the tensors autograd saves for backward in one forward + loss (parameters excluded)."""
    from lmcore.model import Transformer

    torch.manual_seed(0)
    model = Transformer(model_cfg)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            storages[st.data_ptr()] = st.nbytes()
        return t

    ids = torch.randint(0, model_cfg.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = model(ids)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
    return sum(storages.values())


@pytest.mark.parametrize("backend, dtype", [("sdpa", "fp32"), ("sdpa", "bf16"), ("math", "fp32"), ("math", "bf16")])
def test_activation_estimate_is_within_15_percent_of_what_autograd_saves(backend, dtype):
    cfg = ModelConfig(vocab_size=512, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, seq_length=128,
                      attention_backend=backend)
    measured = _saved_activation_bytes(cfg, 2, 128, dtype)
    est = estimate_training_memory(cfg, 2, 128, dtype)
    assert abs(est.activations + est.logits - measured) / measured < 0.15


def test_checkpointed_estimate_covers_what_autograd_keeps_with_checkpointing():
    cfg = ModelConfig(vocab_size=512, hidden_size=128, num_layers=3, num_heads=4, seq_length=128,
                      attention_backend="sdpa", gradient_checkpointing=True)
    measured = _saved_activation_bytes(cfg, 2, 128, "bf16")
    est = estimate_training_memory(cfg, 2, 128, "bf16", gradient_checkpointing=True)
    plain = estimate_training_memory(cfg, 2, 128, "bf16", gradient_checkpointing=False)
    assert measured <= est.activations + est.logits < plain.activations + plain.logits


def test_logits_memory_is_fp32_batch_by_sequence_by_vocab():
    m = PRESET_MODELS["tiny"]
    est = estimate_training_memory(m, 3, 100, "bf16")
    assert est.logits == 2 * 4 * 3 * 100 * m.vocab_size


# --------------------------------------------------------------------------- auto preset


def test_auto_preset_picks_tiny_on_cpu():
    name, reason = choose_preset(PipelineConfig(), detect("cpu"))
    assert name == "tiny"
    assert "CPU" in reason


def test_auto_preset_picks_small_on_a_24_gb_gpu():
    name, reason = choose_preset(PipelineConfig(), gpu(24, "NVIDIA GeForce RTX 4090"))
    assert name == "small"
    assert "RTX 4090" in reason


def test_auto_preset_picks_medium_or_research_on_an_80_gb_gpu():
    name, _ = choose_preset(PipelineConfig(), gpu(80, "NVIDIA H100 80GB HBM3"))
    assert name in ("medium", "research")


def test_auto_preset_turns_on_checkpointing_when_only_that_fits():
    cfg = PipelineConfig()
    small = {p.name: p for p in plan_presets(cfg, gpu(12))}["small"]
    assert not small.fits and small.fits_with_checkpointing
    choice = choose(cfg, gpu(12))
    assert choice.name == "small" and choice.gradient_checkpointing
    assert "checkpointing" in choice.reason
    model, _ = resolve_model_config(cfg, gpu(12))
    assert model.gradient_checkpointing is True
    assert model.hidden_size == PRESETS["small"]["hidden_size"]


def test_auto_preset_depends_on_the_gpu_not_on_what_is_free_at_the_moment():
    """The choice feeds the train stage's cache key: a busy GPU must not change the model."""
    idle = gpu(24)
    busy = dataclasses.replace(idle, free_memory=3 * GiB)
    assert choose(PipelineConfig(), idle).name == choose(PipelineConfig(), busy).name == "small"
    assert "warning" not in choose(PipelineConfig(), idle).reason
    assert "only 3.0 GiB is free" in choose(PipelineConfig(), busy).reason


def test_auto_preset_uses_the_configured_batch_size():
    big_batch = PipelineConfig.from_dict({"training": {"batch_size": 64}})
    assert choose_preset(PipelineConfig(), gpu(24))[0] == "small"
    assert choose_preset(big_batch, gpu(24))[0] == "tiny"


def test_fsdp_over_eight_gpus_lets_the_research_preset_fit():
    cfg = PipelineConfig.from_dict({"training": {"strategy": "fsdp", "nproc_per_node": 8, "batch_size": 1}})
    assert choose_preset(cfg, gpu(80))[0] == "research"
    assert choose_preset(PipelineConfig.from_dict({"training": {"batch_size": 1}}), gpu(80))[0] != "research"


def test_explicit_preset_is_kept_whatever_the_hardware():
    cfg = PipelineConfig.from_dict({"model": {"config_preset": "medium"}})
    assert choose_preset(cfg, detect("cpu"))[0] == "medium"


def test_training_dtype_follows_precision_config_and_hardware(tmp_path, monkeypatch):
    import json

    from lmcore.hardware import bf16_probe

    assert training_dtype(PipelineConfig(), gpu(24)) == "bf16"
    monkeypatch.setenv("LMCORE_CACHE_DIR", str(tmp_path))
    for pays, expected in ((False, "fp32"), (True, "bf16" if detect("cpu").bf16 else "fp32")):
        (tmp_path / bf16_probe.CACHE_FILE).write_text(json.dumps({bf16_probe.machine_key(): {"bf16_pays": pays}}))
        assert training_dtype(PipelineConfig(), detect("cpu")) == expected  # the plan says what training will do
        narrow = PipelineConfig.from_dict({"model": {"config_preset": "custom", "custom": {"hidden_size": 64, "num_heads": 4, "num_kv_heads": 2}}})
        assert training_dtype(narrow, detect("cpu")) == "fp32"               # too narrow to gain from bf16
        assert training_dtype(PipelineConfig(), detect("cpu"), hidden_size=512) == expected
    old = HardwareInfo(device_type="cuda", name="Tesla T4", free_memory=15 * GiB, bf16=False, fp16=True)
    assert training_dtype(PipelineConfig(), old) == "fp16"
    no_mixed = PipelineConfig.from_dict({"precision": {"use_mixed_precision": False, "dtype": "bf16"}})
    assert training_dtype(no_mixed, gpu(24)) == "fp32"


# --------------------------------------------------------------------------- FLOPs and MFU


@pytest.mark.parametrize("name, dtype, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),
    ("NVIDIA H100 PCIe", "bf16", 756.5e12),
    ("NVIDIA H200", "bf16", 989.4e12),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
    ("NVIDIA A100-SXM4-40GB", "tf32", 156e12),
    ("NVIDIA A10G", "bf16", 70e12),
    ("NVIDIA L4", "bf16", 121e12),
    ("NVIDIA L40S", "fp16", 362.1e12),
    ("NVIDIA GeForce RTX 3090", "bf16", 71e12),
    ("NVIDIA GeForce RTX 4090", "bfloat16", 165.2e12),
    ("NVIDIA GeForce RTX 5090", "bf16", 209.5e12),
    ("Tesla T4", "bf16", None),
    ("Some Unknown Accelerator", "bf16", None),
])
def test_peak_flops_table_matches_datasheet_dense_figures(name, dtype, expected):
    assert peak_flops(name, dtype) == expected


def test_measured_cpu_matmul_peak_is_a_plausible_flop_rate():
    peak = measure_cpu_matmul_peak("fp32", seconds=0.1, size=256)
    assert 1e8 < peak < 1e14


def test_model_flops_per_token_is_six_n_plus_attention():
    m = ModelConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, tie_embeddings=True)
    # Counted by hand: per layer q,k,v,o 4*64*64 = 16,384; gated MLP 3*64*192 = 36,864 (ffn: 8/3*64
    # rounded to 192); two norms 128 -> 53,376; two layers + final norm = 106,816; the tied LM head
    # still multiplies: + 1000*64 = 170,816 = N.  6N + 12*L*h*s = 1,024,896 + 12*2*64*128 (196,608).
    assert model_flops_per_token(m, 128) == 1_221_504
    assert model_flops_per_token(m, 256) == 1_221_504 + 196_608


def test_mfu_is_achieved_over_peak_and_none_without_a_peak():
    m = PRESET_MODELS["small"]
    fpt = model_flops_per_token(m, 1024)
    assert mfu(1000.0, fpt, fpt * 2000.0) == pytest.approx(0.5)
    assert mfu(1000.0, fpt, None) is None


def test_measuring_the_cpu_peak_leaves_the_global_rng_alone():
    """The trainer measures it once per process, after seeding: it must not shift a run's random stream
    (it did, so the first run of a process drew other dropout masks than a resumed one)."""
    import torch

    torch.manual_seed(3)
    before = torch.get_rng_state()
    measure_cpu_matmul_peak("fp32", seconds=0.01, size=64)
    assert torch.equal(torch.get_rng_state(), before)
