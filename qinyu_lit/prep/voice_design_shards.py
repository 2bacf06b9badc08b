"""``qinyu-lit data build`` of a VoiceDesign manifest: (description, speaker embedding) pair shards.

A manifest is a VoiceDesign one when its rows have ``description`` and no ``turns``::

    {"key": "keeper", "description": "a calm old man, a lighthouse keeper", "wavs": ["k1.wav", "k2.wav"]}
    {"description": "a cheerful young woman, a baker", "embedding": "voices/baker.npy"}

``wav``/``wavs`` clips are embedded by the speaker encoder the speech shards use (``--speaker_encoder``,
built by ``shard_builder.speaker_encoder`` like theirs; ``wavs``: the mean over the clips), an
``embedding`` ``.npy`` is taken as it is. Samples are written with ``data/voice_shards.py``'s members
(data_cards/SCHEMA.md, "VoiceDesign pair shards"), each shard atomically, then ``index.json`` and
``skipped.jsonl``; a bad row is printed with its line and reason and counted, as for speech rows.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import webdataset as wds

from ..data.files import atomic_path, atomic_write_text
from ..data.index import path_for_index, write_index
from ..data.voice_shards import VOICE_SCHEMA_VERSION, decode_pair, encode_pair
from .manifest import BadRow, BadRowError
from .shard_builder import BuildOptions, speaker_encoder
from .voice_design_data import _row_embedding
from .writer import shard_name

VOICE_ROW_FIELDS = ("key", "description", "embedding", "wav", "wavs", "meta")


def is_voice_design_manifest(path: str | Path) -> bool:
    """True when the manifest's first row is a VoiceDesign row (``description``, no ``turns``)."""
    if not Path(path).is_file():
        return False  # the speech path reports a missing manifest as it always has
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.loads(next((line for line in f if line.strip()), ""))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # not a VoiceDesign manifest: scan_manifest names the problem
    return isinstance(doc, dict) and "description" in doc and "turns" not in doc


def _pair(doc, line: int, stem: str, base: Path, encoder_factory) -> tuple[str, str, object]:
    """(key, description, embedding) of one row; ``ValueError`` / ``OSError`` say why it is bad."""
    if not isinstance(doc, dict):
        raise ValueError("a row must be a JSON object")
    unknown = sorted(set(doc) - set(VOICE_ROW_FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(VOICE_ROW_FIELDS)})")
    key = doc.get("key", f"{stem}-{line:08d}")
    if not isinstance(key, str) or not key or "." in key or "/" in key:
        raise ValueError(f"key must be a non-empty string without '.' or '/', got {key!r}")
    text = doc.get("description")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("description: missing or empty")
    vec = _row_embedding(doc, base, encoder_factory)
    if vec.ndim == 2:  # an [utterances, D] .npy: the voice is their mean
        vec = vec.mean(0)
    return key, text, vec


def _kind(reason: str) -> str:
    """The ``BAD_ROW_KINDS`` name of a row's failure (manifest.py's kinds, so skipped counts read alike)."""
    if reason.startswith("wav "):
        return "unreadable_audio"
    return "bad_embedding" if "embedding" in reason else "invalid_row"


def _scan(manifest: Path, options: BuildOptions) -> tuple[list[dict], list[BadRow]]:
    """Every row as its tar members, or as a ``BadRow`` (line, key, reason)."""
    encoder = []

    def encoder_factory():
        if not encoder:
            if options.speaker_encoder is None:
                raise ValueError("wav/wavs need --speaker_encoder (the one the speech shards use)")
            encoder.append(speaker_encoder(options))
        return encoder[0]

    samples, bad, seen = [], [], set()
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            key, text, vec = _pair(json.loads(line), n, manifest.stem.replace(".", "_"), manifest.parent, encoder_factory)
            if key in seen:
                raise ValueError(f"key {key!r} already used")
            seen.add(key)
            raw = encode_pair(key, text, vec, source=f"{manifest.name}:{n}")
            decode_pair(raw, shard=str(manifest))  # the reader's validator, before anything is written
            samples.append(raw)
        except (ValueError, OSError) as e:  # JSONDecodeError and SampleError are ValueErrors
            bad.append(BadRow(str(manifest), n, None, _kind(str(e)), str(e)))
            print(f"skipped {bad[-1]}", file=sys.stderr)
            if options.strict:
                raise BadRowError(bad[-1]) from None
    return samples, bad


def build_voice_design(options: BuildOptions, out: str, samples_per_shard: int = 1000) -> dict:
    """Write the manifest's pairs as shards under ``out`` with ``index.json`` and ``skipped.jsonl``;
    returns the index document."""
    out_dir, manifest = Path(out), Path(options.manifest)
    samples, bad = _scan(manifest, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(0, len(samples), samples_per_shard):
        path = out_dir / shard_name(i // samples_per_shard)
        with atomic_path(path) as tmp, wds.TarWriter(str(tmp), mtime=0) as sink:
            for raw in samples[i : i + samples_per_shard]:
                sink.write(raw)
        entries.append({"path": path.name, "samples": len(samples[i : i + samples_per_shard])})
    dims = sorted({len(decode_pair(raw)[1]) for raw in samples})
    atomic_write_text(out_dir / "skipped.jsonl", "".join(json.dumps(b.to_dict()) + "\n" for b in bad))
    index = {
        "schema": VOICE_SCHEMA_VERSION, "kind": "voice_design",
        "manifest": path_for_index(str(manifest), out_dir), "codec": None, "speaker_dims": dims,
        "totals": {"samples": len(samples)}, "skipped": dict(Counter(b.kind for b in bad)), "shards": entries,
    }  # fmt: skip
    write_index(out_dir, index)
    print(f"{out_dir}: {len(entries)} VoiceDesign shards, {len(samples)} pairs, speaker_dims {dims}")
    print(f"skipped {len(bad)} rows" + (f" (each with its line and reason in {out_dir}/skipped.jsonl)" if bad else ""))
    return index
