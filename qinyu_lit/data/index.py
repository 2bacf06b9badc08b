"""``index.json``: what a shard set's writers record about it, read back at training start.

The one module that knows the file: its name and format string, reading it (``read_index``, the
per-shard sample counts ``indexed_counts``), writing it (``write_index`` for ``data build``, which
writes the whole index at the end; ``record_in_index`` for writers adding one shard at a time) and
the start-of-training checks against the model (codec, speaker vector size).

    {"format": "qinyu-index/v1", "schema": "qinyu/v2", "codec": {...} | null,
     "speaker_dims": [192], "totals": {"samples": n, ...},
     "shards": [{"path": "shard-000000.tar", "samples": n, ...}, ...], ...}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import QinYuError
from .files import atomic_write_text
from .schema import SCHEMA_VERSION

INDEX_FORMAT = "qinyu-index/v1"
INDEX_NAME = "index.json"


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
    path = Path(folder) / INDEX_NAME
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
    codec = (read_index(folder) or {}).get("codec") or {}
    got = (codec.get("num_codebooks"), codec.get("codebook_size"))
    if codec and got != (num_codebooks, codebook_size):
        raise QinYuError(
            f"{folder}: shards hold {got[0]} x {got[1]} codes ({codec.get('name')}, {codec.get('frame_rate')} Hz) but "
            f"the model expects {num_codebooks} x {codebook_size}: set --data.init_args.num_codebooks {got[0]} "
            f"--data.init_args.codebook_size {got[1]}, or rebuild the shards with the model's codec"
        )


def write_index(folder: str | Path, doc: dict) -> Path:
    """Write ``doc`` (format and schema filled in) as ``folder/index.json``, atomically."""
    path = Path(folder) / INDEX_NAME
    doc = {"format": INDEX_FORMAT, "schema": SCHEMA_VERSION, **doc}
    atomic_write_text(path, json.dumps(doc, indent=1, ensure_ascii=False))
    return path


def record_in_index(shard: Path, count: int, codec: dict | None) -> Path:
    """Add or replace ``shard``'s entry (``{"path", "samples"}``) in ``index.json`` of its folder."""
    doc = read_index(shard.parent) or {}
    entries = [e for e in doc.get("shards", []) if e.get("path") != shard.name]
    first = not entries
    entries = sorted(entries + [{"path": shard.name, "samples": count}], key=lambda e: e["path"])
    if first:
        doc["codec"] = codec
    elif doc.get("codec") != codec:
        doc["codec"] = None  # mixed codecs: no set-wide codec to check (each sample still carries its own)
    doc["shards"] = entries
    doc.setdefault("totals", {})["samples"] = sum(e["samples"] for e in entries)
    return write_index(shard.parent, doc)


_COUNTS: dict[tuple, dict[str, int]] = {}


def indexed_counts(folder: str | Path) -> dict[str, int] | None:
    """Samples per shard file name from ``folder/index.json``; ``None`` without a readable index.

    Accepted shapes: ``{"shards": [{"path"|"name"|"file": "<file>", "samples"|"num_samples"|"count": n}]}``
    (what the writers here write) or ``{"shards": {"<file>": n | {"samples": n}}}``. Cached per
    file version: a rewritten index is read again."""
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        return None
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _COUNTS:
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        shards = doc.get("shards", {}) if isinstance(doc, dict) else {}
        entries = (
            shards.items()
            if isinstance(shards, dict)
            else [(e.get("path") or e.get("name") or e.get("file"), e) for e in shards if isinstance(e, dict)]
        )
        counts = {}
        for name, entry in entries:
            n = entry if isinstance(entry, int) else None
            if isinstance(entry, dict):
                n = next((entry[k] for k in ("samples", "num_samples", "count") if k in entry), None)
            if name and isinstance(n, int):
                counts[os.path.basename(str(name))] = n
        _COUNTS[key] = counts
    return _COUNTS[key]
