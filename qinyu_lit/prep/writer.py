"""Samples -> WebDataset shards.

Every sample goes through the schema validator (``decode_sample``) before it is written,
so a shard on disk only holds samples the reader accepts. A shard is written under a
temporary name and renamed when complete: a crash never leaves a half shard under a
final name, and shards already finished are never touched again.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import webdataset as wds

from ..data.files import atomic_path
from ..data.schema import Sample, decode_sample, encode_sample


def shard_name(index: int, prefix: str = "shard") -> str:
    return f"{prefix}-{index:06d}.tar"


def write_shard(samples: Iterable[Sample], path: str | Path) -> int:
    """Write ``samples`` to one tar at ``path`` (atomically). Returns the sample count."""
    count = 0
    # an unfinished shard is dropped whole; finished shards are untouched.
    # fixed member times: the same samples give byte-identical shards (resumed builds, reproducible demo)
    with atomic_path(path) as tmp, wds.TarWriter(str(tmp), mtime=0) as sink:
        for sample in samples:
            raw = encode_sample(sample)
            decode_sample(raw, shard=str(path))  # the reader's validator, before anything is written
            sink.write(raw)
            count += 1
    return count


def write_shards(samples: Iterable[Sample], out_dir: str | Path, samples_per_shard: int = 1000, prefix: str = "shard") -> list[Path]:
    """Split ``samples`` into shards of ``samples_per_shard`` under ``out_dir``; returns their paths."""
    paths, batch = [], []
    for sample in samples:
        batch.append(sample)
        if len(batch) == samples_per_shard:
            paths.append(Path(out_dir) / shard_name(len(paths), prefix))
            write_shard(batch, paths[-1])
            batch = []
    if batch:
        paths.append(Path(out_dir) / shard_name(len(paths), prefix))
        write_shard(batch, paths[-1])
    return paths
