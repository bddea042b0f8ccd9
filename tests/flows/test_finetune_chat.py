"""examples/finetune-chat.yaml as the README runs it after ``make demo``: LoRA chat fine-tuning of the demo model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flows.pipeline import pipeline
from lmcore.config import PipelineConfig
from lmcore.hf.export import export_for_hf
from lmcore.models_dir import ModelManager
from lmcore.data.token_shards import list_shards, open_shard

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    demo_run = tmp_path_factory.mktemp("demo-run")  # what `make demo` leaves: store, models, MLflow in demo-run/
    here = Path.cwd()
    import os

    os.chdir(demo_run)
    try:
        demo = pipeline(PipelineConfig.from_yaml(EXAMPLES / "demo.yaml", overrides=["training.max_steps=20"]))
        cfg = PipelineConfig.from_yaml(EXAMPLES / "finetune-chat.yaml",
                                       overrides=["training.max_steps=8", "training.eval_every=8"])
        records = pipeline(cfg)
    finally:
        os.chdir(here)
    return demo_run, demo, cfg, records


def test_the_example_fine_tunes_the_demo_model_on_assistant_turns_with_lora(tuned):
    demo_run, demo, cfg, records = tuned
    assert records["train"]["summary"]["base"]["registered"] == {"name": "shakespeare-demo", "version": "1"}
    assert records["train"]["summary"]["base"]["model_id"] == demo["register"]["summary"]["model_id"]
    lora = cfg.training.lora
    h, layers = 64, 2  # the demo model: hidden 64, 4 heads / 2 KV heads (qkv out 128), MLP 192
    per_layer = lora.rank * ((h + 128) + (h + h) + (h + 2 * 192) + (192 + h))
    assert records["train"]["summary"]["trainable_parameters"] == layers * per_layer
    for token_dir in records["pretokenize"]["dir"]:  # loss on assistant turns only
        for name in list_shards(token_dir):
            shard = open_shard(token_dir, name)
            assert 0 < shard.meta["trained_tokens"] < shard.meta["tokens"]
    assert records["register"]["summary"]["mlflow"]["name"] == "shakespeare-chat"


def test_the_registered_model_is_merged_loads_in_transformers_and_keeps_its_adapter(tuned, tmp_path):
    from transformers import AutoModelForCausalLM

    demo_run, _, cfg, records = tuned
    folder = Path(records["register"]["summary"]["model_dir"])
    adapter = load_file(str(folder / "adapter.safetensors"))
    assert adapter["layers.0.attn.qkv_proj.lora_A"].shape == (cfg.training.lora.rank, 64)
    assert adapter["layers.1.mlp.gate_up_proj.lora_B"].shape == (2 * 192, cfg.training.lora.rank)
    assert json.loads((folder / "adapter_config.json").read_text())["rank"] == cfg.training.lora.rank
    model, tok, meta = ModelManager(folder.parent).load_for_inference(folder.name)
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged: a plain model
    out = export_for_hf(folder, tmp_path / "hf")
    ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": "Who wrote Hamlet?"}],
                                                add_generation_prompt=True, tokenize=True)])
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits, model(ids),
                                   atol=1e-4, rtol=1e-4)
