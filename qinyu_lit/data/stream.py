"""Streaming from shards to batches: the loader's whole path, one generator per step.

    shards --split by rank and worker--> raw samples (webdataset tar iterators)
           --decode_sample-->             validated Sample
           --TokenLayout.build-->         TokenSequence (tokenize, interleave, delay, placeholders)
           --shuffle buffer-->            TokenSequence in a seeded order
           --batch (or pack)-->           lists of sequences -> ``collate`` -> tensors

Everything runs in DataLoader workers on CPU (the codec never runs here: shards already
hold codes). Batching happens in the stream, not in ``__getitem__``, so a batch never
depends on which worker happened to hold which sample. The DataLoader is used with
``batch_size=None``.
"""

from __future__ import annotations

import glob
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from .layout import TokenLayout, TokenSequence
from .schema import decode_sample


def expand_shards(spec: str) -> list[str]:
    """A directory (every ``*.tar`` in it), a glob, a brace pattern or one file -> sorted shard paths."""
    import braceexpand

    paths: list[str] = []
    for part in braceexpand.braceexpand(spec):
        if os.path.isdir(part):
            paths += sorted(str(p) for p in Path(part).glob("*.tar"))
        elif any(c in part for c in "*?["):
            paths += sorted(glob.glob(part))
        else:
            paths.append(part)
    if not paths:
        raise FileNotFoundError(f"no shards found for {spec!r} (a directory of .tar files, a glob or a file)")
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"shard(s) listed but missing: {', '.join(missing[:5])}")
    return paths


def iter_raw_samples(shards: list[str]) -> Iterator[dict]:
    """Raw WebDataset samples (member suffix -> bytes, plus ``__key__`` and ``__url__``)."""
    for shard in shards:
        with open(shard, "rb") as stream:
            yield from group_by_keys(tar_file_expander([{"url": shard, "stream": stream}]))


def shuffled(items: Iterator, buffer_size: int, rng: random.Random) -> Iterator:
    """Reservoir-style shuffle with a bounded buffer (memory stays flat with corpus size)."""
    if buffer_size <= 1:
        yield from items
        return
    buf = []
    for item in items:
        if len(buf) < buffer_size:
            buf.append(item)
            continue
        i = rng.randrange(len(buf))
        yield buf[i]
        buf[i] = item
    rng.shuffle(buf)
    yield from buf


def worker_slot() -> tuple[int, int]:
    """(index, count) of this data-loader worker among all ranks x workers."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = get_worker_info()
    wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nworkers + wid, world * nworkers


def batches_of(sequences: Iterator[TokenSequence], batch_size: int) -> Iterator[list[list[TokenSequence]]]:
    """Unpacked batching: each row holds one sequence, padded to the longest in the batch."""
    batch: list[list[TokenSequence]] = []
    for seq in sequences:
        batch.append([seq])
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def collate(rows: list[list[TokenSequence]], pad_id: int, num_codebooks: int, pad_to: int | None = None) -> dict:
    """Rows of sequences -> the model's batch.

    Each row is one or more sequences laid end to end (a pack). ``position_ids`` restart
    at 0 for every sequence and for the padding tail, which is how transformers tells
    packed samples apart and keeps their attention separate (no hand-made masks).
    """
    lengths = [sum(len(s) for s in row) for row in rows]
    width = max(max(lengths), pad_to or 0)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    codes = torch.full((batch, width, num_codebooks), -1, dtype=torch.long)
    target_mask = torch.zeros((batch, width), dtype=torch.bool)
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    speakers, features = [], []
    for b, row in enumerate(rows):
        t = 0
        for seq in row:
            n = len(seq)
            input_ids[b, t : t + n] = torch.from_numpy(seq.input_ids)
            codes[b, t : t + n] = torch.from_numpy(seq.codes)
            target_mask[b, t : t + n] = torch.from_numpy(seq.target_mask)
            position_ids[b, t : t + n] = torch.arange(n)
            speakers += seq.speakers
            features += seq.audio_features
            t += n
        position_ids[b, t:] = torch.arange(width - t)
    out = {
        "input_ids": input_ids,
        "codes": codes,
        "target_mask": target_mask,
        "position_ids": position_ids,
        "speakers": torch.from_numpy(np.stack(speakers)) if speakers else torch.zeros(0, 0),
        "num_tokens": torch.tensor(sum(lengths)),
        "keys": [[s.key for s in row] for row in rows],
        "sources": [[s.source for s in row] for row in rows],
        "tasks": [[s.task for s in row] for row in rows],
    }
    if features:
        lens = torch.tensor([len(f) for f in features])
        feats = torch.zeros(len(features), int(lens.max()), features[0].shape[1])
        for i, f in enumerate(features):
            feats[i, : len(f)] = torch.from_numpy(f)
        out["audio_features"], out["audio_feature_lens"] = feats, lens
    return out


class ShardStream(IterableDataset):
    """An iterable of collated batches read from WebDataset shards.

    Args:
        shards: shard paths (see ``expand_shards``).
        layout: the ``TokenLayout`` that turns samples into token sequences.
        batch_size: sequences per batch (rows, padded to the longest).
        shuffle_buffer: samples held for shuffling; 0 or 1 keeps shard order.
        seed: base seed; shard order and sample order depend on ``seed`` and the epoch.
    """

    def __init__(self, shards: list[str], layout: TokenLayout, batch_size: int = 4, shuffle_buffer: int = 0, seed: int = 0):
        super().__init__()
        self.shards, self.layout = list(shards), layout
        self.batch_size, self.shuffle_buffer, self.seed = batch_size, shuffle_buffer, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self) -> list[str]:
        slot, slots = worker_slot()
        order = list(self.shards)
        if self.shuffle_buffer > 1:
            random.Random(self.seed * 100003 + self.epoch).shuffle(order)
        return order[slot::slots]

    def sequences(self) -> Iterator[TokenSequence]:
        for raw in iter_raw_samples(self.my_shards()):
            yield self.layout.build(decode_sample(raw))

    def __iter__(self) -> Iterator[dict]:
        slot, _ = worker_slot()
        rng = random.Random((self.seed * 100003 + self.epoch) * 1009 + slot)
        seqs = shuffled(self.sequences(), self.shuffle_buffer, rng)
        for rows in batches_of(seqs, self.batch_size):
            yield collate(rows, self.layout.ids.pad, self.layout.num_codebooks)
