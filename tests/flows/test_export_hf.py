"""``lmcore export-hf``: the folder loads in transformers with lmcore's logits, template and special ids."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from flows.cli import main
from lmcore.errors import UsageError
from lmcore.hf.export import export_for_hf
from lmcore.models_dir import ModelManager
from tests.lmcore.model_folder_fixture import make_model_folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    folder = make_model_folder(tmp / "models", seed=3)
    out = tmp / "hf"
    code = main(["export-hf", folder.name[:12], str(out), "--models-dir", str(tmp / "models")])
    assert code == 0
    return folder, out


def test_exported_model_gives_lmcore_logits_in_transformers(exported):
    folder, out = exported
    model, tok, *_ = ModelManager(folder.parent).load_model(folder.name)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[tok.bos_id] + tok.encode("ROMEO: But soft, what light")])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-4, rtol=1e-4)


def test_exported_tokenizer_encodes_and_renders_the_chat_template_like_lmcore(exported):
    folder, out = exported
    _, tok, *_ = ModelManager(folder.parent).load_model(folder.name)
    hf_tok = AutoTokenizer.from_pretrained(out)
    text = "JULIET: O Romeo, Romeo"
    assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who is Romeo?"},
                {"role": "assistant", "content": "A Montague."}, {"role": "user", "content": "And Juliet?"}]
    assert hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        tok.apply_chat_template(messages, add_generation_prompt=True)


def test_generation_config_names_bos_eos_and_pad(exported):
    folder, out = exported
    _, tok, *_ = ModelManager(folder.parent).load_model(folder.name)
    gen = json.loads((out / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert gen["bos_token_id"] == tok.bos_id and gen["pad_token_id"] == tok.pad_id and tok.eos_id in eos
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert hf.generation_config.pad_token_id == tok.pad_id
    assert json.loads((out / "lmcore_metadata.json").read_text())["id"] == folder.name


def test_export_refuses_a_non_empty_folder_or_a_file_and_exits_2_touching_nothing(exported, tmp_path, capsys):
    folder, _ = exported
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        export_for_hf(folder, tmp_path)
    models = str(folder.parent)
    assert main(["export-hf", folder.name, str(tmp_path), "--models-dir", models]) == 2
    assert main(["export-hf", folder.name, str(tmp_path / "keep.txt"), "--models-dir", models]) == 2
    err = capsys.readouterr().err
    assert "keep.txt: exists and is not a folder" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"] and (tmp_path / "keep.txt").read_text() == "mine"
    assert main(["export-hf", "no-such-model", str(tmp_path / "x"), "--models-dir", models]) == 2
