"""Reading audio, once for the whole package: any file soundfile reads (WAV, FLAC, OGG) or the bytes of
one, mixed down to mono float32, checked non-empty and finite. Resampling is ``features.resample``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """Unreadable, empty or non-finite audio; the message starts with where it came from."""


def read_audio(source: str | Path | bytes, where: str | None = None) -> tuple[np.ndarray, int]:
    """``(mono float32 waveform, sample rate)`` of a file path or the encoded bytes of a file.

    ``where`` starts each error message (a manifest line, a shard member); default: the path; "" for none.
    """
    if where is None:
        where = "audio" if isinstance(source, bytes) else str(source)
    prefix = f"{where}: " if where else ""
    try:
        wav, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types for missing or garbled files
        raise AudioError(f"{prefix}undecodable audio ({type(e).__name__}: {e})") from None
    if wav.shape[0] == 0:
        raise AudioError(f"{prefix}audio has no samples")
    wav = wav.mean(axis=1)  # mix down to mono
    if not np.isfinite(wav).all():
        raise AudioError(f"{prefix}audio contains NaN or inf")
    return wav, int(rate)
