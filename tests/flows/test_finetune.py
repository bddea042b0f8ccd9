"""Fine-tuning: ``model.init_from`` in its three forms, real pipeline runs, lineage and the train key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from flows.pipeline import pipeline
from lmcore.base_model import architecture, resolve_base
from lmcore.config import PipelineConfig
from lmcore.errors import ConfigError
from lmcore.hf.export import export_for_hf
from lmcore.model import Transformer
from lmcore.models_dir import ModelManager
from lmcore.train.stage import load_base_weights
from tests.flows.pipeline_fixtures import WORDS, statuses, tiny_config, write_corpus

NEAR_ZERO_LR = 1e-9  # two updates that move nothing: the fine-tuned model evaluates like its base


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A trained, registered base model (MLflow: ``base-test``, v1 @champion) and its evaluation."""
    root = tmp_path_factory.mktemp("finetune")
    corpus = write_corpus(root / "corpus.jsonl", seed=21)
    cfg = tiny_config(corpus, root / "base-store", root / "models", training={"max_steps": 25, "learning_rate": 5e-3},
                      tracking={"enabled": True, "registered_model_name": "base-test"})
    cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"mlflow": str(root / "mlflow")})})
    records = pipeline(cfg)
    return {"root": root, "corpus": corpus, "cfg": cfg, "records": records,
            "model_id": records["register"]["summary"]["model_id"]}


def finetune_cfg(base, init_from: str, store: str, **training) -> PipelineConfig:
    cfg = tiny_config(base["corpus"], base["root"] / store, base["root"] / "models", model={"init_from": init_from},
                      training={"max_steps": 2, "learning_rate": NEAR_ZERO_LR, "warmup_steps": 0, **training},
                      tracking={"enabled": True, "registered_model_name": "tuned-test"})
    return cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"mlflow": str(base["root"] / "mlflow")})})


@pytest.mark.parametrize("form", ["local id", "registry alias", "exported HF folder"])
def test_init_from_carries_the_weights_over_in_every_form(base, form):
    if form == "local id":
        init_from = base["model_id"][:16]  # a unique prefix
    elif form == "registry alias":
        init_from = "models:/base-test@champion"
    else:
        init_from = str(export_for_hf(base["root"] / "models" / base["model_id"], base["root"] / "hf-export"))
    records = pipeline(finetune_cfg(base, init_from, store=f"store-{form.split()[0]}"))
    assert "the base model's" in records["tokenizer"]["figure"]  # reused, not trained
    base_loss = base["records"]["evaluate"]["summary"]["eval_loss"]
    assert records["evaluate"]["summary"]["eval_loss"] == pytest.approx(base_loss, rel=1e-5)
    lineage = records["train"]["summary"]["base"]
    assert lineage["source"] == init_from and len(lineage["sha256"]) == 64
    meta = ModelManager(base["root"] / "models").metadata(records["register"]["summary"]["model_id"])
    # the same weights fine-tuned the same way are one model, whichever name found the base
    assert meta["base"]["sha256"] == meta["lineage"]["base"] == lineage["sha256"]
    if form == "registry alias":
        assert lineage["registered"] == {"name": "base-test", "version": "1"}
        version = MlflowClient(base["cfg"].tracking_uri()).get_model_version(
            "tuned-test", records["register"]["summary"]["mlflow"]["version"])
        assert version.tags["lmcore.base_sha256"] == lineage["sha256"] and "lmcore.base_source" in version.tags
        run = MlflowClient(base["cfg"].tracking_uri()).get_run(records["_run"]["mlflow_run_id"])
        assert run.data.tags["lmcore.base.sha256"] == lineage["sha256"]
        assert run.data.tags["lmcore.base.source"] == init_from


def test_a_new_champion_reruns_fine_tuning_and_an_unchanged_one_stays_cached(base):
    cfg = finetune_cfg(base, "models:/base-test@champion", store="store-key")
    first = pipeline(cfg)
    assert statuses(pipeline(cfg))["train"] == "cached"
    second_base = pipeline(base["cfg"].model_copy(update={"training": base["cfg"].training.model_copy(
        update={"learning_rate": 4e-3})}))  # another trained model: version 2 of base-test
    client = MlflowClient(base["cfg"].tracking_uri())
    client.set_registered_model_alias("base-test", "champion", second_base["register"]["summary"]["mlflow"]["version"])
    again = pipeline(cfg)
    assert statuses(again)["train"] == "ran" and again["train"]["key"] != first["train"]["key"]
    assert statuses(again)["tokenizer"] in ("cached", "cached (store)", "ran")
    assert statuses(pipeline(cfg))["train"] == "cached"


def test_settings_the_base_contradicts_are_a_config_error_naming_both_values(base):
    cfg = finetune_cfg(base, base["model_id"], store="store-bad")
    wide = cfg.model_copy(update={"model": cfg.model.model_copy(update={
        "custom": cfg.model.custom.model_copy(update={"hidden_size": 64})})})
    with pytest.raises(ConfigError, match=r"model.custom.hidden_size: the base model has hidden_size=32, the config "
                                          r"asks for 64"):
        pipeline(wide)
    with pytest.raises(ConfigError, match="model.init_from"):
        pipeline(finetune_cfg(base, "no-such-model", store="store-bad"))


def _transformers_folder(folder: Path) -> Path:
    """A LlamaForCausalLM written by transformers itself, with a tokenizer of its own (``<s>``, ``</s>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>") \
        .save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_a_folder_transformers_wrote_gives_transformers_logits_at_step_0_and_fine_tunes(base, tmp_path):
    from transformers import LlamaForCausalLM

    folder = _transformers_folder(tmp_path / "llama")
    cfg = finetune_cfg(base, str(folder), store="store-hf")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"custom": type(cfg.model.custom)()}),
                                 "tokenizer": cfg.tokenizer.model_copy(update={"vocab_size": None})})
    resolved = resolve_base(str(folder), cfg.paths.models, cfg.paths.store, cfg)
    model = Transformer(architecture(resolved, cfg))
    load_base_weights(model, resolved)
    ids = torch.randint(0, 320, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), LlamaForCausalLM.from_pretrained(folder).eval()(ids).logits,
                                   atol=1e-5, rtol=1e-5)
    records = pipeline(cfg.model_copy(update={"training": cfg.training.model_copy(update={"learning_rate": 1e-3})}))
    assert records["train"]["summary"]["steps"] == 2
    tok = json.loads((Path(records["tokenizer"]["dir"]) / "tokenizer_config.json").read_text())
    assert (tok["bos_token"], tok["eos_token"]) == ("<s>", "</s>")  # the base's own special tokens
