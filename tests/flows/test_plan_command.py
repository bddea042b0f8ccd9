"""`lmcore plan`: hardware, a preset table with memory estimates, the chosen preset; exit 2 on a bad key."""

from flows.cli import main


def test_plan_prints_hardware_presets_and_picks_tiny_on_cpu(capsys):
    code = main(["plan", "--device", "cpu", "--set", "training.batch_size=2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "device      cpu" in out
    for word in ("bf16", "fp16", "compile", "flash-attn"):
        assert word in out
    for preset in ("tiny", "small", "medium", "research"):
        assert preset in out
    assert "micro-batch 2" in out
    assert "w/ checkpointing" in out and "GiB" in out
    assert "* tiny" in out
    assert "auto picks  tiny" in out


def test_plan_reads_a_config_file_and_marks_the_configured_preset(tmp_path, capsys):
    config = tmp_path / "plan.yaml"
    config.write_text("model:\n  config_preset: small\ntraining:\n  batch_size: 1\n")
    code = main(["plan", str(config), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "* small" in out and "* tiny" not in out
    assert "configured  small" in out


def test_plan_exits_2_naming_a_mistyped_key_and_its_fix(capsys):
    code = main(["plan", "--device", "cpu", "--set", "training.bach_size=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "training.bach_size" in err and "training.batch_size" in err


def test_plan_exits_2_for_a_bad_key_in_the_yaml_file(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  custom:\n    hiden_size: 64\n")
    assert main(["plan", str(config)]) == 2
    assert "model.custom.hidden_size" in capsys.readouterr().err
