"""``load_any_model``: one loader for every command that takes a MODEL (id, models:/ URI, HF folder)."""

from __future__ import annotations

import pytest
import torch

from lmcore.base_model import load_any_model
from lmcore.errors import ConfigError
from lmcore.hf.convert import save_hf
from tests.lmcore.model_folder_fixture import make_model_folder


def test_a_model_id_and_its_hf_export_load_to_the_same_logits(tmp_path):
    folder = make_model_folder(tmp_path / "models", seed=3)
    model, tok, base = load_any_model("latest", tmp_path / "models")
    assert (base.kind, base.model_id) == ("lmcore", folder.name)
    save_hf(model, tmp_path / "hf", tokenizer=tok)
    hf_model, hf_tok, hf_base = load_any_model(str(tmp_path / "hf"), tmp_path / "models")
    assert hf_base.kind == "hf" and not hf_model.training
    ids = torch.tensor([tok.encode("ROMEO: what light")])
    torch.testing.assert_close(model(ids), hf_model(ids), atol=1e-5, rtol=1e-5)
    assert hf_tok.encode("JULIET: O Romeo") == tok.encode("JULIET: O Romeo")


def test_a_name_that_is_no_model_is_a_config_error_naming_it(tmp_path):
    make_model_folder(tmp_path / "models")
    with pytest.raises(ConfigError, match="'no-such-model' is not a model id"):
        load_any_model("no-such-model", tmp_path / "models")
