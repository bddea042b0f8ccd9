"""lmcore.config: unknown keys, bad values, YAML loading, env and --set overrides, preset sizes."""

import pytest

from lmcore.config import PRESETS, ModelConfig, PipelineConfig
from lmcore.config_keys import suggest_key
from lmcore.errors import ConfigError


def config_error(raw=None, overrides=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict(raw or {}, overrides=overrides)
    return info.value


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("raw, bad, suggestion", [
    ({"trainng": {}}, "trainng", "training"),
    ({"training": {"learning_rte": 1e-3}}, "training.learning_rte", "training.learning_rate"),
    ({"training": {"batchsize": 4}}, "training.batchsize", "training.batch_size"),
    ({"model": {"confg_preset": "tiny"}}, "model.confg_preset", "model.config_preset"),
    ({"model": {"custom": {"hiden_size": 64}}}, "model.custom.hiden_size", "model.custom.hidden_size"),
    ({"model": {"custom": {"num_layer": 2}}}, "model.custom.num_layer", "model.custom.num_layers"),
    ({"precision": {"use_mixed_precission": True}}, "precision.use_mixed_precission",
     "precision.use_mixed_precision"),
])
def test_unknown_yaml_key_names_the_key_path_and_the_closest_valid_key(raw, bad, suggestion):
    err = config_error(raw)
    assert err.key == bad
    assert f"unknown key '{bad}'" in str(err)
    assert f"did you mean '{suggestion}'" in str(err)
    assert err.exit_code == 2


@pytest.mark.parametrize("override, bad, suggestion", [
    ("training.batchsize=4", "training.batchsize", "training.batch_size"),
    ("trainig.batch_size=3", "trainig.batch_size", "training.batch_size"),
    ("model.custom.num_layer=2", "model.custom.num_layer", "model.custom.num_layers"),
    ("model.custom.hiddensize=64", "model.custom.hiddensize", "model.custom.hidden_size"),
])
def test_unknown_set_override_names_the_key_and_the_closest_valid_key(override, bad, suggestion):
    err = config_error(overrides=[override])
    assert err.key == bad
    assert f"did you mean '{suggestion}'" in str(err)


def test_key_in_the_wrong_section_is_suggested_where_it_lives():
    assert suggest_key(PipelineConfig, "training.use_compile") == "precision.use_compile"


def test_override_without_equals_sign_is_a_config_error():
    err = config_error(overrides=["training.batch_size"])
    assert "key.path=value" in str(err)


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("raw, key, allowed", [
    ({"training": {"learning_rate": -1}}, "training.learning_rate", "> 0 and <= 1.0"),
    ({"data": {"eval_split": 1.5}}, "data.eval_split", ">= 0.0 and < 1.0"),
    ({"training": {"batch_size": 0}}, "training.batch_size", ">= 1"),
    ({"model": {"custom": {"hidden_size": 4}}}, "model.custom.hidden_size", ">= 8"),
])
def test_out_of_range_value_says_the_allowed_range(raw, key, allowed):
    err = config_error(raw)
    assert err.key == key
    assert f"allowed range: {allowed}" in str(err)


def test_out_of_range_set_override_says_the_allowed_range():
    err = config_error(overrides=["training.warmup_ratio=2"])
    assert err.key == "training.warmup_ratio"
    assert "allowed range: >= 0.0 and < 1.0" in str(err)
    assert "(got 2)" in str(err)


def test_bad_choice_lists_the_allowed_values():
    err = config_error({"model": {"config_preset": "huge"}})
    assert err.key == "model.config_preset"
    assert "'research'" in str(err) and "'huge'" in str(err)


def test_inconsistent_custom_shape_fails_when_the_config_is_read_naming_model_custom():
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict({"model": {"config_preset": "custom", "custom": {"hidden_size": 100, "num_heads": 3}}})
    assert info.value.key == "model.custom"
    assert "divisible by num_heads" in str(info.value)


def test_auto_preset_cannot_be_resolved_without_hardware():
    with pytest.raises(ConfigError) as info:
        PipelineConfig().model.resolve()
    assert info.value.key == "model.config_preset"


# --------------------------------------------------------------------------- YAML


def test_yaml_data_paths_are_relative_to_the_yaml_file(tmp_path, monkeypatch):
    conf_dir = tmp_path / "configs"
    (conf_dir / "data").mkdir(parents=True)
    (conf_dir / "data" / "a.jsonl").write_text('{"text": "x"}\n')
    (conf_dir / "run.yaml").write_text("data:\n  training_data_path: data/a.jsonl\n"
                                       "  eval_data_path: [held/out.jsonl, /abs/e.jsonl]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = PipelineConfig.from_yaml(conf_dir / "run.yaml")
    assert cfg.data.training_data_path == [str(conf_dir / "data" / "a.jsonl")]
    assert cfg.data.eval_data_path == [str(conf_dir / "held" / "out.jsonl"), "/abs/e.jsonl"]


def test_yaml_unknown_key_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  bach_size: 4\n")
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_yaml(path)
    assert str(path) in str(info.value)
    assert "training.batch_size" in str(info.value)


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("training:\n  batch_size: 4\n  lr: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_yaml(path)
    assert f"{path}:" in str(info.value)


def test_yaml_with_set_overrides_and_seed_system_names_loads(tmp_path):
    path = tmp_path / "seed.yaml"
    path.write_text("data:\n  use_conversation_format: false\n  max_samples_train: 100\n"
                    "model:\n  config_preset: custom\n  custom: {vocab_size: 512, hidden_size: 64,"
                    " num_layers: 2, num_heads: 4, seq_length: 64}\n"
                    "training:\n  scheduler_type: linear\n  warmup_ratio: 0.1\n"
                    "precision:\n  use_mixed_precision: false\n")
    cfg = PipelineConfig.from_yaml(path, overrides=["training.learning_rate=1e-3", "model.custom.num_layers=1"])
    assert cfg.training.learning_rate == 1e-3
    model = cfg.model.resolve()
    assert (model.num_layers, model.hidden_size, model.vocab_size) == (1, 64, 512)
    assert cfg.data.max_samples_train == 100


def test_missing_yaml_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PipelineConfig.from_yaml(tmp_path / "nope.yaml")


def test_config_round_trips_through_yaml(tmp_path):
    cfg = PipelineConfig.from_dict({"training": {"batch_size": 3}, "model": {"config_preset": "tiny"}})
    path = tmp_path / "round.yaml"
    path.write_text(cfg.to_yaml())
    again = PipelineConfig.from_yaml(path)
    assert again.model_dump() == cfg.model_dump()


# --------------------------------------------------------------------------- environment


def test_env_overrides_store_and_models_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("LMCORE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("LMCORE_MODELS", str(tmp_path / "models"))
    cfg = PipelineConfig.from_dict({"paths": {"store": "./from-yaml"}})
    assert cfg.paths.store == str(tmp_path / "store")
    assert cfg.paths.models == str(tmp_path / "models")


def test_set_override_beats_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LMCORE_STORE", str(tmp_path / "env-store"))
    cfg = PipelineConfig.from_dict({}, overrides=[f"paths.store={tmp_path / 'cli-store'}"])
    assert cfg.paths.store == str(tmp_path / "cli-store")


def test_from_dict_does_not_modify_the_callers_dict():
    raw = {"training": {"batch_size": 2}}
    PipelineConfig.from_dict(raw, overrides=["training.batch_size=5"])
    assert raw == {"training": {"batch_size": 2}}


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name, target", [("tiny", 25e6), ("small", 350e6), ("medium", 1.5e9),
                                          ("research", 7e9)])
def test_preset_parameter_counts_are_within_15_percent_of_their_names(name, target):
    n = ModelConfig(**PRESETS[name]).num_parameters()
    assert abs(n - target) / target < 0.15, f"{name}: {n / 1e6:.0f}M"


def test_num_parameters_matches_the_built_model():
    from lmcore.model import Transformer

    for tie in (True, False):
        cfg = ModelConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                          seq_length=32, tie_embeddings=tie)
        model = Transformer(cfg)
        counted = sum(p.numel() for p in model.parameters())
        assert cfg.num_parameters() == counted


def test_overrides_on_a_loaded_config_change_one_key_and_errors_name_the_override():
    """What a deployment's ``overrides`` parameter does: the --set syntax on a config it already holds."""
    cfg = PipelineConfig.from_dict({"training": {"max_steps": 5, "batch_size": 3}})
    changed = cfg.with_overrides(["training.max_steps=7"])
    assert (changed.training.max_steps, changed.training.batch_size, cfg.training.max_steps) == (7, 3, 5)
    with pytest.raises(ConfigError, match=r"overrides 'training.max_step=7': unknown key .*'training.max_steps'"):
        cfg.with_overrides(["training.max_step=7"])
    with pytest.raises(ConfigError, match=r"overrides training.max_steps=abc: training.max_steps"):
        cfg.with_overrides(["training.max_steps=abc"])
