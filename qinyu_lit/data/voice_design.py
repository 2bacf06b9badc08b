"""VoiceDesign training data: (description, speaker embedding) pairs from JSONL files, and their DataModule.

Pairs come from JSONL files or from shards (``data/voice_shards.py``, built by ``qinyu-lit data build``).
One pair per line::

    {"description": "a calm old man, a lighthouse keeper", "embedding": "voices/keeper.npy"}
    {"description": "a cheerful young woman, a baker",     "embedding": [0.12, -0.40, ...]}

``embedding`` is a ``.npy`` path (relative to the JSONL file; ``[D]`` or ``[utterances, D]``, averaged) or
the vector inline; other keys are kept for the reader's own use (``voice_class`` in the demo). Rows that
hold recordings (``wav``/``wavs``) or persona folders are turned into such a file first by
``qinyu-lit voice-design-data`` (``prep/voice_design_data.py``), which runs the speaker encoder once.
A bad row (no description, an embedding of the wrong size, an unreadable file) is skipped with one
warning line naming the file, line and field, and counted; a file with no usable row is an error.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import QinYuError
from .schema import SampleError
from .tar import iter_raw_samples
from .voice_shards import decode_pair, pair_shards


@dataclass
class VoicePairs:
    """Pairs read from one or more JSONL files, and what was skipped (``bad``: one line per row)."""

    descriptions: list[str] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


def _embedding(value, base: Path, dim: int) -> np.ndarray:
    """The row's ``embedding`` as float32 ``[dim]``; ``ValueError`` says what is wrong with it."""
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else base / value
        try:
            vec = np.load(path, allow_pickle=False)
        except Exception as e:  # missing, not .npy, pickled: one reason line
            raise ValueError(f"embedding {value}: unreadable ({type(e).__name__})") from None
    elif isinstance(value, list):
        vec = np.asarray(value, dtype=np.float32)
    else:
        raise ValueError("embedding: missing (a .npy path or a list of numbers)")
    vec = vec.mean(0) if vec.ndim == 2 else vec
    if vec.shape != (dim,):
        raise ValueError(f"embedding: size {list(vec.shape)}, expected [{dim}] (data.embedding_dim)")
    if not np.isfinite(vec).all():
        raise ValueError("embedding: NaN or inf")
    return vec.astype(np.float32)


def _skip(pairs: VoicePairs, where: str, reason) -> None:
    pairs.bad.append(f"{where}: {reason}")
    warnings.warn(f"{where}: skipped, {reason}", stacklevel=3)


def _read_shards(pairs: VoicePairs, path: Path, dim: int) -> None:
    """Pairs of a shard folder or ``.tar`` (``data build`` of a VoiceDesign manifest; ``voice_shards.py``)."""
    shards = pair_shards(path)
    if not shards:
        raise QinYuError(f"{path}: no .tar shard in this folder (build them with `qinyu-lit data build`)")
    for raw in iter_raw_samples(shards):
        where = f"{raw['__url__']}: sample {raw['__key__']!r}"
        try:
            text, vec = decode_pair(raw)
        except SampleError as e:
            _skip(pairs, where, f"field {e.field!r}: {e.reason}")
            continue
        if vec.shape != (dim,):
            _skip(pairs, where, f"embedding: size {list(vec.shape)}, expected [{dim}] (data.embedding_dim)")
            continue
        pairs.descriptions.append(text)
        pairs.embeddings.append(vec)
        pairs.rows.append({"description": text, "key": raw["__key__"]})


def read_pairs(paths: str | list[str], dim: int) -> VoicePairs:
    """Read every pair of the JSONL file(s) or shard folders / ``.tar`` shards; bad rows go to ``bad``
    (warned), good ones to the lists."""
    pairs = VoicePairs()
    for path in [paths] if isinstance(paths, str | Path) else paths:
        path = Path(path)
        if path.is_dir() or path.suffix == ".tar":
            _read_shards(pairs, path, dim)
            continue
        if not path.is_file():
            raise QinYuError(f"{path}: no such pairs file (JSONL of description + embedding; docs/voice_design.md)")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                text = row.get("description")
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("description: missing or empty")
                if "embedding" not in row and ("wav" in row or "wavs" in row):
                    raise ValueError("holds recordings, not an embedding: run `qinyu-lit voice-design-data` first")
                vec = _embedding(row.get("embedding"), path.parent, dim)
            except ValueError as e:  # json.JSONDecodeError is a ValueError too
                _skip(pairs, where, e)
                continue
            pairs.descriptions.append(text)
            pairs.embeddings.append(vec)
            pairs.rows.append(row)
    if not pairs.descriptions:
        raise QinYuError(f"{paths}: no usable (description, embedding) row ({len(pairs.bad)} bad)")
    return pairs


class PairDataset(Dataset):
    def __init__(self, pairs: VoicePairs):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs.descriptions)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        return self.pairs.descriptions[i], self.pairs.embeddings[i]


def collate_pairs(items: list[tuple[str, np.ndarray]]) -> dict:
    """``{"description": list[str], "embedding": float32 [B, D]}``, the batch ``VoiceDesignStage`` reads."""
    return {"description": [d for d, _ in items], "embedding": torch.from_numpy(np.stack([e for _, e in items]))}


class VoiceDesignDataModule(L.LightningDataModule):
    """(description, speaker embedding) pairs for ``VoiceDesignStage``.

    Args:
        train: training pairs: a JSONL file, a shard folder (``qinyu-lit data build`` of a VoiceDesign
            manifest) or ``.tar`` shard, or a list of them (``qinyu-lit demo-data`` writes
            ``data/demo/voices/train.jsonl``).
        val: held-out pairs (descriptions the training never saw); ``None``: no validation.
        embedding_dim: size of every embedding (CAM++: 192; the demo: 16); set once here, linked to the model.
        batch_size: pairs per step.
        num_workers: loader processes (pairs are small and held in memory: 0 is usually right).
    """

    def __init__(self, train: str | list[str], val: str | list[str] | None = None, embedding_dim: int = 192,
                 batch_size: int = 64, num_workers: int = 0):  # fmt: skip
        super().__init__()
        self.train_paths, self.val_paths = train, val
        self.embedding_dim, self.batch_size, self.num_workers = embedding_dim, batch_size, num_workers
        self.train_pairs: VoicePairs | None = None
        self.val_pairs: VoicePairs | None = None

    def setup(self, stage: str) -> None:
        if self.train_pairs is None:
            self.train_pairs = self._read("train", self.train_paths)
        if self.val_pairs is None and self.val_paths:
            self.val_pairs = self._read("val", self.val_paths)

    def _read(self, split: str, paths) -> VoicePairs:
        pairs = read_pairs(paths, self.embedding_dim)
        print(f"[qinyu-lit] voice-design {split}: {len(pairs.descriptions)} pairs, {len(pairs.bad)} bad rows skipped")
        return pairs

    def train_dataloader(self) -> DataLoader:
        return DataLoader(PairDataset(self.train_pairs), self.batch_size, shuffle=True, collate_fn=collate_pairs,
                          num_workers=self.num_workers, drop_last=len(self.train_pairs.descriptions) > self.batch_size)  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        if self.val_pairs is None:
            return []
        return DataLoader(PairDataset(self.val_pairs), self.batch_size, collate_fn=collate_pairs, num_workers=self.num_workers)
