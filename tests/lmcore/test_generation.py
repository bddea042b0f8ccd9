"""KV-cache generation: equals full recomputation, handles ragged batches, sampling filters and stop tokens."""

import pytest
import torch

from lmcore.config import ModelConfig
from lmcore.model import Transformer, sample_next_token

VOCAB = 61


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    # A large init spreads the logits so greedy paths vary instead of repeating one token.
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      seq_length=32, init_std=0.3)
    return Transformer(cfg).eval()


def greedy_without_cache(model, prompt: list[int], steps: int) -> list[int]:
    seq = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(steps):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[0, len(prompt):].tolist()


def test_greedy_with_cache_equals_recomputing_the_full_sequence(model):
    prompt = [3, 14, 15, 9, 26]
    out = model.generate(torch.tensor([prompt]), max_new_tokens=12, temperature=0)
    assert out.shape == (1, 12)
    assert out[0].tolist() == greedy_without_cache(model, prompt, 12)
    assert len(set(out[0].tolist())) > 1  # a real path, not one repeated token


def test_ragged_batch_matches_each_prompt_alone_without_cache(model):
    prompts = [[5, 8], [1, 2, 3, 4, 5, 6, 7], [40, 41, 42, 43]]
    out = model.generate(prompts, max_new_tokens=10, temperature=0)
    assert out == [greedy_without_cache(model, p, 10) for p in prompts]


def test_right_padded_tensor_with_attention_mask_equals_list_input(model):
    prompts = [[5, 8, 13], [21, 34, 55, 2, 7]]
    ids = torch.tensor([[5, 8, 13, 0, 0], [21, 34, 55, 2, 7]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=6, temperature=0)
    assert out.tolist() == model.generate(prompts, max_new_tokens=6, temperature=0)


def test_top_k_one_equals_greedy(model):
    prompts = [[7, 7, 1], [30, 2]]
    gen = torch.Generator().manual_seed(0)
    sampled = model.generate(prompts, max_new_tokens=8, temperature=0.8, top_k=1, generator=gen)
    assert sampled == model.generate(prompts, max_new_tokens=8, temperature=0)


def test_sampling_is_reproducible_with_a_generator_and_varies_without_filters(model):
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, max_new_tokens=16, temperature=1.5, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, max_new_tokens=16, temperature=1.5, generator=torch.Generator().manual_seed(7))
    c = model.generate(prompt, max_new_tokens=16, temperature=1.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_stop_token_ends_its_row_while_others_continue(model):
    prompts = [[3, 14, 15, 9, 26], [2, 7, 18]]
    free = model.generate(prompts, max_new_tokens=10, temperature=0)
    stop = free[0][3]
    expected = [row[: row.index(stop) + 1] if stop in row else row for row in free]
    assert len(expected[0]) <= 4 and len(expected[1]) == 10  # row 0 stops early, row 1 runs to the end
    assert model.generate(prompts, max_new_tokens=10, temperature=0, stop_tokens=[stop]) == expected
    as_tensor = model.generate(torch.tensor([prompts[0]]), max_new_tokens=10, temperature=0, stop_tokens=stop,
                               pad_token_id=-1)
    assert as_tensor[0].tolist() == expected[0]  # every row stopped: generation ends early


def test_finished_rows_are_padded_in_tensor_output(model):
    ids = torch.tensor([[3, 14, 15, 9, 26], [11, 12, 13, 14, 15]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])  # a padded prompt too: -1 never reaches the model
    free = model.generate(ids, attention_mask=mask, max_new_tokens=8, temperature=0)
    stop = int(free[0, 1])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=8, temperature=0, stop_tokens=[stop],
                         pad_token_id=-1)
    first = free[0].tolist().index(stop)
    assert out[0, : first + 1].tolist() == free[0, : first + 1].tolist()
    assert (out[0, first + 1:] == -1).all()


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample_next_token(logits, 1.0, top_p=0.7, generator=gen)) for _ in range(200)}
    assert draws == {0, 1}  # 0.5 + 0.3 covers 0.7; tokens 2 and 3 are never drawn
    assert {int(sample_next_token(logits, 1.0, top_p=0.01, generator=gen)) for _ in range(20)} == {0}


def test_generation_beyond_training_length_and_restores_training_mode(model):
    model.train()
    try:
        out = model.generate([[1, 2, 3]], max_new_tokens=40, temperature=0)  # 43 > seq_length 32
        assert model.training
    finally:
        model.eval()
    assert len(out[0]) == 40
    assert out[0] == greedy_without_cache(model, [1, 2, 3], 40)


def test_invalid_arguments_are_refused(model):
    with pytest.raises(ValueError, match="temperature"):
        model.generate([[1]], max_new_tokens=2, temperature=-1)
    with pytest.raises(ValueError, match="prompt"):
        model.generate([[1], []], max_new_tokens=2)


def test_missing_special_ids_passed_as_none_are_ignored(model):
    prompts = [[3, 14, 15, 9, 26]]
    free = model.generate(prompts, max_new_tokens=6, temperature=0)
    stop = free[0][2]
    out = model.generate(prompts, max_new_tokens=6, temperature=0, stop_tokens=[None, stop], pad_token_id=None)
    assert out == [free[0][: free[0].index(stop) + 1]]
