"""The chunked head + cross-entropy (``lmcore.model.loss``) against the plain path through full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmcore.config import ModelConfig
from lmcore.model import Transformer
from lmcore.model.loss import IGNORE_INDEX, linear_cross_entropy


def reference(hidden, weight, targets):
    """Cross-entropy through the full logits, in float32 or (for float64 inputs) float64."""
    logits = hidden @ weight.t()
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.mark.parametrize("chunk_rows", [7, 64, 10_000])  # not dividing the rows; one chunk for all
def test_loss_and_gradients_equal_the_full_logits_path(chunk_rows):
    torch.manual_seed(0)
    hidden = torch.randn(150, 32, requires_grad=True)
    weight = (torch.randn(97, 32) * 0.3).requires_grad_()
    targets = torch.randint(0, 97, (150,))
    targets[::5] = IGNORE_INDEX  # masked positions add neither loss nor gradient
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    want = reference(h64, w64, targets)  # in float64: the exact answer
    want.backward(torch.tensor(2.5, dtype=torch.float64))
    got = linear_cross_entropy(hidden, weight, targets, chunk_rows)
    got.backward(torch.tensor(2.5))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(hidden.grad.double(), h64.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)  # float32 sums of 150 rows
    assert hidden.grad[::5].abs().max() == 0  # no gradient from ignored positions


def test_without_gradients_only_the_loss_is_computed():
    torch.manual_seed(1)
    hidden, weight = torch.randn(40, 16), torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (40,))
    with torch.no_grad():
        got = linear_cross_entropy(hidden, weight, targets, 8)
    assert not got.requires_grad
    torch.testing.assert_close(got, reference(hidden, weight.detach(), targets))


@pytest.mark.parametrize("tied", [True, False])
def test_the_model_loss_matches_its_logits_in_fp32_and_under_bf16_autocast(tied):
    cfg = ModelConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seq_length=24,
                      tie_embeddings=tied)
    torch.manual_seed(2)
    model = Transformer(cfg)
    ids = torch.randint(0, 300, (3, 24))
    targets = torch.roll(ids, -1, 1)
    targets[:, -1] = IGNORE_INDEX
    plain = F.cross_entropy(model(ids).reshape(-1, 300), targets.reshape(-1), reduction="sum")
    chunked = model(ids, targets=targets, loss_chunk_rows=16)
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-4)
    plain.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    chunked.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(ids, targets=targets, loss_chunk_rows=16)
        low_plain = F.cross_entropy(model(ids).float().reshape(-1, 300), targets.reshape(-1), reduction="sum")
    assert low.dtype == torch.float32 and abs(low.item() - low_plain.item()) < 1e-2 * abs(low_plain.item())
