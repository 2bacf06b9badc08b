"""Agent voices: ``agent_voice`` id -> the mean speaker embedding of up to N of its clips (paper: ~100)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.audio import read_audio
from ..data.files import atomic_path
from .manifest import BadRow, BadRowError, ManifestRow
from .shard_builder import BuildOptions, speaker_encoder
from .speakers import load_embedding, voice_embedding


def resolve_voices(rows: list[ManifestRow], options: BuildOptions, out_dir: Path, max_clips: int):
    """Agent voice id -> mean embedding of up to ``max_clips`` of its assistant clips.

    Saved as ``out/voices/<id>.npy`` (inference needs the same vector) and reused on resume."""
    wanted: dict[str, list[str]] = {}
    for row in rows:
        if row.agent_voice is not None:
            clips = wanted.setdefault(row.agent_voice, [])
            clips += [t.audio for t in row.turns if t.role == "assistant" and t.audio is not None][
                : max_clips - len(clips)
            ]
    voices, failed = {}, {}
    encoder = None
    for voice, clips in sorted(wanted.items()):
        path = out_dir / "voices" / f"{voice}.npy"
        if path.exists():
            voices[voice] = load_embedding(path)
            continue
        if not clips:
            failed[voice] = f"agent_voice {voice!r} has no assistant audio in the manifest to embed"
            continue
        if options.speaker_encoder is None:
            raise ValueError(
                f"rows name agent_voice {voice!r}: set --speaker_encoder to embed its clips, "
                "or give each row an agent_speaker .npy"
            )
        encoder = encoder or speaker_encoder(options)
        embeddings = []
        for clip in clips:
            try:
                embeddings.append(encoder.embed(*read_audio(clip)))
            except Exception as e:  # an unreadable clip is reported with its row while building
                tqdm.write(
                    f"voice {voice!r}: clip {clip} not used ({type(e).__name__}: {e})", file=sys.stderr
                )
        vec = voice_embedding(embeddings, max_clips) if embeddings else None
        if vec is None or not np.isfinite(vec).all():
            failed[voice] = f"agent_voice {voice!r}: no usable embedding (no readable clip, or NaN/inf)"
            continue
        voices[voice] = vec
        with atomic_path(path, suffix=".partial.npy") as tmp:  # np.save appends .npy to other names
            np.save(tmp, vec, allow_pickle=False)
    bad = [
        BadRow(options.manifest, r.line, r.key, "bad_embedding", failed[r.agent_voice])
        for r in rows
        if r.agent_voice in failed
    ]
    if bad and options.strict:
        raise BadRowError(bad[0])
    return voices, bad
