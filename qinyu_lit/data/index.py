"""``index.json``: what ``qinyu-lit data build`` records about a shard set, read back at training start."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import QinYuError

INDEX_FORMAT = "qinyu-index/v1"


def path_for_index(value: str, folder: str | Path) -> str:
    """How ``index.json`` in ``folder`` stores a name-or-path: an existing local path relative to
    ``folder`` (it resolves from any working directory and survives moving the data with its
    tokenizer), anything else (a Hub name) as given."""
    if not os.path.exists(value):
        return value
    return Path(os.path.relpath(Path(value).resolve(), Path(folder).resolve())).as_posix()


def path_from_index(value: str | None, folder: str | Path) -> str | None:
    """Inverse of ``path_for_index``: a stored relative path that exists next to the index, as a
    path usable from here; an absolute path or a Hub name unchanged."""
    if not value or os.path.isabs(value):
        return value
    local = Path(folder) / value
    return str(local) if local.exists() else value


def absolute_if_local(value: str) -> str:
    """A name-or-path as a checkpoint stores it: an existing local path made absolute (the
    checkpoint is read from other working directories: ``export``, ``generate``), a Hub name as given."""
    return str(Path(value).resolve()) if isinstance(value, str) and os.path.exists(value) else value


def read_index(folder: str | Path) -> dict | None:
    """``folder/index.json`` or ``None`` when there is none."""
    path = Path(folder) / "index.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise QinYuError(f"{path}: not valid JSON ({e}); rebuild it with `qinyu-lit data build`") from None


def check_index_speakers(folder: str | Path, speaker_dim: int) -> None:
    """Fail at start when a built set's speaker vectors (``speaker_dims`` of its index) do not
    have the model's size: otherwise the first batch with a speaker fails deep in the model."""
    index = read_index(folder) or {}
    dims = index.get("speaker_dims") or []
    if len(dims) > 1:
        raise QinYuError(
            f"{folder}: the shards hold speaker vectors of sizes {dims} (index.json speaker_dims); a model reads "
            "one size - rebuild the set with one speaker encoder"
        )
    if dims and dims[0] != speaker_dim:
        raise QinYuError(
            f"{folder}: speaker vectors have {dims[0]} dimensions (index.json speaker_dims) but the model expects "
            f"{speaker_dim}: set --model.init_args.net.speaker_dim {dims[0]}"
        )


def check_index_codec(folder: str | Path, num_codebooks: int, codebook_size: int) -> None:
    """Fail fast, before any worker starts, when a built shard set's codec (``index.json``)
    does not match the model's; a folder without an index is left to the per-sample check."""
    path = Path(folder) / "index.json"
    if not path.is_file():
        return
    codec = json.loads(path.read_text()).get("codec") or {}
    got = (codec.get("num_codebooks"), codec.get("codebook_size"))
    if codec and got != (num_codebooks, codebook_size):
        raise QinYuError(
            f"{folder}: shards hold {got[0]} x {got[1]} codes ({codec.get('name')}, {codec.get('frame_rate')} Hz) but "
            f"the model expects {num_codebooks} x {codebook_size}: set --data.init_args.num_codebooks {got[0]} "
            f"--data.init_args.codebook_size {got[1]}, or rebuild the shards with the model's codec"
        )
