"""PackedLoader serves the split as one stream of windows: exact, deterministic, resumable, shardable.

The shards here hold id == position in the split's stream, so every assertion can
say exactly which tokens a batch must contain.
"""

import numpy as np
import pytest
import torch

from lmcore.data.loader import IGNORE_INDEX, PackedLoader
from lmcore.data.token_shards import TokenShardWriter
from lmcore.errors import StoreError

TRAIN_DOCS = {"train-00000": [5, 17, 3, 40], "train-00001": [30, 8, 1, 25]}  # 129 tokens
N = 129
T = 8  # (N - 1) / T = 16 windows exactly


def untrained(positions):
    return positions % 7 == 3


def write(directory, name, lengths, first, split):
    n = sum(lengths)
    pos = np.arange(first, first + n)
    writer = TokenShardWriter(directory, name, 65535, split)
    writer.append(pos, (~untrained(pos)).astype(np.uint8), np.array(lengths), utf8_bytes=3 * n)
    return writer.close()


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokens")
    first = 0
    for name, lengths in TRAIN_DOCS.items():
        write(d, name, lengths, first, "train")
        first += sum(lengths)
    write(d, "eval-00000", [6, 14], 0, "eval")
    return d


def loader(token_dir, **kw):
    args = dict(split="train", seq_length=T, batch_size=2, seed=7)
    args.update(kw)
    return PackedLoader([token_dir], **args)


def window_starts(batch):
    return [int(row[0]) for row in batch.input_ids]


def test_windows_are_consecutive_stream_slices_that_share_their_boundary_token(token_dir):
    batches = list(loader(token_dir, batch_size=1, shuffle=False))
    assert len(batches) == 16
    for k, b in enumerate(batches):
        assert b.input_ids.tolist() == [list(range(k * T, k * T + T))]
        expected = [p if not untrained(p) else IGNORE_INDEX for p in range(k * T + 1, k * T + T + 1)]
        assert b.targets.tolist() == [expected]
    assert batches[0].input_ids.dtype == torch.int64 and batches[0].targets.dtype == torch.int64


def test_windows_cross_shard_boundaries(token_dir):
    b = list(loader(token_dir, batch_size=1, shuffle=False))[8]  # positions 64..72, shard 1 starts at 65
    assert b.input_ids[0].tolist() == list(range(64, 72))


def test_every_token_after_the_first_is_a_target_once_per_epoch(token_dir):
    seen = []
    for b in loader(token_dir, batch_size=3, drop_last=False, shuffle=True):
        seen += [p for p in b.targets.flatten().tolist() if p != IGNORE_INDEX]
    assert sorted(seen) == [p for p in range(1, N) if not untrained(p)]


def test_num_target_tokens_counts_the_trained_targets(token_dir):
    for b in loader(token_dir):
        assert b.num_target_tokens == int((b.targets != IGNORE_INDEX).sum())


def test_doc_ids_number_documents_within_each_window(token_dir):
    b = list(loader(token_dir, batch_size=1, shuffle=False))[0]  # docs start at 0, 5 (and 22 in the next window)
    assert b.doc_ids.dtype == torch.int32
    assert b.doc_ids[0].tolist() == [0] * 5 + [1] * 3
    b = list(loader(token_dir, batch_size=1, shuffle=False))[2]  # positions 16..23: doc starts at 22
    assert b.doc_ids[0].tolist() == [0] * 6 + [1] * 2
    # the target crossing into the next document (21 -> 22) is kept
    assert b.targets[0, 5].item() == 22


def test_order_depends_only_on_seed_and_epoch(token_dir):
    a = [window_starts(b) for b in loader(token_dir)]
    b = [window_starts(b) for b in loader(token_dir)]
    assert a == b
    other_seed = [window_starts(b) for b in loader(token_dir, seed=8)]
    assert other_seed != a
    second_epoch_loader = loader(token_dir)
    second_epoch_loader.set_epoch(1)
    second_epoch = [window_starts(b) for b in second_epoch_loader]
    assert second_epoch != a and sorted(sum(second_epoch, [])) == sorted(sum(a, []))


def test_iterating_twice_runs_consecutive_epochs(token_dir):
    ld = loader(token_dir)
    first = [window_starts(b) for b in ld]
    assert ld.state_dict()["epoch"] == 1
    second = [window_starts(b) for b in ld]
    fresh = loader(token_dir)
    fresh.set_epoch(1)
    assert second == [window_starts(b) for b in fresh] and second != first


@pytest.mark.parametrize("stop_after", [3, 8])  # 8 = the end of the epoch: resume goes on with epoch 1
def test_resuming_from_state_dict_yields_the_same_next_batches(token_dir, stop_after):
    uninterrupted = loader(token_dir)
    expected = [b.input_ids for b in uninterrupted] + [b.input_ids for b in uninterrupted]
    ld = loader(token_dir)
    it = iter(ld)
    for _ in range(stop_after):
        next(it)
    state = ld.state_dict()
    assert set(state) >= {"epoch", "position"}
    resumed = loader(token_dir)
    resumed.load_state_dict(state)
    got = [b.input_ids for b in resumed]  # a finished epoch resumes with the first batch of the next
    assert len(got) == (len(ld) if stop_after == len(ld) else len(ld) - stop_after)
    for g, e in zip(got, expected[stop_after:stop_after + len(got)], strict=True):
        assert torch.equal(g, e)


