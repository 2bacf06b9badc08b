"""Weighted mixtures of shard sets and the per-epoch plan that splits them exactly once.

A stage's data is a list of sources, each a shard set with a weight and a name::

    train:
      - {path: data/asr/train, weight: 0.5, name: asr}        # half of ASR each epoch
      - {path: data/dialogue/train, weight: 2.0, name: chat}  # every dialogue twice

``weight`` is how many times each sample of that source is read per epoch: ``1`` once,
``2`` twice, ``0.5`` a seeded half that changes every epoch. A plain string or list of strings
is a list of sources of weight 1 named by their path.

The epoch plan is a pure function of (sources, seed, epoch): a list of items
``(shard, offset in shard)`` in a shuffled shard order, cut into one contiguous range per
slot (ranks x data-loader workers, sizes differing by at most one). Every planned item is
read by exactly one slot. Reading a range is sequential inside each shard, and a slot
interleaves ``mix_shards`` shards at a time so its batches mix sources.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import QinYuError, bad_data
from .index import INDEX_NAME, indexed_counts
from .tar import scan_count


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


@dataclass(frozen=True)
class Source:
    """One shard set of a mixture.

    Args:
        path: a directory of ``.tar`` shards, a glob or a brace pattern.
        weight: reads of each sample per epoch (0.5 = a seeded half, 2 = twice).
        name: the name in logs (``data/samples/<name>``); defaults to ``path``.
    """

    path: str
    weight: float = 1.0
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.path


def parse_sources(spec) -> list[Source]:
    """``str`` | list of ``str`` / ``{path, weight, name}`` / ``Source`` -> ``list[Source]``."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, (str, dict, Source)) else list(spec)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Source):
            src = item
        elif isinstance(item, str):
            src = Source(item)
        elif isinstance(item, dict):
            unknown = set(item) - {"path", "weight", "name"}
            if "path" not in item or unknown:
                raise ValueError(f"data source #{i} must be {{path, weight, name}}, got keys {sorted(item)}")
            src = Source(str(item["path"]), float(item.get("weight", 1.0)), item.get("name"))
        else:
            raise TypeError(
                f"data source #{i}: expected a path or {{path, weight, name}}, got {type(item).__name__}"
            )
        if not src.weight >= 0:
            raise ValueError(f"data source {src.label!r}: weight must be >= 0, got {src.weight}")
        out.append(src)
    names = [s.label for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"data source names must be unique, got {names}")
    return out


class UncheckedCountsWarning(UserWarning):
    """Shards without an ``index.json`` entry: samples lost to truncation cannot be detected or counted."""


_UNCHECKED_WARNED: set[str] = set()


def shard_counts(shards: Sequence[str], strict: bool = False) -> list[int]:
    """Samples per shard: from ``index.json`` (then the reader warns about and counts every sample a
    damaged shard lacks), else from the tar headers, which cannot tell a truncated shard from a short
    one; a shard whose headers cannot be read (empty file, garbled header) is warned about (strict: fails)."""
    counts, unindexed = [], []
    for s in shards:
        c = (indexed_counts(os.path.dirname(s)) or {}).get(os.path.basename(s))
        if c is None:
            unindexed.append(s)
            c, error = scan_count(s)
            if error is not None:
                bad_data(
                    f"{s}: not a readable tar after {c} sample(s) ({error}); without an {INDEX_NAME} entry the "
                    "samples after that point cannot be counted",
                    strict,
                )
        counts.append(c)
    folders = sorted({os.path.dirname(s) for s in unindexed} - _UNCHECKED_WARNED)
    if folders:
        _UNCHECKED_WARNED.update(folders)
        warnings.warn(
            f"{len(unindexed)} shard(s) in {', '.join(folders)} have no index.json entry: their sample counts come "
            "from the tar headers, so samples lost to a truncated shard cannot be detected or counted "
            "(shards written by qinyu-lit data build, demo-data, persona-data or prep.writer.write_shard have one)",
            UncheckedCountsWarning,
            stacklevel=2,
        )
    return counts


