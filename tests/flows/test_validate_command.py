"""`lmcore validate`: prints the report, exit 0 unless --strict and too many invalid lines."""

import json

from flows.cli import main


def _data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a good line"}\n{"text": "ab"}\n{broken\n\n')
    return str(path)


def test_validate_prints_the_report_as_json_and_exits_zero_even_with_bad_lines(tmp_path, capsys):
    code = main(["validate", _data(tmp_path), "--json", "--min-text-length", "3"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["totals"] == {"lines": 4, "blank": 1, "valid": 1, "rejected": 2, "invalid": 1, "filtered": 1}
    assert report["reasons"]["malformed_json"] == 1 and report["reasons"]["too_short"] == 1


def test_validate_strict_exits_one_above_the_invalid_limit_and_keeps_files_with_out(tmp_path, capsys):
    code = main(["validate", _data(tmp_path), "--strict", "--out", str(tmp_path / "rep")])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 1 and "max_invalid_fraction" in captured.err
    assert "malformed_json" in printed and "Validation summary" in printed
    assert (tmp_path / "rep" / "report.json").is_file() and (tmp_path / "rep" / "quarantine.jsonl").is_file()


def test_validate_takes_files_from_the_config_and_names_a_missing_one(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("data:\n  training_data_path: [data.jsonl]\n  max_invalid_fraction: 0.5\n")
    _data(tmp_path)
    assert main(["validate", "--config", str(config), "--strict"]) == 0
    assert main(["validate", str(tmp_path / "missing.jsonl")]) == 2  # bad usage, like every command (README: exit codes)
    assert "missing.jsonl" in capsys.readouterr().err
