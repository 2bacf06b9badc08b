"""VoiceDesign pair shards: one (description, speaker embedding) pair per tar sample.

A sample holds two members (data_cards/SCHEMA.md, "VoiceDesign pair shards")::

    <key>.json        {"schema": "qinyu-voice/v1", "description": "...", "source": "manifest.jsonl:3"}
    <key>.embedding.npy   float32 [D], the speaker vector

``qinyu-lit data build`` writes them from a manifest of ``{description, embedding | wav | wavs}`` rows
(``prep/voice_design_shards.py``); ``read_pairs`` reads them through ``tar.py``, the one shard reader.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .index import read_index
from .schema import SampleError

VOICE_SCHEMA_VERSION = "qinyu-voice/v1"


def encode_pair(key: str, description: str, embedding: np.ndarray, source: str = "") -> dict:
    """The tar members of one pair (WebDataset's ``{"__key__", suffix: bytes}``)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(embedding, dtype=np.float32), allow_pickle=False)
    doc = {"schema": VOICE_SCHEMA_VERSION, "description": description, "source": source}
    return {"__key__": key, "json": json.dumps(doc, ensure_ascii=False).encode(), "embedding.npy": buf.getvalue()}


def decode_pair(raw: dict, shard: str | None = None) -> tuple[str, np.ndarray]:
    """(description, float32 embedding) of one raw sample; ``SchemaError`` names the shard, key and field."""
    key = raw.get("__key__", "?")

    def fail(field_name: str, reason: str):
        raise SampleError(shard or raw.get("__url__", "?"), key, field_name, reason)

    try:
        doc = json.loads(raw["json"])
    except (KeyError, ValueError):
        fail("json", "missing or not JSON")
    if doc.get("schema") != VOICE_SCHEMA_VERSION:
        fail("schema", f"expected {VOICE_SCHEMA_VERSION!r}, got {doc.get('schema')!r}")
    text = doc.get("description")
    if not isinstance(text, str) or not text.strip():
        fail("description", "missing or empty")
    try:
        vec = np.load(io.BytesIO(raw["embedding.npy"]), allow_pickle=False)
    except (KeyError, ValueError, OSError):
        fail("embedding.npy", "missing or not a .npy array")
    if vec.ndim != 1 or not np.isfinite(vec).all():
        fail("embedding.npy", f"must be a finite vector, got shape {list(vec.shape)}")
    return text, vec.astype(np.float32)


def pair_shards(path: str | Path) -> list[str]:
    """The shards of a folder (in its ``index.json`` order when it has one), or ``[path]`` for a ``.tar``."""
    path = Path(path)
    if path.suffix == ".tar":
        return [str(path)]
    index = read_index(path)
    if index and index.get("shards"):
        return [str(path / e["path"]) for e in index["shards"]]
    return sorted(str(p) for p in path.glob("*.tar"))
