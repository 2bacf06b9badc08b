"""Packing: whole samples into fixed-length packs, tighter than the official greedy packer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.data.packing import best_fit_decreasing, greedy_packs, split_full


def test_best_fit_decreasing_worked_example():
    bins = best_fit_decreasing([6, 5, 4, 3, 2], 10)
    assert sorted(sorted(b.members) for b in bins) == [[0, 2], [1, 3, 4]]
    assert [b.used for b in bins] == [10, 10]
    assert greedy_packs([6, 5, 4, 3, 2], 10) == [[0], [1, 2], [3, 4]]


def test_best_fit_decreasing_on_a_random_mix_is_valid_and_tighter():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in np.concatenate([rng.integers(50, 400, 300), rng.integers(1500, 6000, 60)])]
    bins = best_fit_decreasing(lengths, 10_000)
    members = sorted(i for b in bins for i in b.members)
    assert members == list(range(len(lengths)))  # every sample exactly once
    assert all(b.used == sum(lengths[i] for i in b.members) <= 10_000 for b in bins)
    lower_bound = -(-sum(lengths) // 10_000)
    assert len(bins) <= lower_bound + 1 < len(greedy_packs(lengths, 10_000))
    ready, held = split_full(bins, 10_000, 0.99, max_leftover=50)
    assert all(b.used >= 9_900 for b in ready) or not held
    assert sum(len(b.members) for b in held) <= 50


def _dm(demo_dir, **kw):
    args = dict(
        train=str(demo_dir / "train"),
        tokenizer=str(demo_dir / "tokenizer"),
        codebook_size=64,
        batch_size=2,
        shuffle_buffer=8,
        pack_window=16,
    )
    dm = QinYuDataModule(**{**args, **kw})
    dm.prepare_data()
    return dm


def test_stream_packs_whole_samples_with_restarting_positions(demo_dir):
    dm = _dm(demo_dir, pack_length=300)
    batches = list(dm.train_dataloader())
    keys = [k for b in batches for row in b["keys"] for k in row]
    assert len(keys) == len(set(keys)) == 28
    for b in batches:
        assert b["input_ids"].shape[1] == 300  # fixed pack length, padded tail
        for r, lengths in enumerate(b["lengths"]):
            assert sum(lengths) <= 300
            starts = np.cumsum([0] + lengths[:-1])
            pos = b["position_ids"][r]
            assert all(int(pos[s]) == 0 for s in starts)
            assert torch.equal(pos[: lengths[0]], torch.arange(lengths[0]))
    again = list(_dm(demo_dir, pack_length=300).train_dataloader())
    assert [b["keys"] for b in again] == [b["keys"] for b in batches]  # a pure function of seed and epoch


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_overlong_samples_are_truncated_or_dropped_and_counted(demo_dir, policy):
    dm = _dm(demo_dir, pack_length=60, overlong=policy, batch_size=1)
    batches = list(dm.train_dataloader())
    counted = sum(
        b["data_stats"]["truncated" if policy == "truncate" else "dropped_overlong"] for b in batches
    )
    keys = [k for b in batches for row in b["keys"] for k in row]
    assert counted > 0
    assert all(sum(lengths) <= 60 for b in batches for lengths in b["lengths"])
    assert len(keys) == (28 if policy == "truncate" else 28 - counted)
