"""The validate stage: exact counts on a corpus with every fault, quarantine, limits, chat rules."""

import json

import pytest

from lmcore.config import DataConfig
from lmcore.data.records import REASONS, LineParser, Rejection
from lmcore.data.report import render_report, report_markdown
from lmcore.data.validate import run_validate
from lmcore.data.verdicts import DigestSet
from lmcore.errors import DataFormatError
from tests.fixtures.messy_corpus import MIN_TEXT_LENGTH, write_messy_corpus


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return write_messy_corpus(tmp_path_factory.mktemp("messy"))


@pytest.fixture(scope="module")
def validated(messy, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    calls = []
    summary = run_validate([str(p) for p in messy.paths], DataConfig(min_text_length=MIN_TEXT_LENGTH), out,
                           progress=lambda done, total: calls.append((done, total)))
    return summary, json.loads((out / "report.json").read_text()), out, calls


def test_report_counts_every_reason_blank_and_valid_line_exactly(messy, validated):
    _, report, _, _ = validated
    expected = messy.expected
    assert report["totals"]["lines"] == expected["lines"]
    assert report["totals"]["blank"] == expected["blank"]
    assert report["totals"]["valid"] == expected["valid"]
    assert report["reasons"] == {r: expected.get(r, 0) for r in REASONS}
    exercised = [r for r in REASONS if r != "line_too_long"]  # needs a 256 MiB line: see the test below
    assert all(expected.get(r, 0) > 0 for r in exercised), "the corpus must exercise every reason"


def test_unknown_chat_speakers_are_kept_and_counted_by_name(messy, validated):
    summary, report, _, _ = validated
    assert report["unknown_roles"] == messy.unknown_roles == {"HAL-9000": 2, "narrator": 1}
    assert summary["unknown_roles"] == messy.unknown_roles  # in the stage summary (and so the manifest) too


def test_report_counts_per_file_add_up_and_name_each_input(messy, validated):
    _, report, _, _ = validated
    assert [f["path"] for f in report["files"]] == [str(p) for p in messy.paths]
    assert sum(f["lines"] for f in report["files"]) == report["totals"]["lines"]
    zst = report["files"][2]
    assert (zst["lines"], zst["blank"], zst["valid"], zst["reasons"]["duplicate"]) == (4, 1, 2, 1)


def test_length_statistics_are_exact_characters_of_kept_records(messy, validated):
    _, report, _, _ = validated
    lengths = sorted(len(c) if k == "text" else sum(len(m["content"]) for m in json.loads(c))
                     for k, c in messy.kept)
    stats = report["lengths"]
    assert stats["count"] == len(lengths)
    assert (stats["min"], stats["max"]) == (lengths[0], lengths[-1]) and stats["max"] == len(messy.big_text)
    assert stats["p50"] == lengths[(len(lengths) + 1) // 2 - 1]  # nearest rank
    assert stats["mean"] == pytest.approx(sum(lengths) / len(lengths), abs=0.01)


def test_quarantine_holds_every_rejected_line_with_reason_and_escaped_raw_bytes(messy, validated):
    _, report, out, _ = validated
    rows = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert len(rows) == report["totals"]["rejected"]
    assert {r["reason"] for r in rows} == set(REASONS) - {"line_too_long"}
    bad_utf8 = [r for r in rows if r["reason"] == "invalid_utf8"]
    assert bad_utf8[0]["raw"] == '{"text": "bad byte \\xff here"}'
    assert bad_utf8[0]["file"] == str(messy.paths[0]) and bad_utf8[0]["line"] > 1


def test_examples_point_at_file_and_line(messy, validated):
    _, report, _, _ = validated
    where = report["examples"]["duplicate"][1]["where"]
    path, line = where.rsplit(":", 1)
    raw_lines = messy.paths[0].read_bytes().split(b"\r\n")
    assert path == str(messy.paths[0])
    assert json.loads(raw_lines[int(line) - 1])["text"].strip() == "From the body field."


def test_progress_ends_at_the_total_input_size(messy, validated):
    *_, calls = validated
    total = sum(p.stat().st_size for p in messy.paths)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_too_many_invalid_lines_raise_after_writing_a_report_that_names_the_reasons(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "good one"}\n{"text": "good two"}\n{oops\n{bad\n[1]\n')
    keep = tmp_path / "kept" / "failed-report.json"
    with pytest.raises(DataFormatError) as info:
        run_validate([str(data)], DataConfig(), tmp_path / "out", failure_report_path=keep)
    message = str(info.value)
    assert "malformed_json: 2" in message and "not_object: 1" in message
    assert "bad.jsonl:3" in message and str(keep) in message
    assert json.loads((tmp_path / "out" / "report.json").read_text())["reasons"]["malformed_json"] == 2
    assert json.loads(keep.read_text())["totals"]["invalid"] == 3
    assert info.value.report["invalid_fraction"] == pytest.approx(0.6)


def test_duplicates_and_short_texts_do_not_count_toward_the_invalid_limit(tmp_path):
    data = tmp_path / "dups.jsonl"
    data.write_text('{"text": "same"}\n' * 10 + '{"text": "x"}\n' * 5)
    summary = run_validate([str(data)], DataConfig(min_text_length=2, max_invalid_fraction=0.0), tmp_path / "o")
    assert summary["reasons"]["duplicate"] == 9 and summary["reasons"]["too_short"] == 5
    assert summary["invalid_fraction"] == 0.0 and summary["totals"]["valid"] == 1


def test_sharegpt_roles_map_to_system_user_assistant_tool():
    parser = LineParser(["text"], use_conversation_format=True, min_text_length=1)
    roles = ["system", "human", "gpt", "function", "user", "bot", "observation", "model", "chatgpt", "tool",
             "assistant", "HUMAN", "bard", "Prompter", "Bing", "claude", "gemini"]
    raw = json.dumps({"conversations": [{"from": r, "value": f"turn {i}"} for i, r in enumerate(roles)]})
    record = parser.parse(raw.encode(), "f", 1)
    assert [m["role"] for m in json.loads(record.messages)] == [
        "system", "user", "assistant", "tool", "user", "assistant", "tool", "assistant", "assistant", "tool",
        "assistant", "user", "assistant", "user", "assistant", "assistant", "assistant"]
    assert record.unknown_roles == ()


def test_chat_is_flattened_to_role_prefixed_text_when_conversation_format_is_off():
    parser = LineParser(["text"], use_conversation_format=False, min_text_length=1)
    raw = json.dumps({"messages": [{"role": "user", "content": "Hi\r\nthere"}, {"role": "assistant", "content": "Yo"}]})
    record = parser.parse(raw.encode(), "f", 1)
    assert (record.kind, record.text, record.messages) == ("text", "user: Hi\nthere\n\nassistant: Yo", None)


def test_tool_call_turn_without_content_is_kept_only_for_the_assistant():
    parser = LineParser(["text"], use_conversation_format=True, min_text_length=1)
    call = {"role": "assistant", "content": None, "tool_calls": [{"name": "f"}]}
    ok = parser.parse(json.dumps({"messages": [{"role": "user", "content": "q"}, call]}).encode(), "f", 1)
    assert json.loads(ok.messages)[1] == {"role": "assistant", "content": '[{"name":"f"}]'}
    bad = parser.parse(json.dumps({"messages": [{"role": "user", "content": None, "tool_calls": [1]}]}).encode(),
                       "f", 2)
    assert isinstance(bad, Rejection) and bad.reason == "invalid_chat"


def test_exact_duplicates_share_an_id_and_different_content_does_not():
    parser = LineParser(["text", "body"], use_conversation_format=True, min_text_length=1)
    a = parser.parse(b'{"text": "same words"}', "a", 1)
    b = parser.parse(b'{"body": "  same words\\r\\n"}', "b", 9)
    c = parser.parse(b'{"text": "other words"}', "a", 2)
    assert a.id == b.id != c.id and len(a.id) == 16


def test_digest_set_finds_duplicates_across_merges():
    seen = DigestSet(merge_every=4)
    keys = [i.to_bytes(8, "big") for i in (5, 2**64 - 1, 0, 77, 12, 9, 2**63)]
    assert all(seen.add_if_new(k) for k in keys)
    assert not any(seen.add_if_new(k) for k in keys)
    assert len(seen) == len(keys)


def test_report_renders_as_rich_tables_and_markdown(validated):
    from rich.console import Console

    _, report, _, _ = validated
    console = Console(record=True, width=160)
    console.print(render_report(report))
    text = console.export_text()
    markdown = report_markdown(report)
    for reason in set(REASONS) - {"line_too_long"}:
        assert reason in text and f"| {reason} |" in markdown
    assert "messy.jsonl.zst" in text and f"**{report['totals']['valid']:,}**" in markdown


def test_without_a_failure_path_the_report_survives_the_store_removing_out_dir(tmp_path, monkeypatch):
    import shutil
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "good"}\n[1]\n')
    out = tmp_path / ".tmp-validate-abc123"
    with pytest.raises(DataFormatError) as info:
        run_validate([str(data)], DataConfig(), out)
    shutil.rmtree(out)  # what the store does with a failed stage's temp dir
    kept = tmp_path / "system-tmp" / "lmcore-failed-validate" / ".tmp-validate-abc123" / "report.json"
    assert str(kept) in str(info.value) and info.value.report_path == str(kept)
    assert json.loads(kept.read_text())["reasons"]["not_object"] == 1


def test_an_empty_input_file_is_listed_with_zero_lines(tmp_path):
    empty, data = tmp_path / "empty.jsonl", tmp_path / "data.jsonl"
    empty.write_bytes(b"")
    data.write_text('{"text": "hello"}\n')
    summary = run_validate([str(empty), str(data)], DataConfig(), tmp_path / "out")
    assert [(f["path"], f["lines"]) for f in summary["files"]] == [(str(empty), 0), (str(data), 1)]


def test_a_json_array_file_gets_a_hint_to_convert_it_to_json_lines(tmp_path):
    data = tmp_path / "array.json"
    data.write_text(json.dumps([{"text": f"record {i}"} for i in range(5)], indent=2))
    with pytest.raises(DataFormatError, match="not JSON Lines.*jq -c"):
        run_validate([str(data)], DataConfig(), tmp_path / "out", failure_report_path=tmp_path / "r.json")


def test_a_line_over_the_limit_is_rejected_unread_and_the_next_lines_keep_their_numbers(messy, tmp_path,
                                                                                     monkeypatch):
    from lmcore.data import formats

    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 1 << 20)
    summary = run_validate([str(p) for p in messy.paths], DataConfig(min_text_length=MIN_TEXT_LENGTH), tmp_path)
    assert summary["reasons"]["line_too_long"] == 1
    assert summary["totals"]["valid"] == messy.expected["valid"] - 1
    assert summary["totals"]["lines"] == messy.expected["lines"]
    row = [json.loads(r) for r in (tmp_path / "quarantine.jsonl").read_text().splitlines()
           if '"line_too_long"' in r][0]
    assert row["line"] == 9 and f"{len(json.dumps({'text': messy.big_text})):,} bytes" in row["detail"]
