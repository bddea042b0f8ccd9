"""Attention backends agree with each other; masks and flash varlen boundaries are right."""

import warnings

import pytest
import torch

from lmcore.model import attention_backends
from lmcore.model.attention_backends import (AttentionPlan, attend, document_causal_mask, document_cu_seqlens,
                                             plan_attention, resolve_backend)


def qkv(batch=2, heads=4, kv_heads=2, T=10, D=8, dtype=torch.float32):
    return (torch.randn(batch, heads, T, D, dtype=dtype), torch.randn(batch, kv_heads, T, D, dtype=dtype),
            torch.randn(batch, kv_heads, T, D, dtype=dtype))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("with_docs", [False, True])
def test_sdpa_and_math_backends_agree(seed, kv_heads, with_docs):
    q, k, v = qkv(kv_heads=kv_heads)
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2, 2], [5] * 10]) if with_docs else None
    x = torch.zeros(2, 10, 32)
    out_sdpa = attend(q, k, v, plan_attention("sdpa", x, doc_ids))
    out_math = attend(q, k, v, plan_attention("math", x, doc_ids))
    torch.testing.assert_close(out_sdpa, out_math, rtol=1e-5, atol=1e-5)


def test_math_backend_is_causal_softmax_attention(seed):
    q, k, v = qkv(batch=1, heads=1, kv_heads=1, T=4, D=2)
    out = attend(q, k, v, AttentionPlan("math"))
    # Row 0 can only see key 0: its output is exactly v[0].
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0])
    scores = (q[0, 0, 3] @ k[0, 0].T) / 2 ** 0.5
    torch.testing.assert_close(out[0, 0, 3], torch.softmax(scores, -1) @ v[0, 0])


def test_document_causal_mask_is_block_diagonal_and_causal():
    mask = document_causal_mask(torch.tensor([[7, 7, 9, 9, 9]]))[0, 0]
    expected = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_flash_varlen_boundaries_split_at_rows_and_documents():
    doc_ids = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 2]])  # row 2 continues id 1 but is a new segment
    cu, max_len = document_cu_seqlens(doc_ids)
    assert cu.tolist() == [0, 2, 5, 9, 10]
    assert cu.dtype == torch.int32
    assert max_len == 4


def test_auto_backend_is_sdpa_without_cuda_flash():
    assert resolve_backend("auto", torch.device("cpu"), torch.bfloat16) == "sdpa"
    assert resolve_backend("math", torch.device("cpu"), torch.float32) == "math"


def test_requested_flash_without_flash_attn_falls_back_to_sdpa_with_a_warning():
    attention_backends._warn_flash_fallback.cache_clear()  # it warns once per process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("flash", torch.device("cpu"), torch.bfloat16) == "sdpa"
    assert any("using sdpa" in str(w.message) for w in caught)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="attention backend"):
        resolve_backend("xformers", torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("padded", [False, True])
def test_single_query_decoding_step_agrees_with_math(seed, padded):
    q, _, _ = qkv(batch=2, heads=6, kv_heads=2, T=1)
    _, k, v = qkv(batch=2, heads=6, kv_heads=2, T=9)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    if padded:
        mask[0, ..., :4] = False  # row 0 was left-padded by 4
    plan_sdpa = AttentionPlan("sdpa", is_causal=False, mask=mask if padded else None)
    plan_math = AttentionPlan("math", is_causal=False, mask=mask if padded else None)
    torch.testing.assert_close(attend(q, k, v, plan_sdpa), attend(q, k, v, plan_math), rtol=1e-5, atol=1e-5)


def test_flex_document_attention_matches_the_math_reference():
    from lmcore.model.attention_backends import (AttentionPlan, document_block_mask, document_causal_mask,
                                                 flex_attention_available, flex_document_attention,
                                                 math_attention)

    assert flex_attention_available()
    torch.manual_seed(0)
    docs = torch.zeros(2, 48, dtype=torch.int32)
    docs[:, 20:] = 1
    docs[1, 33:] = 2
    q, k, v = torch.randn(2, 4, 48, 16), torch.randn(2, 2, 48, 16), torch.randn(2, 2, 48, 16)
    flex = flex_document_attention(q, k, v, AttentionPlan("flex", is_causal=False,
                                                          block_mask=document_block_mask(docs)))
    ref = math_attention(q, k, v, AttentionPlan("math", is_causal=False, mask=document_causal_mask(docs)))
    torch.testing.assert_close(flex, ref, atol=1e-5, rtol=1e-5)


def test_auto_backend_keeps_dense_document_masks_off_cuda():
    from lmcore.model.attention_backends import plan_attention

    docs = torch.zeros(1, 8, dtype=torch.int32)
    docs[:, 4:] = 1
    plan = plan_attention("auto", torch.randn(1, 8, 64), docs, head_dim=16)
    assert plan.backend == "sdpa" and plan.mask is not None and plan.block_mask is None


def test_rows_inside_one_document_take_the_plain_causal_path():
    from lmcore.data.loader import attention_doc_ids

    one_doc_rows = torch.tensor([[0, 0, 0], [1, 1, 1]], dtype=torch.int32)
    assert attention_doc_ids(one_doc_rows) is None
    mixed = torch.tensor([[0, 0, 0], [0, 1, 1]], dtype=torch.int32)
    assert attention_doc_ids(mixed) is mixed
    padded_eval_row = torch.tensor([[0, 0, -1]], dtype=torch.int32)
    assert attention_doc_ids(padded_eval_row) is not None
