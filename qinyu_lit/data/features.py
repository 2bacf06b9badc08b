"""User speech -> encoder input features, computed on CPU inside the data loader.

Two front ends, matching the two encoders the model supports:

* ``FbankLFR`` for the SenseVoice-style ``FunAsrNanoEncoder``: 80-bin Kaldi fbank at
  16 kHz (kaldi-native-fbank), then low-frame-rate stacking of 7 frames with stride 6,
  i.e. 16.7 feature frames per second, one encoder output (and one ``<|audio|>``
  placeholder) per stacked frame.
* ``SenseVoiceFbank`` for the released VITA-QinYu's SenseVoiceSmall encoder: the same
  fbank + LFR, then CMVN from the model's ``am.mvn`` (applied after LFR, as FunASR does),
  and 4 more outputs than feature frames (the encoder prepends 4 query frames).
* ``WhisperMel`` for Whisper's encoder: the numpy log-mel front end of
  ``WhisperFeatureExtractor``; the encoder halves the frame rate (50 Hz outputs).

Both resample with soxr first. ``num_outputs(features)`` tells the layout how many
placeholders the encoder will fill, so the token sequence is exact before the model runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soxr


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return wav.astype(np.float32, copy=False)
    return soxr.resample(wav, orig_sr, target_sr).astype(np.float32)


class FbankLFR:
    """Kaldi fbank + LFR stacking, the SenseVoice / Fun-ASR front end.

    ``dither``: Kaldi's dither (Gaussian noise of that many int16 steps per sample, fresh at every
    read). 0 (default) keeps features deterministic, so the same shard gives the same tensors and
    a resumed run repeats the uninterrupted one exactly; FunASR trains with 1.0."""

    sample_rate = 16000

    def __init__(self, num_mel_bins: int = 80, lfr_m: int = 7, lfr_n: int = 6, dither: float = 0.0):
        self.num_mel_bins, self.lfr_m, self.lfr_n, self.dither = num_mel_bins, lfr_m, lfr_n, dither

    def _options(self):
        # built on first use in each process: kaldi-native-fbank objects cannot be pickled, and
        # spawn-started DataLoader workers receive this object by pickling
        import kaldi_native_fbank as knf

        opts = knf.FbankOptions()
        opts.frame_opts.dither = self.dither  # 0: deterministic features (same shard -> same tensors)
        opts.frame_opts.samp_freq = self.sample_rate
        opts.frame_opts.window_type = "hamming"
        opts.mel_opts.num_bins = self.num_mel_bins
        return knf, opts

    @property
    def feature_dim(self) -> int:
        return self.num_mel_bins * self.lfr_m

    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = resample(wav, sample_rate, self.sample_rate)
        knf, opts = self._options()
        fbank = knf.OnlineFbank(opts)
        # kaldi expects int16-range samples
        fbank.accept_waveform(self.sample_rate, (wav * 32768.0).tolist())
        fbank.input_finished()
        n = fbank.num_frames_ready
        if n == 0:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        frames = np.stack([fbank.get_frame(i) for i in range(n)]).astype(np.float32)
        return self.stack_frames(frames)

    def stack_frames(self, frames: np.ndarray) -> np.ndarray:
        """LFR: pad (m-1)//2 copies of the first frame in front, then take m frames every n."""
        m, n = self.lfr_m, self.lfr_n
        out_len = int(np.ceil(len(frames) / n))
        left = np.repeat(frames[:1], (m - 1) // 2, axis=0)
        padded = np.concatenate([left, frames])
        need = (out_len - 1) * n + m
        if len(padded) < need:
            padded = np.concatenate([padded, np.repeat(padded[-1:], need - len(padded), axis=0)])
        idx = np.arange(out_len)[:, None] * n + np.arange(m)[None, :]
        return padded[idx].reshape(out_len, m * frames.shape[1])

    def num_outputs(self, features: np.ndarray) -> int:
        return len(features)


class WhisperMel:
    """Whisper's log-mel front end (numpy only). Features are [frames, num_mel_bins]."""

    sample_rate = 16000

    def __init__(self, num_mel_bins: int = 80, max_seconds: float = 30.0):
        from transformers import WhisperFeatureExtractor

        self.num_mel_bins = num_mel_bins
        self._fe = WhisperFeatureExtractor(feature_size=num_mel_bins, chunk_length=int(max_seconds))

    @property
    def feature_dim(self) -> int:
        return self.num_mel_bins

    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = resample(wav, sample_rate, self.sample_rate)
        out = self._fe(wav, sampling_rate=self.sample_rate, padding=False, return_tensors="np")
        return out["input_features"][0].T.astype(np.float32)  # [frames, mels]

    def num_outputs(self, features: np.ndarray) -> int:
        return (len(features) + 1) // 2  # the encoder's stride-2 convolution


def load_cmvn(path) -> tuple[np.ndarray, np.ndarray]:
    """Read FunASR's ``am.mvn`` (a Kaldi nnet text file) -> (shift, scale), each [560].

    The numbers in brackets on the ``<LearnRateCoef>`` line after ``<AddShift>`` are the shift
    (negative means), those after ``<Rescale>`` the scale (inverse standard deviations).
    """
    text = Path(path).read_text(encoding="utf-8")
    found = {}
    for tag in ("AddShift", "Rescale"):
        m = re.search(rf"<{tag}>.*?<LearnRateCoef>\s*\S+\s*\[([^\]]*)\]", text, flags=re.DOTALL)
        if m is None:
            raise ValueError(f"{path}: no <{tag}> ... <LearnRateCoef> ... [ values ] block; is this FunASR's am.mvn?")
        found[tag] = np.array(m.group(1).split(), dtype=np.float32)
    shift, scale = found["AddShift"], found["Rescale"]
    if shift.shape != scale.shape:
        raise ValueError(f"{path}: <AddShift> has {shift.size} values but <Rescale> has {scale.size}")
    return shift, scale


class SenseVoiceFbank(FbankLFR):
    """The released VITA-QinYu's SenseVoiceSmall front end: fbank + LFR (7, 6) + CMVN.

    Args:
        cmvn: path to the SenseVoiceSmall ``am.mvn``; ``x = (x + shift) * scale`` after LFR.
            ``None`` skips CMVN (only for models trained here on un-normalised features).
        query_frames: outputs the encoder prepends (language, event, emotion, text norm):
            ``num_outputs`` = LFR frames + 4, the number of ``<|context_of_audio|>`` placeholders.
        dither: Kaldi dither; FunASR dithers (1.0) at training time, this front end by default does not,
            so the same shard always gives the same tensors (``data.dither`` sets it for training).
    """

    def __init__(self, cmvn: str | None = None, query_frames: int = 4, num_mel_bins: int = 80, dither: float = 0.0):
        super().__init__(num_mel_bins=num_mel_bins, lfr_m=7, lfr_n=6, dither=dither)
        self.cmvn, self.query_frames = cmvn, query_frames
        self._shift_scale = load_cmvn(cmvn) if cmvn else None
        if self._shift_scale is not None and self._shift_scale[0].size != self.feature_dim:
            raise ValueError(
                f"{cmvn}: CMVN has {self._shift_scale[0].size} values but the features have {self.feature_dim} "
                "(set data.cmvn to SenseVoiceSmall's am.mvn)"
            )

    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        feats = super().__call__(wav, sample_rate)
        if self._shift_scale is None or not len(feats):
            return feats
        shift, scale = self._shift_scale
        return ((feats + shift) * scale).astype(np.float32)

    def num_outputs(self, features: np.ndarray) -> int:
        return len(features) + self.query_frames


FRONT_ENDS = {"fbank_lfr": FbankLFR, "whisper": WhisperMel, "sense_voice": SenseVoiceFbank}