def test_state_from_different_data_is_rejected(token_dir):
    state = loader(token_dir).state_dict()
    with pytest.raises(StoreError, match="windows"):
        loader(token_dir, seq_length=4).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_batches_of_equal_count(token_dir, world_size):
    per_rank = [[window_starts(b) for b in loader(token_dir, rank=r, world_size=world_size)]
                for r in range(world_size)]
    assert len({len(p) for p in per_rank}) == 1
    assert len(loader(token_dir, rank=0, world_size=world_size)) == len(per_rank[0]) == 8 // world_size
    starts = [s for p in per_rank for batch in p for s in batch]
    assert len(starts) == len(set(starts))
    single = [window_starts(b) for b in loader(token_dir)]
    for r in range(world_size):  # rank r gets every world_size-th batch of the single-process order
        assert per_rank[r] == single[r::world_size][: len(per_rank[r])]


def test_len_is_batches_per_epoch(token_dir):
    assert len(loader(token_dir, batch_size=3)) == 16 // 3 == len(list(loader(token_dir, batch_size=3)))
    assert len(loader(token_dir, batch_size=3, drop_last=False, shuffle=False)) == 6


def test_eval_mode_pads_the_last_window_and_batch(token_dir):
    ld = loader(token_dir, split="eval", batch_size=2, shuffle=False, drop_last=False, pad_id=0)
    batches = list(ld)
    assert ld.num_tokens == 20 and len(ld) == len(batches) == 2  # windows start at 0, 8, 16 (16..19 partial)
    last = batches[-1]
    assert last.input_ids.shape == (2, T)
    assert last.input_ids[0].tolist() == [16, 17, 18, 0, 0, 0, 0, 0]
    assert last.targets[0, :3].tolist() == [p if not untrained(p) else IGNORE_INDEX for p in (17, 18, 19)]
    assert (last.targets[0, 3:] == IGNORE_INDEX).all() and (last.targets[1] == IGNORE_INDEX).all()
    assert last.doc_ids[0].tolist() == [0, 0, 0, -1, -1, -1, -1, -1] and (last.doc_ids[1] == -1).all()
    seen = sorted(p for b in batches for p in b.targets.flatten().tolist() if p != IGNORE_INDEX)
    assert seen == [p for p in range(1, 20) if not untrained(p)]


def test_eval_mode_ranks_stay_in_step_with_padding_batches(token_dir):
    counts = [len(list(loader(token_dir, split="eval", batch_size=2, shuffle=False, drop_last=False,
                                  rank=r, world_size=3))) for r in range(3)]
    assert counts == [1, 1, 1]
    empty = list(loader(token_dir, split="eval", batch_size=2, shuffle=False, drop_last=False, rank=2,
                        world_size=3))[0]
    assert empty.num_target_tokens == 0 and (empty.targets == IGNORE_INDEX).all()


def test_totals_cover_only_the_requested_split(token_dir):
    train = loader(token_dir)
    assert (train.num_tokens, train.utf8_bytes, train.num_docs) == (N, 3 * N, 8)
    ev = loader(token_dir, split="eval", shuffle=False, drop_last=False)
    assert (ev.num_tokens, ev.utf8_bytes, ev.num_docs) == (20, 60, 2)


def test_several_token_dirs_form_one_stream_in_shard_name_order(token_dir, tmp_path):
    write(tmp_path, "train-00002", [10, 10], N, "train")
    ld = PackedLoader([tmp_path, token_dir], "train", T, 1, seed=0, shuffle=False)
    assert ld.num_tokens == N + 20
    assert ld.num_windows == (N + 20 - 1) // T
    assert [b.input_ids[0, 0].item() for b in ld] == list(range(0, N + 20 - T, T))


def test_missing_split_or_too_little_data_is_a_store_error(token_dir):
    with pytest.raises(StoreError, match="no 'test' token shards"):
        loader(token_dir, split="test")
    with pytest.raises(StoreError, match="too few"):
        loader(token_dir, split="eval", seq_length=64)


def test_loader_serves_pretokenized_shards_with_chat_masks(tmp_path):
    from lmcore.config import DataConfig, PipelineConfig, TokenizerConfig
    from lmcore.data.pretokenize import run_pretokenize_shard
    from lmcore.data.tokenizer import LmcoreTokenizer, run_train_tokenizer
    from tests.fixtures.text_shards import write_corpus

    files = write_corpus(tmp_path / "shards", docs_per_shard=30, shards=2)
    run_train_tokenizer(tmp_path / "shards", TokenizerConfig(), DataConfig(), 300, tmp_path / "tok")
    for f in files:
        run_pretokenize_shard(f, tmp_path / "tok", PipelineConfig(), tmp_path / "tokens")
    tok = LmcoreTokenizer.load(tmp_path / "tok")
    ld = PackedLoader(tmp_path / "tokens", "train", 32, 4, seed=0, shuffle=False, drop_last=False,
                      pad_id=tok.pad_id)
    stream = np.concatenate([np.load(tmp_path / "tokens" / f"train-0000{i}.ids.npy") for i in range(2)])
    mask = np.concatenate([np.load(tmp_path / "tokens" / f"train-0000{i}.mask.npy") for i in range(2)])
    targets = [t for b in ld for t in b.targets.flatten().tolist() if t != IGNORE_INDEX]
    assert targets == stream[1:][mask[1:] == 1].tolist()
    assert 0 < int((mask == 0).sum())  # the conversations' prompts are not trained
    first = next(iter(PackedLoader(tmp_path / "tokens", "train", 32, 1, seed=0, shuffle=False)))
    assert first.input_ids[0, 0].item() == tok.bos_id