def listed_but_missing(spec: str, strict: bool) -> list[str]:
    """Shards a directory's ``index.json`` lists that are not on disk. They stay in the plan with their
    indexed counts, so the reader skips and counts every one of their samples (``data/skipped``)
    each epoch; the loss is warned about here, once, and ``strict`` refuses to start."""
    if not os.path.isdir(spec):
        return []
    listed = indexed_counts(spec) or {}
    missing = sorted(name for name in listed if not (Path(spec) / name).exists())
    if not missing:
        return []
    lost = sum(listed[m] for m in missing)
    message = (
        f"{Path(spec) / INDEX_NAME} lists {len(missing)} shard(s) missing from {spec} ({', '.join(missing[:5])}): "
        f"their {lost} samples are skipped and counted in data/skipped every epoch; restore them or rebuild the index"
    )
    if strict:
        raise QinYuError(message + " (strict mode)")
    bad_data(message, strict=False)
    return [str(Path(spec) / m) for m in missing]


@dataclass
class Catalog:
    """Every shard of every source with its sample count (built once, in the main process)."""

    sources: list[Source]
    shards: list[str]
    counts: np.ndarray  # int64 [num shards]
    shard_source: np.ndarray  # int32 [num shards]

    @classmethod
    def build(cls, sources: list[Source], strict: bool = False) -> Catalog:
        """Read every source's shards and counts; ``strict`` refuses shards that are listed but missing
        or unreadable (otherwise they are warned about, and their samples skipped and counted)."""
        shards, counts, owner = [], [], []
        for i, src in enumerate(sources):
            paths = expand_shards(src.path)
            paths = sorted(paths + listed_but_missing(src.path, strict))
            n = shard_counts(paths, strict)
            if sum(n) == 0:
                raise ValueError(
                    f"data source {src.label!r} ({src.path}) holds no samples in {len(paths)} shard(s)"
                )
            shards += paths
            counts += n
            owner += [i] * len(paths)
        return cls(sources, shards, np.asarray(counts, np.int64), np.asarray(owner, np.int32))

    def plan(self, seed: int, epoch: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's items as (shard index, offset) arrays, in read order before slot split."""
        rng = np.random.default_rng([seed, epoch, 7])
        units: list[tuple[int, np.ndarray]] = []  # one run of offsets inside one shard
        for s, src in enumerate(self.sources):
            mine = np.flatnonzero(self.shard_source == s)
            full, frac = int(src.weight), src.weight - int(src.weight)
            for _ in range(full):
                units += [(int(k), np.arange(self.counts[k])) for k in mine]
            if frac > 0:  # a seeded subset, new every epoch, still read in shard order
                total = int(self.counts[mine].sum())
                pick = np.sort(rng.choice(total, size=int(round(frac * total)), replace=False))
                starts = np.concatenate([[0], np.cumsum(self.counts[mine])])
                for j, k in enumerate(mine):
                    sel = pick[(pick >= starts[j]) & (pick < starts[j + 1])] - starts[j]
                    if len(sel):
                        units.append((int(k), sel))
        if shuffle:
            units = [units[i] for i in rng.permutation(len(units))]
        if not units:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        shard = np.concatenate([np.full(len(o), k, np.int32) for k, o in units])
        offset = np.concatenate([o for _, o in units]).astype(np.int64)
        return shard, offset


def slot_range(total: int, slot: int, slots: int) -> tuple[int, int]:
    """Contiguous range of slot ``slot``; sizes differ by at most one, all items covered."""
    return total * slot // slots, total * (slot + 1) // slots


def interleave(shard: np.ndarray, offset: np.ndarray, mix_shards: int, rng: np.random.Generator):
    """Reorder a slot's items so ``mix_shards`` consecutive shard runs are merged at random,
    each run keeping its own order (reads stay sequential inside every shard)."""
    if mix_shards <= 1 or len(shard) == 0:
        return shard, offset
    run_start = np.flatnonzero(np.diff(shard, prepend=-1) != 0)
    bounds = list(run_start) + [len(shard)]
    out = np.empty(len(shard), np.int64)
    for g in range(0, len(run_start), mix_shards):
        lo, hi = bounds[g], bounds[min(g + mix_shards, len(run_start))]
        labels = np.repeat(
            np.arange(min(mix_shards, len(run_start) - g)), np.diff(bounds[g : g + mix_shards + 1])
        )
        labels = rng.permutation(labels)  # a random sequence with each run's multiplicity
        # the k-th occurrence of run r takes run r's k-th item
        out[lo + np.argsort(labels, kind="stable")] = np.arange(lo, hi)
    return shard[out], offset[out]
