"""VoiceDesign pairs from recordings and persona folders: ``qinyu-lit voice-design-data``.

Training reads (description, embedding) JSONL (``data/voice_design.py``); this step makes it from

* a JSONL manifest whose rows give ``description`` and ``embedding`` (a ``.npy``), ``wav`` (one clip) or
  ``wavs`` (clips of one voice: the embedding is the mean over them, as the paper's agent voice);
* persona folders (``prep/persona_data.py``): the description is written from the profile's attributes
  (``profile_description``) and the embedding is the mean over ``voice/`` (``persona_voice``).

Clips are embedded with the speaker encoder the speech shards use (``WavLMSpeakerEncoder``; CAM++
vectors can come in as ``.npy``). A bad row or folder is named with its reason, counted and left out;
the output is written whole (``atomic_path``) or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.audio import read_audio
from ..data.errors import QinYuError
from ..data.files import atomic_path
from .persona_data import PersonaProfile, load_profile, persona_voice


def profile_description(profile: PersonaProfile) -> str:
    """A voice description from a persona profile: demographics, identity, temperament, vocal style
    (the release's template is 该角色是一个{age}{gender}性，身份是{identity}, {temperament})."""
    return f"{profile.demographics}, {profile.social_identity}, {profile.temperament}; voice: {profile.vocal_style}"


def _row_embedding(row: dict, base: Path, encoder_factory) -> np.ndarray:
    if "embedding" in row:
        value = row["embedding"]
        return np.asarray(np.load(base / value, allow_pickle=False) if isinstance(value, str) else value, np.float32)
    clips = row.get("wavs") or ([row["wav"]] if "wav" in row else [])
    if not clips:
        raise ValueError("needs embedding, wav or wavs")
    encoder = encoder_factory()
    vecs = []
    for clip in clips:
        try:
            vecs.append(encoder.embed(*read_audio(base / clip)))
        except Exception as e:  # soundfile / decoder errors: name the clip
            raise ValueError(f"wav {clip}: unreadable ({type(e).__name__})") from None
    return np.mean(vecs, axis=0).astype(np.float32)


def collect_pairs(manifests: list[str], personas: list[str], speaker_model: str | dict | None = None) -> tuple[list[dict], list[str]]:
    """(rows ``{"description", "embedding": [...], "source"}``, bad lines) from manifests and persona folders."""
    encoder = None

    def encoder_factory():
        nonlocal encoder
        if encoder is None:
            from .speakers import WavLMSpeakerEncoder

            encoder = WavLMSpeakerEncoder(speaker_model) if speaker_model else WavLMSpeakerEncoder()
        return encoder

    rows, bad = [], []
    for manifest in map(Path, manifests):
        if not manifest.is_file():
            raise QinYuError(f"--manifest {manifest}: no such file")
        for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = row.get("description") if isinstance(row, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("description: missing or empty")
                vec = _row_embedding(row, manifest.parent, encoder_factory)
            except (ValueError, OSError) as e:
                bad.append(f"{manifest}:{n}: {e}")
                continue
            rows.append({"description": text, "embedding": vec.tolist(), "source": f"{manifest}:{n}"})
    for folder in map(Path, personas):
        try:
            profile = load_profile(next(folder.glob("profile.*"), folder / "profile.yaml"))
            vec = persona_voice(folder / "voice", speaker_model)
        except (ValueError, OSError) as e:
            bad.append(f"{folder}: {e}")
            continue
        rows.append({"description": profile_description(profile), "embedding": vec.tolist(), "source": str(folder)})
    return rows, bad


def voice_design_data_cmd(out: str, manifest: list[str] | None = None, persona: list[str] | None = None,
                          speaker_model: str | dict | None = None, embedding_dim: int | None = None) -> None:  # fmt: skip
    """(description, speaker embedding) pairs for VoiceDesign training, from recordings and persona folders.

    Args:
        out: the pairs JSONL to write (``data.train`` / ``data.val`` of ``recipes/voice_design.yaml``).
        manifest: JSONL files of ``{"description", "embedding" | "wav" | "wavs"}`` rows (paths relative to the file).
        persona: persona folders (``profile.yaml`` + ``voice/``): description from the profile, the mean voice.
        speaker_model: speaker encoder for clips (default ``microsoft/wavlm-base-plus-sv``; use the speech shards' one).
        embedding_dim: if given, rows of another size are bad rows (the model's ``embedding_dim``).
    """
    rows, bad = collect_pairs(manifest or [], persona or [], speaker_model)
    if embedding_dim is not None:
        for r in [r for r in rows if len(r["embedding"]) != embedding_dim]:
            bad.append(f"{r['source']}: embedding: size [{len(r['embedding'])}], expected [{embedding_dim}]")
            rows.remove(r)
    for line in bad:
        print(f"[qinyu-lit] skipped {line}")
    if not rows:
        raise QinYuError(f"no usable pair ({len(bad)} bad): nothing written to {out}")
    with atomic_path(out) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {out}: {len(rows)} pairs, {len(bad)} bad rows or folders skipped")
