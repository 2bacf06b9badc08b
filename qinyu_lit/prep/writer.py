"""Samples -> WebDataset shards.

Every sample goes through the schema validator (``decode_sample``) before it is written,
so a shard on disk only holds samples the reader accepts. A shard is written under a
temporary name and renamed when complete: a crash never leaves a half shard under a
final name, and shards already finished are never touched again.

Each shard is recorded in ``index.json`` beside it (its sample count, the codec), which is how
the reader tells a truncated shard from a short one. Writers running in parallel into one folder
(``qinyu-lit data build``) pass ``index=False`` and write the whole index themselves at the end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import webdataset as wds

from ..data.files import atomic_path, atomic_write_text
from ..data.index import INDEX_FORMAT
from ..data.schema import SCHEMA_VERSION, Sample, decode_sample, encode_sample

INDEX_NAME = "index.json"


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


def record_in_index(shard: Path, count: int, codec: dict | None) -> Path:
    """Add or replace ``shard``'s entry (``{"path", "samples"}``) in ``index.json`` of its folder,
    in the layout ``qinyu-lit data build`` writes (data/index.py reads it back)."""
    index = shard.parent / INDEX_NAME
    doc = json.loads(index.read_text()) if index.exists() else {"format": INDEX_FORMAT, "schema": SCHEMA_VERSION}
    entries = [e for e in doc.get("shards", []) if e.get("path") != shard.name]
    first = not entries
    entries = sorted(entries + [{"path": shard.name, "samples": count}], key=lambda e: e["path"])
    if first:
        doc["codec"] = codec
    elif doc.get("codec") != codec:
        doc["codec"] = None  # mixed codecs: no set-wide codec to check (each sample still carries its own)
    doc["shards"] = entries
    doc.setdefault("totals", {})["samples"] = sum(e["samples"] for e in entries)
    atomic_write_text(index, json.dumps(doc, indent=1, ensure_ascii=False))
    return index


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
