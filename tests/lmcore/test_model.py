"""The transformer: shapes, parameter count, init, document masking, gradient checkpointing."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmcore.config import ModelConfig
from lmcore.model import Transformer


def tiny(**overrides) -> ModelConfig:
    base = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seq_length=32)
    base.update(overrides)
    return ModelConfig(**base)


@pytest.mark.parametrize("overrides", [
    dict(tie_embeddings=True),
    dict(tie_embeddings=False),
    dict(num_kv_heads=None),  # MHA
    dict(num_kv_heads=1),  # MQA
    dict(mlp_type="geglu", intermediate_size=48),
])
def test_num_parameters_matches_config_and_tensors(overrides):
    cfg = tiny(**overrides)
    model = Transformer(cfg)
    assert model.num_parameters() == cfg.num_parameters() == sum(p.numel() for p in model.parameters())
    embeddings = cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_embeddings else 2)
    assert model.num_parameters(include_embeddings=False) == cfg.num_parameters(include_embeddings=False)
    assert model.num_parameters() - model.num_parameters(include_embeddings=False) == embeddings


def test_forward_returns_logits_per_position(seed):
    model = Transformer(tiny())
    logits = model(torch.randint(0, 97, (3, 11)))
    assert logits.shape == (3, 11, 97)
    assert logits.dtype == torch.float32


def test_model_has_no_biases_and_tied_head_is_the_embedding():
    tied = Transformer(tiny(tie_embeddings=True))
    assert not any(name.endswith("bias") for name, _ in tied.named_parameters())
    assert "lm_head.weight" not in tied.state_dict()  # one copy of the shared matrix
    untied = Transformer(tiny(tie_embeddings=False))
    assert not torch.equal(untied.lm_head.weight, untied.embed_tokens.weight)


def test_residual_projections_get_scaled_init(seed):
    cfg = tiny(hidden_size=256, num_heads=4, num_layers=8, init_std=0.02, vocab_size=512)
    model = Transformer(cfg)
    block = model.layers[0]
    scaled = 0.02 / math.sqrt(2 * 8)
    assert block.attn.o_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert block.mlp.down_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert block.attn.qkv_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(block.attn_norm.weight == 1)


def test_causal_future_tokens_do_not_change_past_logits(seed):
    model = Transformer(tiny()).eval()
    ids = torch.randint(0, 97, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_document_masking_isolates_packed_documents(seed, backend):
    model = Transformer(tiny(attention_backend=backend, document_masking=True)).eval()
    ids = torch.randint(0, 97, (2, 12))
    doc_ids = torch.tensor([[0] * 5 + [1] * 7, [3] * 12])
    changed = ids.clone()
    changed[0, :5] = (changed[0, :5] + 7) % 97  # rewrite document 0 of row 0
    with torch.no_grad():
        a, b = model(ids, doc_ids), model(changed, doc_ids)
        alone = model(ids[:1, 5:])  # document 1 of row 0 on its own
    torch.testing.assert_close(a[0, 5:], b[0, 5:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1], b[1])
    # RoPE is relative, so a packed document scores exactly as it does alone.
    torch.testing.assert_close(a[0, 5:], alone[0], rtol=1e-4, atol=1e-5)


def test_without_document_masking_documents_see_each_other(seed):
    model = Transformer(tiny(document_masking=False)).eval()
    ids = torch.randint(0, 97, (1, 12))
    doc_ids = torch.tensor([[0] * 5 + [1] * 7])
    changed = ids.clone()
    changed[0, :5] = (changed[0, :5] + 7) % 97
    with torch.no_grad():
        assert not torch.allclose(model(ids, doc_ids)[0, 5:], model(changed, doc_ids)[0, 5:])


def _loss_and_grads(model, ids, doc_ids):
    logits = model(ids[:, :-1], doc_ids[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_gives_same_loss_and_gradients(seed):
    plain = Transformer(tiny())
    ckpt = Transformer(tiny(gradient_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 97, (2, 17))
    doc_ids = torch.tensor([[0] * 9 + [1] * 8, [0] * 17])
    loss_a, grads_a = _loss_and_grads(plain.train(), ids, doc_ids)
    loss_b, grads_b = _loss_and_grads(ckpt.train(), ids, doc_ids)
    torch.testing.assert_close(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7)


def test_dropout_is_active_only_in_training(seed):
    model = Transformer(tiny(dropout=0.5))
    ids = torch.randint(0, 97, (1, 8))
    model.train()
    assert not torch.allclose(model(ids), model(ids))
    model.eval()
    torch.testing.assert_close(model(ids), model(ids))


def test_meta_device_build_then_init_weights_gives_a_working_model(seed):
    with torch.device("meta"):
        model = Transformer(tiny())
    model.to_empty(device="cpu")
    model.init_weights()
    logits = model(torch.randint(0, 97, (1, 6)))
    assert torch.isfinite(logits).all()


def test_bf16_autocast_forward_backward_runs(seed):
    model = Transformer(tiny())
    ids = torch.randint(0, 97, (2, 9))
    doc_ids = torch.tensor([[0] * 4 + [1] * 5, [2] * 9])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, doc_ids)
    assert logits.dtype == torch.bfloat16
    F.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_sdpa_and_math_models_give_the_same_logits_with_packed_documents(seed, kv_heads):
    sdpa = Transformer(tiny(attention_backend="sdpa", num_kv_heads=kv_heads)).eval()
    math_model = Transformer(tiny(attention_backend="math", num_kv_heads=kv_heads)).eval()
    math_model.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, 97, (2, 13))
    doc_ids = torch.tensor([[0] * 6 + [1] * 7, [0] * 2 + [1] * 11])
    with torch.no_grad():
        torch.testing.assert_close(sdpa(ids, doc_ids), math_model(ids, doc_ids), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sdpa(ids), math_model(ids), rtol=1e-4, atol=1e-5)
