"""Per-sample scores of the evaluation tables: text errors, speaker similarity, pitch contours.

* **WER / CER** through torchmetrics' functional ``word_error_rate`` / ``char_error_rate`` after the
  usual normaliser (``metrics.normalize_text``: lower case, punctuation dropped). Chinese (and any
  text without spaces between words) is scored per character, the paper's CER for AISHELL.
  A corpus figure is the sum of errors over the sum of reference words, as torchmetrics accumulates.
* **Speaker similarity**: cosine of two speaker embeddings (any encoder: WavLM x-vectors, CAM++ ...).
* **Pitch**: F0 from ``librosa.yin`` (an autocorrelation-difference tracker; ``pyin`` is more robust
  but JIT-compiles for ~40 s on first use), frames below an energy floor unvoiced. Contours are
  normalised as in the paper's Table 9: log2 F0 minus its mean over voiced frames (key removed), so
  MSE and DTW measure the melody, not the voice's register.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torchmetrics.functional.text import char_error_rate, word_error_rate

from .metrics import normalize_text

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def is_character_scored(text: str, language: str = "en") -> bool:
    """Chinese / Japanese (by language code or by the characters themselves) is scored per character."""
    return language.lower().startswith(("zh", "ja", "yue")) or bool(_CJK.search(text))


def text_errors(reference: str, hypothesis: str, language: str = "en") -> tuple[int, int]:
    """``(errors, reference units)``: word edits for spaced languages, character edits for Chinese.

    ``errors / units`` is the sample's WER (CER). The units are words (characters without spaces).
    """
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if is_character_scored(ref, language):
        ref, hyp = ref.replace(" ", ""), hyp.replace(" ", "")
        units = len(ref)
        rate = char_error_rate([hyp], [ref]) if units else torch.tensor(0.0)
    else:
        units = len(ref.split())
        rate = word_error_rate([hyp], [ref]) if units else torch.tensor(0.0)
    return int(round(float(rate) * units)), units


def char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(character edits, reference characters)`` after normalising: the CER of any language."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    rate = char_error_rate([hyp], [ref]) if ref else torch.tensor(0.0)
    return int(round(float(rate) * len(ref))), len(ref)


def answer_scores(answer: str, hypothesis: str) -> tuple[bool, bool]:
    """``(exact match, contains the answer)`` of a short-answer question, both normalised."""
    ans, hyp = normalize_text(answer), normalize_text(hypothesis)
    return hyp == ans, bool(ans) and f" {ans} " in f" {hyp} "


def speaker_similarity(a, b) -> float:
    """Cosine of two speaker embeddings (float64; 0.0 when either is all zeros)."""
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0, eps=1e-12))


def track_f0(wav: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 1200.0,
             hop: float = 0.01, floor_db: float = -40.0) -> np.ndarray:  # fmt: skip
    """F0 in Hz per ``hop`` seconds (``librosa.yin``); NaN where the frame is quieter than ``floor_db``
    below the loudest (yin itself answers every frame, silence included)."""
    import librosa  # optional: pip install 'qinyu-lit[eval]'

    wav = np.asarray(wav, dtype=np.float32)
    hop_length = max(1, int(round(hop * sample_rate)))
    frame_length = int(2 ** np.ceil(np.log2(2.5 * sample_rate / fmin)))  # >= 2 periods of the lowest pitch
    if len(wav) < frame_length:
        wav = np.pad(wav, (0, frame_length - len(wav)))
    f0 = librosa.yin(wav, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=frame_length, hop_length=hop_length)
    rms = librosa.feature.rms(y=wav, frame_length=frame_length, hop_length=hop_length)[0]
    quiet = librosa.amplitude_to_db(rms, ref=np.max(rms) if rms.max() > 0 else 1.0) < floor_db
    return np.where(quiet[: len(f0)], np.nan, f0)


def normalized_contour(f0: np.ndarray) -> np.ndarray:
    """log2 F0 minus its mean over voiced frames; unvoiced frames 0 (Table 9's normalised contour)."""
    voiced = np.isfinite(f0) & (f0 > 0)
    out = np.zeros(len(f0))
    if voiced.any():
        logs = np.log2(f0[voiced])
        out[voiced] = logs - logs.mean()
    return out


def pitch_mse(reference_f0: np.ndarray, hypothesis_f0: np.ndarray) -> float:
    """MSE of the normalised contours, frame by frame over the shorter length (octaves squared)."""
    ref, hyp = normalized_contour(reference_f0), normalized_contour(hypothesis_f0)
    n = min(len(ref), len(hyp))
    return float(np.mean((ref[:n] - hyp[:n]) ** 2)) if n else float("nan")


def pitch_dtw(reference_f0: np.ndarray, hypothesis_f0: np.ndarray) -> float:
    """DTW distance of the normalised contours (``librosa.sequence.dtw``): accumulated |difference|
    along the best alignment, divided by the path length (so long songs are not penalised)."""
    import librosa

    ref, hyp = normalized_contour(reference_f0), normalized_contour(hypothesis_f0)
    if not len(ref) or not len(hyp):
        return float("nan")
    cost, path = librosa.sequence.dtw(ref[None], hyp[None], metric="cityblock")
    return float(cost[-1, -1] / len(path))
