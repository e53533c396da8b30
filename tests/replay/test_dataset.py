"""ReplayWindowDataset: deterministic per-step batches, DDP shards, DataLoader workers, train/holdout subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aime_rl.replay import ReplayStore, ReplayWindowDataset
from tests.replay.helpers import decode_rows, write_encoded_store


def assert_same_batch(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_data_loader_with_two_workers_yields_the_in_process_batches(tmp_path):
    write_encoded_store(tmp_path, [19, 24, 29, 34, 39], chunk_length=8)
    dataset = ReplayWindowDataset(tmp_path, batch_size=4, length=5, seed=7, num_workers=2)
    in_process = [dataset[step] for step in range(3, 9)]
    loader = dataset.loader(start_step=3)
    assert loader.num_workers == 2
    for want, got in zip(in_process, loader, strict=False):  # the loader is endless: zip stops after 6
        assert_same_batch(got, want)
    torch_state = torch.random.get_rng_state()
    batches = dataset.batches(start_step=3)  # what the trainer iterates, also through the 2 workers
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # the global torch RNG is not advanced
    for want in in_process:
        assert_same_batch(next(batches), want)
    for batch in in_process:  # windows are [B, T, 3, H, W] uint8 inside one episode
        assert batch["frames"].shape == (4, 5, 3, 8, 8) and batch["frames"].dtype == torch.uint8
        assert batch["actions"].shape == (4, 5)
        rows, tags = decode_rows(batch["frames"])
        np.testing.assert_array_equal(tags, batch["episode_index"].numpy()[:, None].repeat(5, 1))
        np.testing.assert_array_equal(rows, batch["start"].numpy()[:, None] + np.arange(5))
    with pytest.raises(ValueError, match="at least length=60"):
        ReplayWindowDataset(tmp_path, batch_size=4, length=60, num_workers=2).loader()


@pytest.mark.parametrize("recency", [None, 2.0])
def test_batches_are_a_pure_function_of_seed_step_and_rank(tmp_path, recency):
    write_encoded_store(tmp_path, [9, 14, 19, 24, 29, 34])
    options = dict(batch_size=3, length=4, recency=recency, world_size=2)
    dataset = ReplayWindowDataset(tmp_path, seed=5, rank=1, **options)
    forward = [dataset[step] for step in range(6)]
    fresh = ReplayWindowDataset(tmp_path, seed=5, rank=1, **options)  # new object, store opened again
    for step in reversed(range(6)):  # any order: no hidden sampler state
        assert_same_batch(fresh[step], forward[step])
    assert not torch.equal(forward[0]["start"], forward[1]["start"])  # steps differ
    assert not torch.equal(
        ReplayWindowDataset(tmp_path, seed=6, rank=1, **options)[0]["start"], forward[0]["start"]
    )
    single = ReplayWindowDataset(
        tmp_path, 6, 4, seed=5, recency=recency
    )  # world_size 1: the store's own sampler
    expected = ReplayStore.open(tmp_path).sample_windows(6, 4, np.random.default_rng([5, 2]), recency)
    assert_same_batch(single[2], expected)


def test_ranks_read_disjoint_shards_of_one_global_batch(tmp_path):
    write_encoded_store(tmp_path, [9, 14, 19, 24, 29, 34])
    whole = ReplayWindowDataset(tmp_path, batch_size=6, length=4, seed=3)  # one process, global batch 6
    per_rank = ReplayWindowDataset(tmp_path, batch_size=2, length=4, seed=3)
    ranks = [per_rank.shard(rank, world_size=3) for rank in range(3)]  # what each DDP rank's Trainer draws
    for step in (0, 4):
        shards = [rank[step] for rank in ranks]
        for key, value in whole[step].items():  # rank r holds rows [2 r, 2 r + 2) of the global batch
            assert torch.equal(torch.cat([shard[key] for shard in shards]), value), key
        assert not torch.equal(shards[0]["frames"], shards[1]["frames"])
    shard = whole.shard(2, 3, seed=9)  # a copy with another stream identity; the original is unchanged
    assert (shard.rank, shard.world_size, shard.seed) == (2, 3, 9) and (whole.rank, whole.world_size) == (
        0,
        1,
    )
    with pytest.raises(ValueError, match="rank"):
        whole.shard(3, 3)
    with pytest.raises(ValueError, match="rank"):
        ReplayWindowDataset(tmp_path, 2, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="step"):
        whole[-1]


def test_train_and_holdout_subsets_are_disjoint(tmp_path):
    write_encoded_store(tmp_path, [5] * 12)
    train = ReplayWindowDataset(tmp_path, 8, 2, subset="train", holdout_fraction=0.5)
    holdout = ReplayWindowDataset(tmp_path, 8, 2, subset="holdout", holdout_fraction=0.5)
    assert set(train.episode_ids()).isdisjoint(holdout.episode_ids())
    assert set(train.episode_ids()) | set(holdout.episode_ids()) == set(range(12))
    for step in range(3):
        assert set(train[step]["episode_index"].tolist()) <= set(train.episode_ids())
        assert set(holdout[step]["episode_index"].tolist()) <= set(holdout.episode_ids())
    with pytest.raises(ValueError, match="'holdout' subset .* is empty"):
        ReplayWindowDataset(tmp_path, 8, 2, subset="holdout", holdout_fraction=0.0).check()
    with pytest.raises(ValueError, match="subset"):
        ReplayWindowDataset(tmp_path, 8, 2, subset="test")
