"""Exactly once across ranks x workers: 2 gloo processes x 2 data-loader workers count sample keys.

The corpus has uneven shards (5 shards of 1 to 9 samples, 25 samples) so neither shards nor
samples divide by the 4 slots. Every sample must be read by exactly one slot, every rank must
yield the same number of batches (an uneven rank hangs DDP), and whatever a rank had to drop
to stay even is reported by key, never silently lost. Both unpacked and packed batching.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.prep.demo import demo_samples
from qinyu_lit.prep.writer import write_shard

SHARD_SIZES = (5, 3, 9, 1, 7)
MODES = {"unpacked": dict(batch_size=2), "packed": dict(batch_size=1, pack_length=300, pack_window=6)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, train: str, tokenizer: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = {}
        for mode, kw in MODES.items():
            dm = QinYuDataModule(
                train=train, tokenizer=tokenizer, codebook_size=64, num_workers=2, shuffle_buffer=4, **kw
            )
            dm.prepare_data()
            loader = dm.train_dataloader()
            keys, batches, printed = [], 0, io.StringIO()
            with contextlib.redirect_stdout(printed):
                for batch in loader:
                    keys += [k for row in batch["keys"] for k in row]
                    batches += 1
            result[mode] = {
                "keys": keys,
                "batches": batches,
                "dropped": loader.dropped_keys,
                "dropped_batches": loader.dropped_batches,
                "dropped_to_balance": loader.pending_counts.get("dropped_to_balance", 0),
                "summary": [ln for ln in printed.getvalue().splitlines() if "dropped so that every rank" in ln],
            }
        with open(f"{out}.{rank}", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def uneven_corpus(demo_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("uneven")
    samples = [
        s
        for task in ("asr", "tts", "text", "conversation", "singing")
        for s in demo_samples(task, 5, 9, 16, 8, 64)
    ]
    start = 0
    for i, n in enumerate(SHARD_SIZES):
        write_shard(samples[start : start + n], root / f"shard-{i:06d}.tar")
        start += n
    return root, sorted(s.key for s in samples)


def test_every_sample_once_and_equal_batches_per_rank(uneven_corpus, demo_dir, tmp_path):
    root, all_keys = uneven_corpus
    out = str(tmp_path / "result")
    # forked ranks (like torchrun's, whose workers fork too) start in a second instead of re-importing torch
    mp.start_processes(
        _rank_main,
        args=(2, _free_port(), str(root), str(demo_dir / "tokenizer"), out),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    ranks = [json.load(open(f"{out}.{r}")) for r in range(2)]
    for mode in MODES:
        seen = [k for r in ranks for k in r[mode]["keys"]]
        dropped = [k for r in ranks for k in r[mode]["dropped"]]
        assert len(seen) == len(set(seen)), f"{mode}: a sample was read twice"
        assert sorted(seen + dropped) == all_keys, (
            f"{mode}: every sample is trained on or reported dropped, once"
        )
        assert ranks[0][mode]["batches"] == ranks[1][mode]["batches"] > 0, (
            f"{mode}: ranks ran uneven batch counts"
        )
        # ranks hold the same number of samples (to one); what differs is at most a batch per worker
        assert all(r[mode]["dropped_batches"] <= 2 for r in ranks), f"{mode}: dropped more than the remainder"
        # the counter the next batch carries to data/dropped_to_balance: every dropped sample, per rank
        assert [r[mode]["dropped_to_balance"] for r in ranks] == [len(r[mode]["dropped"]) for r in ranks]
        assert ranks[1][mode]["summary"] == [] and len(ranks[0][mode]["summary"]) == (1 if dropped else 0)
        if dropped:  # one line for the epoch, on rank 0, with the total over ranks
            assert f": {len(dropped)} samples (" in ranks[0][mode]["summary"][0]
