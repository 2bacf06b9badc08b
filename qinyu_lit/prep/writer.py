"""Samples -> WebDataset shards.

Every sample goes through the schema validator (``decode_sample``) before it is written,
so a shard on disk only holds samples the reader accepts. A shard is written under a
temporary name and renamed when complete: a crash never leaves a half shard under a
final name, and shards already finished are never touched again.

Each shard is recorded in ``index.json`` beside it (its sample count, the codec; ``data/index.py``), which is how
the reader tells a truncated shard from a short one. Writers running in parallel into one folder
(``qinyu-lit data build``) pass ``index=False`` and write the whole index themselves at the end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import webdataset as wds

from ..data.files import atomic_path
from ..data.index import INDEX_NAME, record_in_index  # noqa: F401 - data/index.py owns the file's format
from ..data.schema import Sample, decode_sample, encode_sample


def shard_name(index: int, prefix: str = "shard") -> str:
    return f"{prefix}-{index:06d}.tar"


def write_shard(samples: Iterable[Sample], path: str | Path, index: bool = True) -> int:
    """Write ``samples`` to one tar at ``path`` (atomically) and, with ``index``, record it in the
    folder's ``index.json``. Returns the sample count."""
    codecs = set()
    count = 0
    # an unfinished shard is dropped whole; finished shards are untouched.
    # fixed member times: the same samples give byte-identical shards (resumed builds, reproducible demo)
    with atomic_path(path) as tmp, wds.TarWriter(str(tmp), mtime=0) as sink:
        for sample in samples:
            raw = encode_sample(sample)
            decode_sample(raw, shard=str(path))  # the reader's validator, before anything is written
            sink.write(raw)
            codecs.add(json.dumps(dataclasses.asdict(sample.codec), sort_keys=True))
            count += 1
    if index:
        record_in_index(Path(path), count, json.loads(codecs.pop()) if len(codecs) == 1 else None)
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
